"""``thermowatch``: one command line for every stage and tool.

Sub-commands are contributed by the packages (each exposes
``register(subparsers)``); a stage whose optional dependencies are not
installed (say the gateway on a Raspberry Pi) shows up with a hint to install
its extra instead of failing at import.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from stagekit import __version__
from stagekit.config import ConfigError
from stagekit.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger(__name__)

#: (module that provides ``register``, command name, extra that provides it)
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("telemetry_contract.cli", "contract", ""),
    ("deploy.local.cli", "stack", "dev"),
    ("edge_agent.__main__", "edge", "edge"),
    ("gateway.__main__", "gateway", "gateway"),
    ("cloud_processor.__main__", "processor", "cloud"),
    ("kibana.__main__", "kibana", "cloud"),
    ("thermowatch.demo.cli", "demo", "dev"),
    ("thermowatch.web.__main__", "web", "cloud"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands registered by each package)."""
    parser = argparse.ArgumentParser(
        prog="thermowatch",
        description="Edge-to-cloud temperature monitoring pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"thermowatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors (and DEBUG logs)"
    )
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


def _register_missing(
    sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
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
    """Entry point of the ``thermowatch`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("DEBUG" if args.debug else args.log_level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"thermowatch: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"thermowatch: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
