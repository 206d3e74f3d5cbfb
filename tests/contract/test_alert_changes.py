"""Golden alert changes: the processor's alerts-topic and webhook message.

Every valid fixture decodes into the contract's :class:`AlertChange` and
encodes back to the same fields; every invalid one fails naming the field.
The processor's webhook body and its alerts-topic record are the contract's
wire form, so a change written by the processor is read back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    ContractError,
    Rule,
    Severity,
    alert_change_doc,
    decode_alert_change,
    encode_alert_change,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "messages"
MANIFEST: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "manifest.json").read_text())
VALID = MANIFEST["alert_change"]
INVALID = MANIFEST["alert_change_invalid"]


@pytest.mark.parametrize("entry", VALID, ids=[Path(e["file"]).stem for e in VALID])
def test_valid_change_decodes_and_round_trips(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    change = decode_alert_change(raw)
    assert isinstance(change, AlertChange)
    assert change.kind.value == entry["change"]
    original, encoded = json.loads(raw), json.loads(encode_alert_change(change))
    # Every field the fixture gave comes back with the same value; a legacy
    # change (no type, no schema_version, no confirmed) gains only those.
    assert {k: encoded[k] for k in original} == original
    assert set(encoded) - set(original) <= {"type", "schema_version", "sensor_id", "confirmed"}
    assert decode_alert_change(encode_alert_change(change)) == change


@pytest.mark.parametrize("entry", INVALID, ids=[Path(e["file"]).stem for e in INVALID])
def test_invalid_change_names_field_and_reason(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    with pytest.raises(ContractError) as info:
        decode_alert_change(raw)
    assert info.value.reason.value == entry["reason"]
    assert info.value.field == entry["field"]


def test_not_json_is_a_contract_error() -> None:
    with pytest.raises(ContractError) as info:
        decode_alert_change(b"\xff not json")
    assert info.value.reason.value == "not_json"


def test_every_change_kind_and_status_has_a_fixture() -> None:
    changes = [decode_alert_change((FIXTURES / e["file"]).read_bytes()) for e in VALID]
    assert {c.kind for c in changes} == set(ChangeKind)
    assert {c.alert.status for c in changes} == set(AlertStatus)


def test_wire_form_is_flat_and_matches_the_alert_document_fields() -> None:
    alert = Alert(
        "d1.threshold_low.1767225600000",
        "d1",
        "s1",
        Rule.THRESHOLD_LOW,
        Severity.WARNING,
        AlertStatus.OPEN,
        3,
        1_767_225_600_000,
        1_767_225_660_000,
        value=-30.5,
    )
    doc = alert_change_doc(AlertChange(ChangeKind.UPDATED, alert, notify=False))
    assert doc["@timestamp"] == alert.opened_at
    assert (doc["change"], doc["notify"], doc["rule"], doc["severity"]) == (
        "updated",
        False,
        "threshold_low",
        "warning",
    )
    assert not any(isinstance(v, dict) for v in doc.values())
