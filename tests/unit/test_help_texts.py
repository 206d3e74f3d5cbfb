"""Every `--help` of `thermowatch`, its sub-commands and `python -m` entry points is plain.

Help texts are taken from docstrings, which carry reST markup for the docs;
the walk below renders every parser's help, recursively, and fails on markup
that would show raw on a terminal.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator

import pytest

from stagekit.stage import ArgumentParser, StageCommand, plain_text
from telemetry_contract import schema
from thermowatch.cli import build_parser

#: reST a terminal would show raw: ``literal``, :role:`target`.
MARKUP = re.compile(r"``|:(?:class|func|meth|mod|attr|data|exc|obj|ref|py:\w+):`")

#: Modules with ``python -m`` entry points built from a StageCommand.
STAGE_MODULES = (
    "edge_agent.__main__",
    "gateway.__main__",
    "cloud_processor.__main__",
    "kibana.__main__",
    "thermowatch.web.__main__",
)


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    """(command path, rendered help) of ``parser`` and every sub-parser below it."""
    yield path, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def every_help() -> Iterator[tuple[str, str]]:
    yield from walk(build_parser(), "thermowatch")
    for module_name in STAGE_MODULES:
        module = importlib.import_module(module_name)
        commands = [v for v in vars(module).values() if isinstance(v, StageCommand)]
        assert commands, f"{module_name}: no StageCommand"
        for command in commands:
            parser = command.parser()
            yield from walk(parser, parser.prog)
    yield from walk(schema.build_parser(), "python -m telemetry_contract.schema")


HELPS = dict(every_help())


def test_the_walk_reaches_every_sub_command() -> None:
    for path in (
        "thermowatch edge run",
        "thermowatch gateway check-config",
        "thermowatch processor run",
        "thermowatch kibana check",
        "thermowatch demo",
        "thermowatch stack up",
        "thermowatch contract schema",
        "thermowatch web",
        "python -m edge_agent run",
        "python -m kibana import",
    ):
        assert path in HELPS, path


@pytest.mark.parametrize("path", sorted(HELPS))
def test_help_shows_no_rest_markup(path: str) -> None:
    bad = [line for line in HELPS[path].splitlines() if MARKUP.search(line)]
    assert not bad, f"{path} --help shows reST markup: {bad}"


def test_the_check_catches_markup() -> None:
    raw = argparse.ArgumentParser(description="Run ``this`` (see :class:`~a.B`).")
    assert MARKUP.search(raw.format_help())
    assert not MARKUP.search(plain_text("Run ``this`` (see :class:`~a.B`)."))


def test_docstring_paragraphs_stay_apart() -> None:
    text = ArgumentParser(prog="x", description="First ``one``.\n\n    Second one.\n").format_help()
    assert "First one.\n\nSecond one.\n" in text
