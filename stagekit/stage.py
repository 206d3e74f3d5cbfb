"""The command line every stage shares: one skeleton instead of five.

A stage describes its command once as a :class:`StageCommand` (name, help
texts, a function that adds its sub-commands) and gets both entry points from
it: :meth:`StageCommand.register` adds ``thermowatch <stage> ...`` and
:meth:`StageCommand.main` is ``python -m <stage> ...``, with the same
sub-commands, ``--log-level``/``--debug``, and errors reported the same way:
``<prog>: error: <message>`` and exit status 1, a traceback only under
``--debug`` (:func:`run_command`). :func:`add_config_commands` adds the
``check-config`` and ``print-config`` of every stage that reads a config file
(edge, gateway, processor, web view), and :func:`serve` runs an asyncio
stage's service until SIGTERM or SIGINT.

>>> import argparse
>>> def add(sub):
...     p = sub.add_parser("hello", help="say hello")
...     p.set_defaults(func=lambda args: print("hello") or 0)
>>> cmd = StageCommand("demo-stage", "a demo stage", "A stage for the doctest.", add)
>>> cmd.main(["hello"])
hello
0
>>> cmd.main(["hello", "--what"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
SystemExit: 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stagekit.config import dump_toml
from stagekit.logs import configure_logging

__all__ = [
    "LOG_LEVELS",
    "ArgumentParser",
    "PlainHelpFormatter",
    "StageCommand",
    "SubParsers",
    "add_config_commands",
    "add_config_option",
    "add_logging_options",
    "plain_text",
    "run_command",
    "serve",
]

log = logging.getLogger(__name__)

SubParsers = argparse._SubParsersAction
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


#: ``:class:`~a.b.C``` (``~``: the last name only) and ````text````.
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)*:`(~?)([^`<]*?)(?: <[^`]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.S)


def plain_text(text: str) -> str:
    """``text`` without reST markup: a docstring as a ``--help`` paragraph.

    >>> plain_text("``run`` (see :class:`~stagekit.stage.StageCommand`, :mod:`edge_agent.app`)")
    'run (see StageCommand, edge_agent.app)'
    """

    def role(m: re.Match[str]) -> str:
        return m.group(2).rpartition(".")[2] if m.group(1) else m.group(2)

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


class PlainHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with reST markup of docstrings taken out of every text."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Each paragraph of a docstring filled on its own (argparse runs them together).
        paragraphs = re.split(r"\n\s*\n", plain_text(text).strip())
        return "\n\n".join(
            super(PlainHelpFormatter, self)._fill_text(p, width, indent) for p in paragraphs
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return super()._split_lines(plain_text(text), width)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every ``thermowatch`` command: help texts are docstrings, shown plain.

    Sub-parsers are made of the parent's class, so one at the top is enough.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--debug`` (tracebacks on errors, DEBUG logs)."""
    parser.add_argument(
        "--log-level", default="INFO", choices=LOG_LEVELS, help="log verbosity (default: INFO)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors (and DEBUG logs)"
    )


def _show_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def run_command(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed command; errors become ``prog: error: ...`` and exit 1.

    A traceback is shown only with ``--debug``; Ctrl-C exits 130.
    """
    configure_logging("DEBUG" if getattr(args, "debug", False) else args.log_level)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


@dataclass(frozen=True)
class StageCommand:
    """One stage's command: ``thermowatch <name> ...`` and ``python -m <module> ...``."""

    name: str
    #: One line for ``thermowatch --help``.
    help: str
    #: The paragraph under ``thermowatch <name> --help``.
    description: str
    #: Adds the sub-commands (each sets ``func``) to the stage's sub-parsers.
    add_commands: Callable[[SubParsers[argparse.ArgumentParser]], None]
    #: ``python -m <module>`` (defaults to the name).
    module: str = ""

    def register(self, sub: SubParsers[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        """Add ``<name>`` and its sub-commands to ``thermowatch``'s parser."""
        parser = sub.add_parser(self.name, help=self.help, description=self.description)
        parser.set_defaults(func=_show_help(parser))
        self.add_commands(parser.add_subparsers(title=f"{self.name} commands", metavar="COMMAND"))
        return parser

    def parser(self) -> argparse.ArgumentParser:
        """The parser of ``python -m <module>``: the same sub-commands, at the top."""
        parser: argparse.ArgumentParser = ArgumentParser(
            prog=f"python -m {self.module or self.name}", description=self.description
        )
        add_logging_options(parser)
        parser.set_defaults(func=_show_help(parser))
        self.add_commands(parser.add_subparsers(title="commands", metavar="COMMAND"))
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point of ``python -m <module>``."""
        parser = self.parser()
        return run_command(parser.parse_args(argv), parser.prog)


def add_config_commands(
    sub: SubParsers[argparse.ArgumentParser],
    load: Callable[[str | None], Any],
    describe: Callable[[Any], str],
    *,
    config_option: Callable[[argparse.ArgumentParser], None] | None = None,
    summary: Callable[[Any], Mapping[str, Any]] | None = None,
    show_option: bool = False,
) -> None:
    """``check-config`` (prints ``ok: <describe(cfg)>``) and ``print-config`` (secrets masked).

    ``load`` raises ``ConfigError`` naming the bad key; ``config_option`` adds
    ``--config`` (default: :func:`add_config_option`); with ``summary``,
    ``print-config --json`` prints it instead of the TOML; with
    ``show_option``, ``check-config --show`` prints what ``print-config`` does
    (for stages that had it before ``print-config``).
    """
    add = config_option or add_config_option

    check = sub.add_parser("check-config", help="validate the config; exit 1 naming the bad key")
    add(check)
    if show_option:
        check.add_argument("--show", action="store_true", help="print the effective config")
    check.set_defaults(
        func=lambda args: (
            _print(load, args, None)
            if getattr(args, "show", False)
            else _check(load, describe, args)
        )
    )

    show = sub.add_parser("print-config", help="print the effective config (secrets masked)")
    add(show)
    if summary is not None:
        show.add_argument("--json", action="store_true", help="a JSON summary instead of TOML")
    show.set_defaults(func=lambda args: _print(load, args, summary))


def add_config_option(
    parser: argparse.ArgumentParser, help: str = "TOML config (default: built-ins and env)"
) -> None:
    """``-c/--config FILE`` (no file: the built-in defaults and the environment)."""
    parser.add_argument("--config", "-c", metavar="FILE", help=help)


def _check(load: Callable[[str | None], Any], describe: Callable[[Any], str], args: Any) -> int:
    print(f"ok: {describe(load(args.config))}")
    return 0


def _print(
    load: Callable[[str | None], Any],
    args: Any,
    summary: Callable[[Any], Mapping[str, Any]] | None,
) -> int:
    config = load(args.config)
    if summary is not None and args.json:
        print(json.dumps(summary(config), indent=2, sort_keys=True))
    else:
        print(dump_toml(config), end="")
    return 0


def serve(service: Callable[[asyncio.Event], Awaitable[int | None]]) -> int:
    """Run ``service(stop)`` on a new event loop; SIGTERM and SIGINT set ``stop``.

    The service returns its exit status (None is 0) once it has stopped.
    """

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stopper(stop, sig))
        code = await service(stop)
        return 0 if code is None else code

    return asyncio.run(main())


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("event=signal signal=%s", sig.name)
        stop.set()

    return handler
