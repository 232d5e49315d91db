"""The lab bench stays runnable: every research module imports against today's package.

Research code drives ``mpox_aism`` through its public API; a rename there must break here, in CI,
not months later in front of someone re-running a measurement.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

MODULES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "research").glob("*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_research_module_imports(name: str) -> None:
    importlib.import_module(f"research.{name}")


def test_research_is_not_installed() -> None:
    """Only ``mpox_aism`` is a package of the distribution (pyproject's find rule)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["mpox_aism*"]
