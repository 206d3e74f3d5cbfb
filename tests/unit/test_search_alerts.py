"""The alerts-index document of an alert and back (stagekit.search.alerts)."""

from __future__ import annotations

from msgspec.structs import replace

from stagekit.search.alerts import alert_doc, alert_from_doc
from telemetry_contract import Alert, AlertStatus, Rule, Severity

T0 = 1_767_225_600_000
ALERT = Alert(
    f"d1.edge_anomaly.{T0}",
    "d1",
    "s1",
    Rule.EDGE_ANOMALY,
    Severity.CRITICAL,
    AlertStatus.OPEN,
    2,
    T0,
    T0 + 30_000,
    score=0.97,
    message="edge anomaly score 0.97 (confirmed by threshold_high)",
    confirmed=True,
)


def test_document_round_trip_keeps_every_field() -> None:
    doc = alert_doc(ALERT, (52.5, 13.4), processed_at=T0 + 31_000)
    assert doc["confirmed"] is True
    assert doc["location"] == {"lat": 52.5, "lon": 13.4}
    assert alert_from_doc(doc) == ALERT


def test_a_document_written_before_the_confirmed_field_reads_it_from_the_message() -> None:
    doc = alert_doc(ALERT)
    del doc["confirmed"]
    assert alert_from_doc(doc).confirmed is True
    doc["message"] = "edge anomaly score 0.97"
    assert alert_from_doc(doc).confirmed is False


def test_the_field_wins_over_the_message() -> None:
    doc = alert_doc(replace(ALERT, confirmed=False))
    assert alert_from_doc(doc).confirmed is False
