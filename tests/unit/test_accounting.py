"""Exact accounting, pure core: every allocated seq is stored, covered by a Gap, or lost."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace as replace_struct

from stagekit.search.incidents import incident_from_doc
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    Rule,
    Severity,
    alert_change_doc,
    encode_alert_change,
)
from thermowatch.accounting import (
    AlertDoc,
    GapRange,
    Incident,
    account,
    count_notifications,
    first_published,
    parse_alert_changes,
    percentiles,
    score_alerts,
    shutdown_alerts,
    topic_partitions,
)


def test_everything_stored_once_is_ok() -> None:
    stored = {("d1", s): 1 for s in range(100)} | {("d2", s): 1 for s in range(50)}
    acc = account({"d1": range(100), "d2": range(50)}, stored)
    assert (acc.sent, acc.stored, acc.lost, acc.duplicated, acc.covered) == (150, 150, 0, 0, 0)
    assert acc.ok


def test_a_missing_seq_is_lost_and_named() -> None:
    stored = {("d1", s): 1 for s in range(10) if s != 7}
    acc = account({"d1": range(10)}, stored)
    assert acc.lost == 1
    assert acc.lost_examples == (("d1", 7),)
    assert not acc.ok


def test_a_device_with_nothing_stored_loses_everything() -> None:
    acc = account({"d1": range(3), "quiet": range(4)}, {("d1", s): 1 for s in range(3)})
    assert acc.lost == 4 and acc.stored == 3


def test_extra_copies_are_duplicates() -> None:
    acc = account({"d1": range(3)}, {("d1", 0): 1, ("d1", 1): 3, ("d1", 2): 2})
    assert acc.duplicated == 3  # two extra copies of seq 1, one of seq 2
    assert acc.duplicated_examples == (("d1", 1), ("d1", 2))
    assert acc.lost == 0 and not acc.ok


def test_a_gap_covers_declared_losses() -> None:
    stored = {("d1", s): 1 for s in range(10) if not 3 <= s <= 5}
    acc = account({"d1": range(10)}, stored, [GapRange("d1", 3, 5)])
    assert (acc.lost, acc.covered, acc.gap_conflicts) == (0, 3, 0)
    assert acc.ok


def test_a_gap_of_another_device_covers_nothing() -> None:
    acc = account({"d1": range(3)}, {("d1", 0): 1}, [GapRange("d2", 1, 2)])
    assert acc.lost == 2 and acc.covered == 0


def test_a_gap_over_a_stored_seq_or_two_gaps_over_one_seq_is_a_conflict() -> None:
    stored = {("d1", s): 1 for s in range(5)}
    assert account({"d1": range(5)}, stored, [GapRange("d1", 4, 4)]).gap_conflicts == 1
    twice = account({"d1": range(5)}, {("d1", 0): 1}, [GapRange("d1", 1, 4), GapRange("d1", 4, 4)])
    assert twice.gap_conflicts == 1 and not twice.ok


def test_seqs_nobody_allocated_are_unexpected_not_lost() -> None:
    acc = account({"d1": range(2)}, {("d1", 0): 1, ("d1", 1): 1, ("d1", 2): 1, ("x", 0): 5})
    assert acc.unexpected == 2 and acc.duplicated == 0 and acc.ok


@given(
    n=st.integers(min_value=0, max_value=60),
    copies=st.lists(st.integers(min_value=0, max_value=3), max_size=60),
    gap=st.tuples(st.integers(0, 70), st.integers(0, 10)),
)
def test_every_seq_is_exactly_one_of_stored_covered_lost(
    n: int, copies: list[int], gap: tuple[int, int]
) -> None:
    stored = {("d", s): c for s, c in enumerate(copies[:n]) if c > 0}
    first, length = gap
    gaps = [GapRange("d", first, first + length)]
    acc = account({"d": range(n)}, stored, gaps)
    assert acc.stored + acc.covered + acc.lost == acc.sent == n
    assert acc.duplicated == sum(c - 1 for c in stored.values())
    assert acc.stored == len(stored)


def test_alerts_match_incidents_on_the_same_device_in_time() -> None:
    incidents = [
        Incident("door_open", "s1-d03", 10_000, 40_000),
        Incident("fire", "s3-d05", 20_000, 30_000),
        Incident("stuck", "s2-d07", 20_000, 60_000),
    ]
    alerts = [
        AlertDoc("s1-d03.threshold_high.12000", "s1-d03", "threshold_high", 12_000),
        AlertDoc("s1-d03.rate_of_change.11000", "s1-d03", "rate_of_change", 11_000),
        AlertDoc("s3-d05.rate_of_change.21000", "s3-d05", "rate_of_change", 21_000),
        AlertDoc("s2-d01.fleet_outlier.25000", "s2-d01", "fleet_outlier", 25_000),  # no incident
        AlertDoc("s1-d01.device_offline.1", "s1-d01", "device_offline", 1),  # before the run
        AlertDoc("s1-d02.device_offline.99000", "s1-d02", "device_offline", 99_000),  # shutdown
    ]
    s = score_alerts(incidents, alerts, grace_ms=5_000, since_ms=5_000, until_ms=90_000)
    assert (s.injected, s.alerted, s.missed, s.false_alerts) == (3, 2, 1, 1)
    assert s.latencies_ms == (1_000, 1_000, None)
    assert s.rules[0] == ("rate_of_change", "threshold_high")
    assert s.false_alert_ids == ("s2-d01.fleet_outlier.25000",)


def test_an_alert_after_the_grace_period_is_false() -> None:
    s = score_alerts(
        [Incident("fire", "d", 0, 1000)], [AlertDoc("a", "d", "r", 3000)], grace_ms=1000
    )
    assert s.alerted == 0 and s.false_alerts == 1


def test_a_last_will_alert_opened_in_the_past_matches_by_overlap_and_publish_time() -> None:
    # The will's event time is when the agent connected, long before it died.
    will = AlertDoc("d.device_offline.100", "d", "device_offline", 100, "resolved", 9_000)
    s = score_alerts(
        [Incident("offline", "d", 5_000, 8_000)],
        [will],
        published_ms={"d.device_offline.100": 5_250},
    )
    assert s.alerted == 1 and s.latencies_ms == (250,)


def test_percentiles_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentiles(values) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([7]) == {"p50": 7, "p95": 7, "p99": 7}


def test_topic_partitions_skips_missing_topics() -> None:
    described = [
        {"error_code": 0, "topic": "a", "partitions": [{"partition": 2}, {"partition": 0}]},
        {"error_code": 3, "topic": "b", "partitions": []},
    ]
    assert [(tp.topic, tp.partition) for tp in topic_partitions(described)] == [("a", 0), ("a", 2)]


def _change(kind: ChangeKind, version: int, status: AlertStatus) -> AlertChange:
    alert = Alert(
        "d.threshold_high.1000",
        "d",
        "s",
        Rule.THRESHOLD_HIGH,
        Severity.WARNING,
        status,
        version,
        1000,
        1000 + version,
    )
    return AlertChange(kind, alert)


def test_alert_changes_are_read_with_the_contract_old_and_new() -> None:
    opened = encode_alert_change(_change(ChangeKind.OPENED, 1, AlertStatus.OPEN))
    resolved = alert_change_doc(_change(ChangeKind.RESOLVED, 2, AlertStatus.RESOLVED))
    for key in ("type", "schema_version", "notify"):  # as written before the contract tagged it
        del resolved[key]
    partial = b'{"alert_id": "x", "change": "opened", "version": 1}'
    records = [(opened, 50), (json.dumps(resolved).encode(), 60), (partial, 70), (b"[]", 80)]
    changes = parse_alert_changes(records)
    assert [(c.alert_id, c.change, c.version, c.published_ms) for c in changes] == [
        ("d.threshold_high.1000", "opened", 1, 50),
        ("d.threshold_high.1000", "resolved", 2, 60),
    ]
    assert first_published([*changes, replace(changes[0], published_ms=40)]) == {
        "d.threshold_high.1000": 40
    }


def test_an_alert_document_scores_like_its_alert() -> None:
    change = _change(ChangeKind.RESOLVED, 2, AlertStatus.RESOLVED)
    alert = replace_struct(change.alert, resolved_at=1500)
    expected = AlertDoc("d.threshold_high.1000", "d", "threshold_high", 1000, "resolved", 1500, 2)
    assert AlertDoc.of(alert) == expected


def test_every_golden_alert_change_is_counted_as_published() -> None:
    """The contract's golden alert changes (tests/fixtures/messages/alert_change)."""
    from pathlib import Path

    fixtures = Path(__file__).parents[1] / "fixtures" / "messages"
    manifest = json.loads((fixtures / "manifest.json").read_text())
    valid = [(fixtures / e["file"]).read_bytes() for e in manifest["alert_change"]]
    invalid = [(fixtures / e["file"]).read_bytes() for e in manifest["alert_change_invalid"]]
    changes = parse_alert_changes([(raw, i) for i, raw in enumerate(valid + invalid)])
    assert [(c.alert_id, c.change, c.version) for c in changes] == [
        (json.loads(raw)["alert_id"], json.loads(raw)["change"], json.loads(raw)["version"])
        for raw in valid
    ]


# --- incidents and their notifications (the demo summary) ---------------------------

DEMO_RUN = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "demo" / "incidents_run.json").read_text()
)


def _demo_inputs() -> tuple[list[Incident], list[Any], list[AlertDoc]]:
    injected = [Incident(**i) for i in DEMO_RUN["injected"]]
    incidents = [incident_from_doc(d).incident for d in DEMO_RUN["incidents"]]
    after = [AlertDoc(**a) for a in DEMO_RUN["alerts_after_stop"]]
    return injected, incidents, after


def test_each_scripted_incident_is_one_incident_with_at_most_three_notifications() -> None:
    injected, incidents, _ = _demo_inputs()
    rows = count_notifications(injected, incidents)
    assert [(n.kind, len(n.incident_ids)) for n in rows] == [
        ("door_open", 1),
        ("stuck", 1),
        ("fire", 1),
        ("offline", 1),  # opened at the will's event time, before the kill: by overlap
    ]
    assert [(n.opened, n.escalated, n.resolved) for n in rows] == [
        (1, 1, 1),
        (1, 0, 1),
        (1, 1, 0),
        (1, 0, 1),
    ]
    assert max(n.total for n in rows) == 3


def test_an_incident_of_another_device_or_time_is_not_counted() -> None:
    injected, incidents, _ = _demo_inputs()
    later = [replace_struct(i, opened_at=i.opened_at + 10**7) for i in incidents]
    assert all(n.incident_ids == () for n in count_notifications(injected, later))
    moved = [replace_struct(i, device_ids=("s9-d01",)) for i in incidents]
    assert sum(n.total for n in count_notifications(injected, moved)) == 0


def test_the_fleet_shutdown_raises_no_critical_alert() -> None:
    _, _, after = _demo_inputs()
    since = DEMO_RUN["fleet_stopped_ms"]
    assert shutdown_alerts(after, since) == {"info": 3}
    critical = replace(after[0], severity="critical")
    assert shutdown_alerts([critical, *after[1:]], since) == {"critical": 1, "info": 2}


def test_the_demo_summary_carries_the_notifications(tmp_path: Path) -> None:
    from rich.console import Console

    from thermowatch.demo.account import summarize
    from thermowatch.demo.report import print_summary
    from thermowatch.demo.run import DemoRun

    injected, incidents, after = _demo_inputs()
    run = DemoRun(
        run_id="r1", run_dir=tmp_path, w1_dir=tmp_path / "w1", sites={"s1": ["s1-d03"]},
        duration_s=150.0,
    )  # fmt: skip
    score = score_alerts(injected, [], grace_ms=60_000)
    readings = account({}, {}, [])
    summary = summarize(
        run,
        readings,
        injected,
        score,
        dead=0,
        malformed_stored=0,
        notifications=count_notifications(injected, incidents),
        shutdown_alerts=shutdown_alerts(after, DEMO_RUN["fleet_stopped_ms"]),
    )
    assert summary["notifications_per_incident"] == 3
    assert summary["notifications"][0] == {
        "kind": "door_open",
        "device_id": "s1-d03",
        "incident_ids": ["device.s1-d03.rate_of_change.1796464833300"],
        "opened": 1,
        "escalated": 1,
        "resolved": 1,
    }
    assert summary["shutdown_alerts"] == {"info": 3}
    json.dumps(summary)  # JSON-ready
    console = Console(width=120, record=True, file=io.StringIO())
    print_summary(console, summary)
    text = console.export_text()
    assert "notifications_per_incident" in text and "1/1/1" in text and "1/1/0" in text


def test_a_recorded_demo_run_counts_the_same_notifications_again() -> None:
    """Recorded from the demo integration test: recounted from its documents,
    the summary's notifications come out as they did then."""
    rec = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "demo" / "recorded_run.json").read_text()
    )
    injected = [Incident(**i) for i in rec["injected"]]
    incidents = [incident_from_doc(d).incident for d in rec["incidents"]]
    rows = [n.as_dict() for n in count_notifications(injected, incidents)]
    assert rows == rec["summary"]["notifications"]
    assert [len(r["incident_ids"]) for r in rows] == [1, 1, 1, 1]
    assert max(n["opened"] + n["escalated"] + n["resolved"] for n in rows) <= 3
    after = [AlertDoc(**a) for a in rec["alerts_after_stop"]]
    assert shutdown_alerts(after, rec["fleet_stopped_ms"]) == rec["summary"]["shutdown_alerts"]
    assert rec["summary"]["shutdown_alerts"] == {"info": 6}  # the 6 devices' shutdowns


def test_the_demo_exits_1_when_the_alerts_break_their_promise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from thermowatch.demo import report
    from thermowatch.demo.account import alert_problems
    from thermowatch.demo.cli import _finish

    monkeypatch.setattr(report, "print_summary", lambda console, summary: None)

    good = {
        "ok": True,
        "incidents_missed": 0,
        "false_alerts": 0,
        "notifications_per_incident": 3,
        "shutdown_alerts": {"info": 30},
    }
    console = Console(file=io.StringIO(), width=120)
    quiet = dict(good, alert_problems=alert_problems(good))
    assert quiet["alert_problems"] == []
    assert _finish(console, quiet, None) == 0
    for key, bad in [
        ("incidents_missed", 1),
        ("false_alerts", 1),
        ("notifications_per_incident", 4),
        ("shutdown_alerts", {"info": 29, "critical": 1}),
    ]:
        summary = dict(good, **{key: bad})
        summary["alert_problems"] = alert_problems(summary)
        assert _finish(console, summary, None) == 1, key
        assert f"thermowatch: error: alerts: {key}:" in capsys.readouterr().err
