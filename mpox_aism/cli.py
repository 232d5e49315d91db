"""``mpox-aism`` console command: a thin layer that parses arguments and calls into the packages."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (command path, module, help). Only the chosen command's module is imported: `mpox-aism --help` stays
# fast, a missing optional runtime only affects the command that needs it, and `mpox-aism run` on an
# ONNX Runtime box never imports the training stack (torch) for a parser it will not use.
COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("train",), "mpox_aism.training.train", "train a classifier on a labeled image folder"),
    (("pretrain",), "mpox_aism.training.pretrain", "SimCLR self-supervised pretraining of an encoder"),
    (("screen",), "mpox_aism.training.screen", "train several architectures under one recipe and compare them"),
    (("cv",), "mpox_aism.training.cv", "cross-validate a recipe by group and by source; ship the model fit on all"),
    (("familiarity",), "mpox_aism.training.familiarity", "fit a model's familiarity score (unfamiliar → review)"),
    (("adapt",), "mpox_aism.training.adapt", "fit a site head from reviewed labels beside the dev photos, checked"),
    (("evaluate",), "mpox_aism.training.evaluate", "evaluate a model: per-class figures, threshold, calibration"),
    (("export", "onnx"), "mpox_aism.export.onnx", "export a model to ONNX and check parity with PyTorch"),
    (("export", "int8"), "mpox_aism.export.int8",
     "quantize a model's ONNX file to int8 (static, QDQ, per-channel, calibrated on photos) with a parity report"),
    (("export", "tensorrt"), "mpox_aism.export.tensorrt", "build a TensorRT engine from an ONNX file"),
    (("bench", "classifier"), "mpox_aism.bench.classifier", "benchmark classifier backends"),
    (("bench", "pipeline"), "mpox_aism.bench.pipeline", "benchmark the camera pipeline on a source"),
    (("bench", "soak"), "mpox_aism.bench.soak", "run the daemon on a looping clip; report memory/fd/thread growth"),
    (("bench", "streams"), "mpox_aism.bench.streams",
     "the daemon's camera workers on N looped copies of a source: per-stream fps, latency, CPU, RSS; --find-max"),
    (("bench", "api"), "mpox_aism.bench.api", "the diagnosis API under N clients, and the camera's fps meanwhile"),
    (("bench", "fleet"), "mpox_aism.bench.fleet",
     "N simulated kiosks (real outbox + publisher) → a real mosquitto → the console: lost, duplicates, latency"),
    (("run",), "mpox_aism.kiosk.run", "run the kiosk daemon (default: embedded demo, no camera or broker)"),
    (("console",), "mpox_aism.console.service",
     "the console: every kiosk's events, availability and status from the broker into one store"),
    (("validate-config",), "mpox_aism.kiosk.validate", "check a kiosk config file"),
    (("users",), "mpox_aism.kiosk.users", "staff accounts: add, passwd, disable, end-sessions, list, audit (CSV)"),
    (("models",), "mpox_aism.kiosk.model_admin",
     "model slots: install DIR (as the shadow, checked), promote, rollback, status (audited)"),
    (("reviews", "export"), "mpox_aism.kiosk.label_export",
     "the crops staff labeled, as a training folder (<class>/<event_id>.jpg + manifest.csv) for a site head"),
)


def _unavailable(command: str, error: ImportError):
    def fail(_args: argparse.Namespace) -> None:
        raise SystemExit(f"mpox-aism {command}: not available here: {error}")
    return fail


def chosen_command(argv: list[str]) -> tuple[str, ...] | None:
    """The command path named by ``argv`` (its leading words), or None (help, or a typo argparse reports)."""
    words = [a for a in argv if not a.startswith("-")]
    for path, _, _ in COMMANDS:
        if tuple(words[:len(path)]) == path:
            return path
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command is listed; only the chosen one (all of them when ``argv`` is None) is built in full."""
    chosen = None if argv is None else chosen_command(argv)
    parser = argparse.ArgumentParser(prog="mpox-aism", description="Mpox screening (research use only, "
                                     "not a diagnostic device).")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name, help_ in COMMANDS:
        target = sub
        if len(path) == 2:
            if path[0] not in groups:
                g = sub.add_parser(path[0], help=f"{path[0]} subcommands")
                groups[path[0]] = g.add_subparsers(dest="subcommand", required=True)
            target = groups[path[0]]
        if argv is not None and path != chosen:
            target.add_parser(path[-1], help=help_)  # listed in --help; never parsed in this run
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:  # e.g. a GPU box without the training stack: other commands still work
            p = target.add_parser(path[-1], help=f"{help_} (unavailable: {e})")
            p.set_defaults(func=_unavailable(" ".join(path), e), command_name=" ".join(path))
            continue
        p = target.add_parser(path[-1], parents=[module.get_args_parser(add_help=False)], help=help_)
        p.set_defaults(func=module.main, command_name=" ".join(path))
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "your input is wrong" (one line, exit 2), from the modules this run imported."""
    from mpox_aism.contracts.images import DatasetError

    errors: list[type[BaseException]] = [DatasetError, FileNotFoundError, ValueError]
    for module, name in (("mpox_aism.export.onnx", "ParityError"), ("mpox_aism.training.split", "LeakageError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"mpox-aism {args.command_name}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
