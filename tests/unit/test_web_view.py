"""The web view's pure core: folding readings, status and alerts; snapshots and deltas."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.webhook import change_payload
from stagekit.search.alerts import alert_doc
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    DeviceState,
    DeviceStatus,
    Quality,
    Reading,
    Rule,
    Severity,
    encode,
    encode_alert_change,
)
from thermowatch.web.view import FleetView, fold_record

T0 = 1_767_225_600_000


def reading(device: str, seq: int, temp: float | None = 4.0, site: str = "s1") -> Reading:
    quality = Quality.OK if temp is not None else Quality.CRC_ERROR
    return Reading(
        device_id=device,
        sensor_id="host",
        site=site,
        seq=seq,
        ts=T0 + seq * 1000,
        temp_c=temp,
        quality=quality,
    )


def alert(
    version: int = 1,
    status: AlertStatus = AlertStatus.OPEN,
    *,
    rule: str = "threshold_high",
    device: str = "d1",
    severity: Severity = Severity.WARNING,
    opened: int = T0,
) -> Alert:
    return Alert(
        f"{device}.{rule}.{opened}",
        device,
        "s1",
        rule,
        severity,
        status,
        version,
        opened,
        opened + version,
        message="temp_c 9.5 >= 8.0",
    )


def test_sparkline_keeps_the_newest_points_in_event_time_order() -> None:
    v = FleetView(sparkline_points=4)
    for seq in (5, 1, 3, 2, 6, 4, 3):
        v.on_reading(reading("d1", seq, float(seq)))
    (d,) = v.snapshot(T0 + 6000)["devices"]
    assert d["spark"] == [3.0, 4.0, 5.0, 6.0]
    assert (d["temp_c"], d["seq"], d["ts"]) == (6.0, 6, T0 + 6000)


def test_fault_readings_show_quality_but_not_in_the_sparkline() -> None:
    v = FleetView()
    v.on_reading(reading("d1", 1, 4.0))
    v.on_reading(reading("d1", 2, None))
    (d,) = v.snapshot(T0 + 2000)["devices"]
    assert (d["temp_c"], d["quality"], d["spark"]) == (4.0, "crc_error", [4.0])


def test_offline_by_last_will_by_alert_and_by_silence() -> None:
    v = FleetView(offline_after_s=60)
    v.on_reading(reading("d1", 1))
    online = DeviceStatus(device_id="d1", site="s1", ts=T0, state=DeviceState.ONLINE)
    will = DeviceStatus(device_id="d1", site="s1", ts=T0, state=DeviceState.OFFLINE, reason="lwt")
    assert v.on_status(online)
    assert v.snapshot(T0 + 2000)["devices"][0]["state"] == "online"
    assert v.on_status(will)  # the will carries the ts of its online status
    assert not v.on_status(online)  # ...and an online with that same ts does not undo it
    assert v.snapshot(T0 + 2000)["devices"][0]["state"] == "offline"
    v.on_reading(reading("d1", 5))  # readings of that session do not undo the will
    assert v.snapshot(T0 + 6000)["devices"][0]["state"] == "offline"
    back = DeviceStatus(device_id="d1", site="s1", ts=T0 + 5500, state=DeviceState.ONLINE)
    assert v.on_status(back)
    assert v.snapshot(T0 + 6000)["devices"][0]["state"] == "online"
    assert v.snapshot(T0 + 70_000)["devices"][0]["state_reason"] == "no reading for 65 s"
    v.on_alert(alert_doc(alert(rule="device_offline", device="d1")), now_ms=T0)
    d = v.snapshot(T0 + 6000)["devices"][0]
    assert (d["state"], d["alerts"], d["severity"]) == ("offline", 1, "warning")


def test_an_older_alert_version_never_reopens_a_resolved_alert() -> None:
    v = FleetView()
    opened = change_payload(AlertChange(ChangeKind.OPENED, alert(1)))
    resolved = change_payload(AlertChange(ChangeKind.RESOLVED, alert(2, AlertStatus.RESOLVED)))
    assert v.on_alert(opened, now_ms=T0)
    assert v.on_alert(resolved, now_ms=T0)
    assert not v.on_alert(opened, now_ms=T0)  # replayed from the topic
    assert v.snapshot(T0)["alerts"] == []
    w = FleetView()  # resolved seen first (search reload), then the old opened change
    assert not w.on_alert(resolved, now_ms=T0)
    assert not w.on_alert(opened, now_ms=T0)
    assert w.snapshot(T0)["alerts"] == []


def test_acknowledgement_at_the_same_version_is_taken() -> None:
    v = FleetView()
    doc = alert_doc(alert(1))
    v.on_alert(doc, now_ms=T0)
    assert v.on_alert({**doc, "acknowledged": True}, now_ms=T0)
    assert v.snapshot(T0)["alerts"][0]["acknowledged"] is True


def test_sync_keeps_fresh_kafka_alerts_and_drops_stale_ones() -> None:
    v = FleetView(alert_grace_s=30)
    v.on_alert(alert_doc(alert(1, device="a")), now_ms=T0)
    v.on_alert(alert_doc(alert(1, device="b")), now_ms=T0 + 25_000)
    v.sync_alerts([], now_ms=T0 + 40_000)
    assert [a["device_id"] for a in v.snapshot(T0)["alerts"]] == ["b"]


def test_alerts_most_severe_first_and_capped() -> None:
    v = FleetView(max_alerts=2)
    v.on_alert(alert_doc(alert(device="a", opened=T0)), now_ms=T0)
    v.on_alert(alert_doc(alert(device="b", opened=T0 + 1)), now_ms=T0)
    v.on_alert(alert_doc(alert(device="c", severity=Severity.CRITICAL)), now_ms=T0)
    assert [a["device_id"] for a in v.snapshot(T0)["alerts"]] == ["c", "b"]


def test_device_cap() -> None:
    v = FleetView(max_devices=2)
    assert v.on_reading(reading("a", 1)) and v.on_reading(reading("b", 1))
    assert not v.on_reading(reading("c", 1))
    assert v.device_ids() == ["a", "b"]


def test_delta_carries_changes_only_and_alerts_only_when_they_changed() -> None:
    v = FleetView(offline_after_s=10)
    v.on_reading(reading("a", 1))
    v.on_reading(reading("b", 1))
    first = v.delta(T0 + 1000)
    assert first is not None and "alerts" not in first
    assert {d["device_id"] for d in first["devices"]} == {"a", "b"}
    assert v.delta(T0 + 1500) is None
    v.on_reading(reading("a", 2))
    v.on_alert(alert_doc(alert(device="b")), now_ms=T0)
    second = v.delta(T0 + 2500)
    assert second is not None and len(second["alerts"]) == 1
    assert {d["device_id"] for d in second["devices"]} == {"a", "b"}
    third = v.delta(T0 + 11_500)  # b went silent (a too, a second later)
    assert third is not None and [d["device_id"] for d in third["devices"]] == ["b"]


def test_kafka_records_fold_like_the_processor_writes_them() -> None:
    v = FleetView()
    enc = msgspec.json.Encoder()
    assert fold_record(v, "telemetry", encode(reading("d1", 1, 5.5)), now_ms=T0)
    status = DeviceStatus(device_id="d1", site="s1", ts=T0, state=DeviceState.ONLINE)
    assert fold_record(v, "status", encode(status), now_ms=T0)
    change = AlertChange(ChangeKind.OPENED, alert(1, device="d1"))
    assert fold_record(v, "alerts", enc.encode(change_payload(change)), now_ms=T0)
    assert not fold_record(v, "alerts", b"\xff", now_ms=T0)
    assert not fold_record(v, "telemetry", None, now_ms=T0)
    snap = msgspec.json.decode(enc.encode(v.snapshot(T0 + 1000)))
    assert snap["devices"][0]["temp_c"] == 5.5
    assert snap["alerts"][0]["message"] == "temp_c 9.5 >= 8.0"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=80))
def test_same_readings_in_any_order_and_repeated_give_the_same_view(seqs: list[int]) -> None:
    ordered, shuffled = FleetView(sparkline_points=10), FleetView(sparkline_points=10)
    for seq in sorted(set(seqs)):
        ordered.on_reading(reading("d", seq, seq / 2))
    for seq in seqs:
        shuffled.on_reading(reading("d", seq, seq / 2))
    now = T0 + 40_000
    assert shuffled.snapshot(now)["devices"] == ordered.snapshot(now)["devices"]


def test_alert_changes_are_decoded_with_the_contract_old_records_included() -> None:
    v = FleetView()
    enc = msgspec.json.Encoder()
    old = change_payload(AlertChange(ChangeKind.OPENED, alert(1, device="d1")))
    for key in ("type", "schema_version"):  # written before the contract tagged changes
        del old[key]
    assert fold_record(v, "alerts", enc.encode(old), now_ms=T0)
    partial = {"alert_id": "d2.threshold_high.1", "device_id": "d2", "change": "opened"}
    assert not fold_record(v, "alerts", enc.encode(partial), now_ms=T0)
    offline = AlertChange(ChangeKind.OPENED, alert(1, rule=Rule.OFFLINE, device="d3"))
    assert fold_record(v, "alerts", encode_alert_change(offline), now_ms=T0)
    states = {d["device_id"]: d["state"] for d in v.snapshot(T0)["devices"]}
    assert states == {"d1": "offline", "d3": "offline"}  # d1: no reading yet
    assert v.snapshot(T0)["devices"][1]["state_reason"] == "temp_c 9.5 >= 8.0"


def test_every_golden_alert_change_folds_into_the_view() -> None:
    """The contract's golden alert changes (tests/fixtures/messages/alert_change)."""
    import json
    from pathlib import Path

    fixtures = Path(__file__).parents[1] / "fixtures" / "messages"
    entries = json.loads((fixtures / "manifest.json").read_text())["alert_change"]
    for entry in entries:
        raw = (fixtures / entry["file"]).read_bytes()
        doc = json.loads(raw)
        v = FleetView()
        if doc["status"] == "resolved":  # resolving changes a view that shows it open
            opened = {**doc, "status": "open", "version": 1, "change": "opened"}
            opened["resolved_at"] = opened["clear_reason"] = None
            assert fold_record(v, "alerts", json.dumps(opened).encode(), now_ms=doc["opened_at"])
        assert fold_record(v, "alerts", raw, now_ms=doc["updated_at"]), entry["file"]
        shown = [a["alert_id"] for a in v.snapshot(doc["updated_at"])["alerts"]]
        assert shown == ([doc["alert_id"]] if doc["status"] == "open" else []), entry["file"]
    for entry in json.loads((fixtures / "manifest.json").read_text())["alert_change_invalid"]:
        assert not fold_record(
            FleetView(), "alerts", (fixtures / entry["file"]).read_bytes(), now_ms=0
        )
