"""JSON Schema export, from the same definitions the decoder uses.

The committed files under ``telemetry_contract/schemas/`` are what firmware
authors read; a test fails when they drift from the code. Regenerate them
with ``python -m telemetry_contract.schema --write``.

>>> schema = message_schema("reading")
>>> schema["$ref"]
'#/$defs/Reading'
>>> schema["$defs"]["Reading"]["properties"]["temp_c"]["anyOf"][0]["maximum"]
125.0
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any, Final

import msgspec

from telemetry_contract.alerts import AlertChangeMessage
from telemetry_contract.incidents import IncidentChangeMessage
from telemetry_contract.messages import MESSAGE_TYPES

__all__ = [
    "SCHEMA_DIR",
    "SCHEMA_TYPES",
    "build_parser",
    "message_schema",
    "render",
    "schema_path",
    "write_all",
]

SCHEMA_DIR: Final = Path(__file__).with_name("schemas")
#: Every message with a committed schema: the device messages, and the
#: processor's alert and incident changes (the alerts topic, incidents index and webhook body).
SCHEMA_TYPES: Final[dict[str, type[Any]]] = {
    **MESSAGE_TYPES,
    "alert_change": AlertChangeMessage,
    "incident_change": IncidentChangeMessage,
}


def message_schema(name: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one message, by its ``type`` tag."""
    try:
        cls = SCHEMA_TYPES[name]
    except KeyError:
        raise KeyError(
            f"unknown message {name!r} (expected one of {', '.join(SCHEMA_TYPES)})"
        ) from None
    schema: dict[str, Any] = _clean_descriptions(msgspec.json.schema(cls))
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://thermowatch.dev/schemas/v1/{name}.schema.json",
        "title": cls.__name__,
        **schema,
    }
    return schema


def _clean_descriptions(node: Any) -> Any:
    """Descriptions (docstrings) with their indentation removed, whatever msgspec did.

    Some msgspec releases pass a class's docstring through as written, others
    clean it (0.23 does); the committed files must not depend on which one is
    installed.

    >>> _clean_descriptions({"description": "One.\\n\\n    Two.", "x": [{"description": "a"}]})
    {'description': 'One.\\n\\nTwo.', 'x': [{'description': 'a'}]}
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def render(name: str) -> str:
    """The schema as the exact text committed to the repository."""
    return json.dumps(message_schema(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_path(name: str) -> Path:
    """Where the committed schema of a message lives."""
    return SCHEMA_DIR / f"{name}.schema.json"


def write_all() -> list[Path]:
    """Regenerate every committed schema file."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for name in SCHEMA_TYPES:
        path = schema_path(name)
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m telemetry_contract.schema`` (its help is plain text)."""
    out = argparse.ArgumentParser(
        prog="python -m telemetry_contract.schema",
        description="The JSON Schemas that firmware authors read, from the definitions "
        "the decoder uses: --write rewrites the files under telemetry_contract/schemas/.",
    )
    out.add_argument("--write", action="store_true", help="rewrite schemas/*.json")
    return out


def _main() -> None:  # pragma: no cover - maintenance entry point
    args = build_parser().parse_args()
    if args.write:
        for path in write_all():
            print(path)
    else:
        build_parser().print_help()


if __name__ == "__main__":  # pragma: no cover
    _main()
