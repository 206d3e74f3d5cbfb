"""``thermowatch``: one command line for every stage and tool.

Sub-commands are contributed by the packages (each exposes
``register(subparsers)``); a stage whose optional dependencies are not
installed (say the gateway on a Raspberry Pi) shows up with a hint to install
its extra instead of failing at import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stagekit import __version__
from stagekit.stage import ArgumentParser, SubParsers, add_logging_options, run_command

__all__ = ["build_parser", "main"]

#: (module that provides ``register``, command name, extra that provides it)
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("telemetry_contract.cli", "contract", ""),
    ("deploy.local.cli", "stack", "dev"),
    ("thermowatch.devices", "devices", "dev"),
    ("thermowatch.configpub", "config", "dev"),
    ("edge_agent.__main__", "edge", "edge"),
    ("gateway.__main__", "gateway", "gateway"),
    ("cloud_processor.__main__", "processor", "cloud"),
    ("kibana.__main__", "kibana", "cloud"),
    ("thermowatch.demo.cli", "demo", "dev"),
    ("thermowatch.web.__main__", "web", "cloud"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands registered by each package)."""
    parser: argparse.ArgumentParser = ArgumentParser(
        prog="thermowatch",
        description="Edge-to-cloud temperature monitoring pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"thermowatch {__version__}")
    add_logging_options(parser)
    parser.set_defaults(func=lambda _args: _help(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name, command, extra in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # this command is not part of this build yet
            _register_missing(sub, command, extra, exc)
            continue
        module.register(sub)
    return parser


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _register_missing(
    sub: SubParsers[argparse.ArgumentParser],
    command: str,
    extra: str,
    exc: ModuleNotFoundError,
) -> None:
    p = sub.add_parser(command, help=f"(unavailable: pip install 'thermowatch[{extra}]')")

    def fail(_args: argparse.Namespace) -> int:
        print(
            f"thermowatch: error: '{command}' needs the optional dependency "
            f"{exc.name!r}: pip install 'thermowatch[{extra}]'",
            file=sys.stderr,
        )
        return 1

    p.set_defaults(func=fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thermowatch`` command: ``thermowatch: error: ...`` and exit 1
    on failure (a traceback only with ``--debug``), 130 on Ctrl-C."""
    return run_command(build_parser().parse_args(argv), "thermowatch")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
