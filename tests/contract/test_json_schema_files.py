"""The committed JSON Schema files are exactly what the code exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telemetry_contract.schema import SCHEMA_DIR, SCHEMA_TYPES, render, schema_path

FIXTURES = Path(__file__).parents[1] / "fixtures" / "messages"


@pytest.mark.parametrize("name", list(SCHEMA_TYPES))
def test_committed_schema_matches_code(name: str) -> None:
    path = schema_path(name)
    assert path.exists(), f"missing {path}: run python -m telemetry_contract.schema --write"
    assert path.read_text(encoding="utf-8") == render(name), (
        f"{path} is stale: run python -m telemetry_contract.schema --write"
    )


def test_no_orphan_schema_files() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == {
        schema_path(n).name for n in SCHEMA_TYPES
    }


def test_schema_states_the_constraints_firmware_must_meet() -> None:
    reading = json.loads(render("reading"))["$defs"]["Reading"]
    props = reading["properties"]
    assert reading["additionalProperties"] is False
    assert {"device_id", "sensor_id", "site", "seq", "ts", "temp_c"} <= set(reading["required"])
    temp = props["temp_c"]["anyOf"][0]
    assert (temp["minimum"], temp["maximum"]) == (-55.0, 125.0)
    assert props["seq"]["minimum"] == 0
    assert props["ts"]["minimum"] == 1_577_836_800_000
    assert props["type"]["enum"] == ["reading"]
