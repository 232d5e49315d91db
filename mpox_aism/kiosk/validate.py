"""``mpox-aism validate-config FILE``: print the first error with its path, exit non-zero."""

from mpox_aism.kiosk.run import validate_args_parser as get_args_parser
from mpox_aism.kiosk.run import validate_main as main

__all__ = ["get_args_parser", "main"]
