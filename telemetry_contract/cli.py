"""``thermowatch contract check|schema``: the contract for firmware authors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from telemetry_contract.codec import MAX_PAYLOAD_BYTES, decode
from telemetry_contract.errors import ContractError
from telemetry_contract.schema import SCHEMA_TYPES, message_schema

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``contract`` command."""
    p = sub.add_parser("contract", help="validate payloads, print JSON Schemas")
    csub = p.add_subparsers(title="contract commands", metavar="COMMAND")

    def usage(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)

    check = csub.add_parser(
        "check",
        help="validate one payload; prints 'ok' or the error (exit 1)",
        description="Validate a JSON payload against the message contract.",
    )
    check.add_argument("file", metavar="FILE|-", help="payload file, or - for standard input")
    check.add_argument(
        "--topic",
        help="MQTT topic it was (or will be) published on; also checks device, site and type",
    )
    check.add_argument(
        "--now-ms",
        type=int,
        default=None,
        help="receiver clock for the future-timestamp check (default: now)",
    )
    check.set_defaults(func=_check)

    schema = csub.add_parser("schema", help="print the JSON Schema of a message (or all)")
    schema.add_argument("message", nargs="?", choices=list(SCHEMA_TYPES), metavar="MESSAGE")
    schema.set_defaults(func=_schema)


def _read(path: str) -> bytes:
    # Read one byte past the limit so the size check reports it, without
    # pulling an arbitrarily large file into memory.
    if path == "-":
        return sys.stdin.buffer.read(MAX_PAYLOAD_BYTES * 4)
    with Path(path).open("rb") as fh:
        return fh.read(MAX_PAYLOAD_BYTES * 4)


def _check(args: argparse.Namespace) -> int:
    try:
        payload = _read(args.file)
    except OSError as exc:
        print(f"thermowatch: error: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        decode(payload, topic=args.topic, now_ms=args.now_ms)
    except ContractError as exc:
        print(f"error: {exc} [{exc.reason.value}]")
        return 1
    print("ok")
    return 0


def _schema(args: argparse.Namespace) -> int:
    if args.message:
        doc: object = message_schema(args.message)
    else:
        doc = {name: message_schema(name) for name in SCHEMA_TYPES}
    print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
    return 0
