"""The `mnv2` command line: one entry point, one module per subcommand, imported only when chosen.

Each subcommand module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Modules import MindSpore or kopf inside `run`, so `mnv2 <cmd> --help` is fast everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mnv2.exitcodes import ExitCode, TrainerError

COMMANDS: dict[str, str] = {
    "train": "mnv2.commands.train",
    "eval": "mnv2.commands.eval",
    "export": "mnv2.commands.export",
    "launch": "mnv2.commands.launch",
    "run": "mnv2_operator.commands.run",
    "report": "mnv2.commands.report",
    "render": "mnv2_operator.commands.render",
    "validate": "mnv2_operator.commands.validate",
    "crd": "mnv2_operator.commands.crd",
    "ranktable": "mnv2_operator.commands.ranktable",
    "operator": "mnv2_operator.commands.operator",
}


class _Parser(argparse.ArgumentParser):
    """argparse with the project's exit code for a bad command line (64, not argparse's 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INVALID_CONFIG, f"{self.prog}: error: {message}\n")


def _load(name: str):
    return importlib.import_module(COMMANDS[name])


def _top_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mnv2",
        description="MobileNetV2 training on MindSpore, locally and on Kubernetes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {text}" for name, text in available.items()),
    )
    parser.add_argument("command", choices=list(available), metavar="COMMAND", help="see below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available: dict[str, str] = {}
    for name in COMMANDS:
        try:
            available[name] = _load(name).HELP
        except ImportError:
            continue  # a part not installed in this image (e.g. the operator without kopf)
    if not argv or argv[0] not in available:
        _top_parser(available).parse_args(argv[:1] or ["--help"])
        return ExitCode.INVALID_CONFIG
    module = _load(argv[0])
    parser = _Parser(prog=f"mnv2 {argv[0]}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args))
    except TrainerError as error:
        print(f"mnv2 {argv[0]}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
