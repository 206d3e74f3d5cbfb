"""Golden incident changes: the processor's incidents-index and webhook message.

Every valid fixture decodes into the contract's :class:`IncidentChange` and
encodes back to the same fields; every invalid one fails naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stagekit.search.incidents import incident_doc, incident_from_doc
from stagekit.search.indices import INCIDENTS
from telemetry_contract import (
    ContractError,
    Incident,
    IncidentChange,
    IncidentChangeKind,
    IncidentScope,
    IncidentStatus,
    Severity,
    decode_incident_change,
    encode_incident_change,
    incident_change_doc,
    incident_id_for,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "messages"
MANIFEST: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "manifest.json").read_text())
VALID = MANIFEST["incident_change"]
INVALID = MANIFEST["incident_change_invalid"]


@pytest.mark.parametrize("entry", VALID, ids=[Path(e["file"]).stem for e in VALID])
def test_valid_change_decodes_and_round_trips(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    change = decode_incident_change(raw)
    assert isinstance(change, IncidentChange)
    assert change.kind.value == entry["change"]
    original, encoded = json.loads(raw), json.loads(encode_incident_change(change))
    assert encoded == original
    assert decode_incident_change(encode_incident_change(change)) == change


@pytest.mark.parametrize("entry", INVALID, ids=[Path(e["file"]).stem for e in INVALID])
def test_invalid_change_names_field_and_reason(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    with pytest.raises(ContractError) as info:
        decode_incident_change(raw)
    assert info.value.reason.value == entry["reason"]
    assert info.value.field == entry["field"]


def test_an_alert_change_is_not_an_incident_change() -> None:
    raw = (FIXTURES / "alert_change" / "opened_threshold_high.json").read_bytes()
    with pytest.raises(ContractError) as info:
        decode_incident_change(raw)
    assert info.value.field == "type"


def test_every_change_kind_scope_and_status_has_a_fixture() -> None:
    changes = [decode_incident_change((FIXTURES / e["file"]).read_bytes()) for e in VALID]
    assert {c.kind for c in changes} == set(IncidentChangeKind)
    assert {c.incident.status for c in changes} == set(IncidentStatus)
    assert {c.incident.scope for c in changes} == set(IncidentScope)


def test_incident_id_is_derived_from_the_opening_alert() -> None:
    assert incident_id_for(IncidentScope.DEVICE, "s1", "d1.threshold_high.5") == (
        "device.d1.threshold_high.5"
    )
    assert incident_id_for(IncidentScope.SITE, "s1", "d1.device_offline.5") == (
        "site.s1.d1.device_offline.5"
    )


def test_wire_form_is_flat() -> None:
    incident = Incident(
        "device.d1.threshold_low.1767225600000",
        IncidentScope.DEVICE,
        "s1",
        ("d1",),
        Severity.WARNING,
        IncidentStatus.OPEN,
        2,
        1_767_225_600_000,
        1_767_225_660_000,
        rules=("threshold_low",),
    )
    doc = incident_change_doc(IncidentChange(IncidentChangeKind.UPDATED, incident, notify=False))
    assert doc["@timestamp"] == incident.opened_at
    assert (doc["type"], doc["change"], doc["notify"], doc["severity"], doc["scope"]) == (
        "incident_change",
        "updated",
        False,
        "warning",
        "device",
    )
    assert not any(isinstance(v, dict) for v in doc.values())


@pytest.mark.parametrize("entry", VALID, ids=[Path(e["file"]).stem for e in VALID])
def test_the_index_document_has_only_mapped_fields(entry: dict[str, Any]) -> None:
    """The incidents index is strict: a field the mapping lacks is refused."""
    change = decode_incident_change((FIXTURES / entry["file"]).read_bytes())
    doc = incident_doc(change, processed_at=1)
    assert set(doc) == {f.name for f in INCIDENTS.fields}
    assert incident_from_doc(doc) == change
