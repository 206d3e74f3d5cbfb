"""The web view's incidents: the fold (order, idempotence, bounds, hostile input) and the
informational state of devices that announced a shutdown or maintenance (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from stagekit.search.alerts import alert_doc
from telemetry_contract import (
    Alert,
    AlertStatus,
    DeviceState,
    DeviceStatus,
    Incident,
    IncidentChange,
    IncidentChangeKind,
    IncidentScope,
    IncidentStatus,
    Rule,
    Severity,
    incident_change_doc,
)
from thermowatch.web.incidents import IncidentBook
from thermowatch.web.view import FleetView

T0 = 1_767_225_600_000
FIXTURES = Path(__file__).parents[1] / "fixtures" / "messages"
ENC = msgspec.json.Encoder()


def incident(
    n: int = 1,
    version: int = 1,
    *,
    severity: Severity = Severity.WARNING,
    status: IncidentStatus = IncidentStatus.OPEN,
    devices: tuple[str, ...] = ("d1",),
    rules: tuple[str, ...] = ("threshold_high",),
    scope: IncidentScope = IncidentScope.DEVICE,
    opened: int | None = None,
    resolved: int | None = None,
) -> Incident:
    opened_at = T0 + n * 1000 if opened is None else opened
    resolved_at = resolved if resolved is not None else None
    if status is IncidentStatus.RESOLVED and resolved_at is None:
        resolved_at = opened_at + version
    return Incident(
        f"device.{devices[0]}.{n}",
        scope,
        "s1",
        devices,
        severity,
        status,
        version,
        opened_at,
        opened_at + version,
        resolved_at=resolved_at,
        rules=rules,
        alert_ids=tuple(f"{devices[0]}.{r}.{opened_at}" for r in rules),
        alert_count=len(rules),
        title=f"{devices[0]}: {', '.join(rules)}",
    )


def doc(inc: Incident, kind: IncidentChangeKind = IncidentChangeKind.OPENED) -> dict[str, Any]:
    """The incidents-index document (the flat change, as the processor stores it)."""
    return incident_change_doc(IncidentChange(kind, inc))


def shown(v: FleetView) -> list[str]:
    return [i["incident_id"] for i in v.snapshot(T0)["incidents"]]


def test_open_incidents_most_severe_then_newest_first_with_their_rules() -> None:
    v = FleetView()
    rules = ("edge_anomaly", "fleet_outlier", "rate_of_change", "threshold_high")
    v.on_incident(doc(incident(1, devices=("a",))), now_ms=T0)
    v.on_incident(doc(incident(2, devices=("b",), rules=rules)), now_ms=T0)
    v.on_incident(doc(incident(3, devices=("c",), severity=Severity.CRITICAL)), now_ms=T0)
    assert shown(v) == ["device.c.3", "device.b.2", "device.a.1"]
    door = v.snapshot(T0)["incidents"][1]
    assert door["rules"] == list(rules) and door["alerts"] == 4
    assert (door["scope"], door["site"], door["devices"], door["severity"]) == (
        "device",
        "s1",
        ["b"],
        "warning",
    )
    assert door["opened_at"] == T0 + 2000 and door["status"] == "open"


def test_a_replayed_older_change_never_reopens_a_resolved_incident() -> None:
    opened = doc(incident(1, 1))
    escalated = doc(incident(1, 2, severity=Severity.CRITICAL), IncidentChangeKind.ESCALATED)
    resolved = doc(incident(1, 3, status=IncidentStatus.RESOLVED), IncidentChangeKind.RESOLVED)
    v = FleetView()
    assert v.on_incident(opened, now_ms=T0)
    assert v.on_incident(escalated, now_ms=T0)
    assert v.snapshot(T0)["incidents"][0]["severity"] == "critical"
    assert not v.on_incident(opened, now_ms=T0)  # older: ignored
    assert v.on_incident(resolved, now_ms=T0)
    for old in (opened, escalated, resolved):  # replayed from the topic or the index
        assert not v.on_incident(old, now_ms=T0)
    assert shown(v) == []
    assert [i["incident_id"] for i in v.snapshot(T0)["resolved_incidents"]] == ["device.d1.1"]
    w = FleetView()  # resolved seen first (search reload), then the old opening
    assert w.on_incident(resolved, now_ms=T0)
    assert not w.on_incident(opened, now_ms=T0)
    assert shown(w) == [] and len(w.snapshot(T0)["resolved_incidents"]) == 1


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(4)), st.lists(st.integers(0, 3), max_size=6))
def test_any_order_and_repeats_give_the_same_incidents(order: list[int], again: list[int]) -> None:
    changes = [
        doc(incident(1, 1)),
        doc(incident(1, 2, severity=Severity.CRITICAL)),
        doc(incident(2, 1, devices=("d2",))),
        doc(incident(2, 2, devices=("d2",), status=IncidentStatus.RESOLVED)),
    ]
    ordered, shuffled = FleetView(), FleetView()
    for c in changes:
        ordered.on_incident(c, now_ms=T0)
    for k in list(order) + again:
        shuffled.on_incident(changes[k], now_ms=T0)
    a, b = ordered.snapshot(T0), shuffled.snapshot(T0)
    assert (a["incidents"], a["resolved_incidents"]) == (b["incidents"], b["resolved_incidents"])


def test_the_resolved_list_is_bounded_newest_first() -> None:
    v = FleetView(max_resolved_incidents=3)
    for n in range(1, 8):
        inc = incident(n, 2, status=IncidentStatus.RESOLVED, resolved=T0 + 100_000 + n)
        v.on_incident(doc(inc), now_ms=T0)
    listed = [i["incident_id"] for i in v.snapshot(T0)["resolved_incidents"]]
    assert listed == ["device.d1.7", "device.d1.6", "device.d1.5"]
    assert not v.on_incident(doc(incident(2, 1)), now_ms=T0)  # off the list, still remembered


def test_held_incidents_are_bounded_under_a_flood_of_ids() -> None:
    from thermowatch.web import incidents as module

    book = IncidentBook(max_open=5)
    flood = module._MAX_HELD + 50
    for n in range(flood):
        book.fold(
            doc(incident(n, severity=Severity.CRITICAL if n == 3 else Severity.WARNING)), now_ms=T0
        )
    assert len(book) == module._MAX_HELD
    assert book.open_json()[0]["incident_id"] == "device.d1.3"  # the critical one stays


def test_info_incidents_are_held_but_not_listed() -> None:
    v = FleetView()
    shutdown = incident(1, severity=Severity.INFO, rules=(Rule.OFFLINE,), devices=("a", "b"))
    assert v.on_incident(doc(shutdown), now_ms=T0)
    assert shown(v) == [] and v.snapshot(T0)["resolved_incidents"] == []
    assert not v.on_incident(doc(shutdown), now_ms=T0)  # held: a repeat is not news


def test_alert_rows_name_their_open_incident() -> None:
    v = FleetView()
    inc = incident(1, rules=("threshold_high",))
    alert = Alert(
        inc.alert_ids[0],
        "d1",
        "s1",
        "threshold_high",
        Severity.WARNING,
        AlertStatus.OPEN,
        1,
        inc.opened_at,
        inc.opened_at,
    )
    v.on_alert(alert_doc(alert), now_ms=T0)
    assert v.snapshot(T0)["alerts"][0]["incident_id"] is None
    v.delta(T0)
    v.on_incident(doc(inc), now_ms=T0)
    delta = v.delta(T0)  # the incident changed: the alert rows are sent again, grouped
    assert delta is not None and delta["alerts"][0]["incident_id"] == inc.incident_id
    assert [i["incident_id"] for i in delta["incidents"]] == [inc.incident_id]
    assert v.delta(T0) is None


def test_delta_carries_the_incidents_only_when_they_changed() -> None:
    v = FleetView()
    v.add_reading("d1", "s1", 1, T0, 4.0, "ok")
    first = v.delta(T0)
    assert first is not None and "incidents" not in first and "alerts" not in first
    v.on_incident(doc(incident(1)), now_ms=T0)
    second = v.delta(T0)
    assert second is not None and len(second["incidents"]) == 1
    assert second["resolved_incidents"] == []
    v.on_incident(doc(incident(1, 2, status=IncidentStatus.RESOLVED)), now_ms=T0)
    third = v.delta(T0)
    assert third is not None and third["incidents"] == []
    assert [i["version"] for i in third["resolved_incidents"]] == [2]


def test_sync_keeps_fresh_incidents_and_drops_stale_ones() -> None:
    v = FleetView(alert_grace_s=30)
    v.on_incident(doc(incident(1)), now_ms=T0)
    v.on_incident(doc(incident(2)), now_ms=T0 + 25_000)
    assert v.sync_incidents([doc(incident(3))], now_ms=T0 + 40_000) == 2  # one in, one out
    assert shown(v) == ["device.d1.3", "device.d1.2"]


def test_incidents_of_devices_off_the_page_are_skipped() -> None:
    v = FleetView(devices=["s1-d01"])
    assert not v.on_incident(doc(incident(1, devices=("bench-1",))), now_ms=T0)
    assert v.on_incident(doc(incident(2, devices=("bench-1", "s1-d01"))), now_ms=T0)
    v.sync_incidents([doc(incident(3, devices=("bench-2",)))], now_ms=T0)
    assert shown(v) == ["device.bench-1.2"]


def test_hostile_documents_are_counted_and_skipped() -> None:
    v = FleetView()
    good = doc(incident(1))
    bad: list[Any] = [
        {},
        [],
        "incident",
        {**good, "scope": "planet"},
        {**good, "severity": "apocalyptic"},
        {**good, "version": 0},
        {**good, "version": "2"},
        {**good, "opened_at": -1},
        {**good, "device_ids": ["a b"]},
        {**good, "device_ids": [f"d{n}" for n in range(65)]},
        {**good, "rules": "threshold_high"},
        {**good, "message": "x" * 5000},
        {k: val for k, val in good.items() if k != "status"},
    ]
    for b in bad:
        assert not v.on_incident(b, now_ms=T0), b
    assert v.sync_incidents([*bad, good], now_ms=T0) == 1
    assert v.incidents.refused == 2 * len(bad)
    assert shown(v) == ["device.d1.1"]
    ENC.encode(v.snapshot(T0))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*doc(incident(1)), "x", ""]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=10,
        ),
    )
)
def test_any_document_is_folded_or_counted_and_skipped(fields: dict[str, Any]) -> None:
    v = FleetView()
    if not v.on_incident({**doc(incident(1)), **fields}, now_ms=T0):
        assert v.incidents.refused <= 1
    ENC.encode(v.snapshot(T0))
    ENC.encode(v.delta(T0))


def test_every_golden_incident_change_folds_into_the_view() -> None:
    """The contract's golden incident changes (tests/fixtures/messages/incident_change)."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    for entry in manifest["incident_change"]:
        change = json.loads((FIXTURES / entry["file"]).read_bytes())
        v = FleetView()
        assert v.on_incident(change, now_ms=change["updated_at"]), entry["file"]
        assert not v.on_incident(change, now_ms=T0)
        snap = v.snapshot(change["updated_at"])
        listed = snap["incidents"] if change["status"] == "open" else snap["resolved_incidents"]
        assert [i["rules"] for i in listed] == [change["rules"]], entry["file"]
    for entry in manifest["incident_change_invalid"]:
        bad = json.loads((FIXTURES / entry["file"]).read_bytes())
        v = FleetView()
        assert not v.on_incident(bad, now_ms=0), entry["file"]
        assert v.incidents.refused == 1


def status(device: str, ts: int, state: DeviceState, reason: str = "") -> DeviceStatus:
    return DeviceStatus(device_id=device, site="s1", ts=ts, state=state, reason=reason)


def test_an_announced_shutdown_or_maintenance_is_an_informational_state() -> None:
    v = FleetView()
    for dev in ("off", "down", "maint", "judged"):
        v.add_reading(dev, "s1", 1, T0, 4.0, "ok")
        v.on_status(status(dev, T0, DeviceState.ONLINE))
    v.on_status(status("off", T0 + 1, DeviceState.OFFLINE, "last will"))
    v.on_status(status("down", T0 + 1, DeviceState.OFFLINE, "shutdown"))
    v.on_status(status("maint", T0 + 1, DeviceState.OFFLINE, "maintenance"))

    def offline_alert(dev: str, severity: Severity) -> dict[str, Any]:
        return alert_doc(
            Alert(
                f"{dev}.device_offline.1",
                dev,
                "s1",
                Rule.OFFLINE,
                severity,
                AlertStatus.OPEN,
                1,
                T0 + 1,
                T0 + 1,
                message="device offline: shutdown",
            )
        )

    v.on_alert(offline_alert("down", Severity.WARNING), now_ms=T0)  # an older processor's
    v.on_alert(offline_alert("judged", Severity.INFO), now_ms=T0)  # announced, by the processor
    states = {d["device_id"]: d["state"] for d in v.snapshot(T0 + 2000)["devices"]}
    assert states == {
        "off": "offline",
        "down": "shutdown",
        "maint": "maintenance",
        "judged": "shutdown",
    }
    snap = v.snapshot(T0 + 2000)
    info = {a["device_id"]: a["informational"] for a in snap["alerts"]}
    assert info == {"down": True, "judged": True}  # listed apart, not among the alerts to act on
    assert {d["device_id"]: d["alerts"] for d in snap["devices"]}["down"] == 0
    v.delta(T0 + 2000)
    v.on_status(status("down", T0 + 5, DeviceState.ONLINE))  # back: online again
    delta = v.delta(T0 + 2000)
    assert delta is not None and delta["alerts"][0]["informational"] is False  # sent again
    v.on_status(status("maint", T0 + 5, DeviceState.OFFLINE, "last will"))  # died meanwhile
    states = {d["device_id"]: d["state"] for d in v.snapshot(T0 + 2000)["devices"]}
    assert (states["maint"], states["down"]) == ("offline", "offline")  # down: its alert is open


def test_announced_reasons_are_read_as_the_processor_reads_them() -> None:
    from cloud_processor.rules.offline import announced

    reasons = [
        "shutdown",
        "Shutdown",
        "maintenance: compressor swap",
        "maintenance;2h",
        " shutdown now",
        "last will",
        "connection lost",
        "",
        "shutdowns",
        "maintenance-window",
    ]
    v = FleetView()
    for n, reason in enumerate(reasons):
        v.on_status(status(f"d{n}", T0, DeviceState.OFFLINE, reason))
    states = {d["device_id"]: d["state"] for d in v.snapshot(T0)["devices"]}
    for n, reason in enumerate(reasons):
        assert (states[f"d{n}"] != "offline") is announced(reason), reason
    assert (states["d0"], states["d2"]) == ("shutdown", "maintenance")


def test_thirty_announced_shutdowns_do_not_bury_the_real_incident() -> None:
    """The end of a demo: every device of the fleet stops (announced), one incident is open."""
    v = FleetView()
    fleet = [f"s{n // 10 + 1}-d{n % 10 + 1:02d}" for n in range(30)]
    for n, dev in enumerate(fleet):
        v.add_reading(dev, dev[:2], 1, T0, 4.0, "ok")
        v.on_status(status(dev, T0 + 10, DeviceState.OFFLINE, "shutdown"))
        bye = Alert(
            f"{dev}.device_offline.{T0 + 10}", dev, dev[:2], Rule.OFFLINE, Severity.INFO,
            AlertStatus.OPEN, 1, T0 + 10 + n, T0 + 10 + n, message="device offline: shutdown",
        )  # fmt: skip
        v.on_alert(alert_doc(bye), now_ms=T0)
    door = incident(1, devices=("s1-d03",), severity=Severity.CRITICAL, opened=T0 - 60_000)
    hot = Alert(
        door.alert_ids[0], "s1-d03", "s1", "threshold_high", Severity.CRITICAL,
        AlertStatus.OPEN, 1, T0 - 60_000, T0 - 60_000,
    )  # fmt: skip
    v.on_alert(alert_doc(hot), now_ms=T0)
    v.on_incident(doc(door), now_ms=T0)
    snap = v.snapshot(T0 + 1000)
    assert [i["incident_id"] for i in snap["incidents"]] == [door.incident_id]
    to_act_on = [a["alert_id"] for a in snap["alerts"] if not a["informational"]]
    assert to_act_on == [hot.alert_id]  # first, and alone: the 30 shutdowns are listed apart
    assert sum(a["informational"] for a in snap["alerts"]) == 30
    assert {d["state"] for d in snap["devices"]} == {"shutdown"}
    assert all(d["alerts"] == 0 for d in snap["devices"] if d["device_id"] != "s1-d03")


def test_the_web_docs_name_no_kafka_topic_of_incidents() -> None:
    """Incidents reach the web view only through the incidents index (polled):
    the processor publishes no Kafka topic of them, and the docstrings say so."""
    import dataclasses

    import thermowatch.web.app as app
    import thermowatch.web.incidents as incidents
    from telemetry_contract.topics import kafka_topics

    assert not any("incident" in name for name in dataclasses.asdict(kafka_topics()).values())
    for module in (app, incidents):
        text = " ".join((module.__doc__ or "").split())
        assert "incidents topic" not in text and "incident changes, device" not in text
        assert "incidents_refresh_s" in text
