"""IncidentBook: alerts grouped into incidents, notified once per opening, rise and end.

Pure tests, no services: crafted alert changes in, incident changes out, and
properties over generated alert histories (distinct (incident_id, version),
one open incident per device, at most 3 notifications per incident, replay
and restart give the same changes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.incidents import IncidentBook, IncidentSettings
from stagekit.config import ConfigError, loads
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    Incident,
    IncidentChange,
    IncidentChangeKind,
    IncidentScope,
    IncidentStatus,
    Severity,
)

T0 = 1_767_225_600_000
S = 1000
RULES = ("edge_anomaly", "threshold_high", "fleet_outlier", "rate_of_change", "stale_sensor")


def opened(
    device: str, rule: str, t_s: float, sev: Severity = Severity.WARNING, site: str = "s1"
) -> AlertChange:
    ts = T0 + int(t_s * S)
    a = Alert(f"{device}.{rule}.{ts}", device, site, rule, sev, AlertStatus.OPEN, 1, ts, ts)
    return AlertChange(ChangeKind.OPENED, a)


def updated(change: AlertChange, t_s: float, sev: Severity) -> AlertChange:
    a = change.alert
    ts = T0 + int(t_s * S)
    new = Alert(
        a.alert_id,
        a.device_id,
        a.site,
        a.rule,
        sev,
        AlertStatus.OPEN,
        a.version + 1,
        a.opened_at,
        ts,
    )
    return AlertChange(ChangeKind.UPDATED, new)


def resolved(change: AlertChange, t_s: float) -> AlertChange:
    a = change.alert
    ts = T0 + int(t_s * S)
    new = Alert(
        a.alert_id,
        a.device_id,
        a.site,
        a.rule,
        a.severity,
        AlertStatus.RESOLVED,
        a.version + 1,
        a.opened_at,
        ts,
        resolved_at=ts,
    )
    return AlertChange(ChangeKind.RESOLVED, new, notify=change.notify)


def kinds(changes: list[IncidentChange]) -> list[tuple[str, str, bool]]:
    return [(c.kind.value, c.incident.severity.value, c.notify) for c in changes]


def run(book: IncidentBook, changes: list[AlertChange]) -> list[IncidentChange]:
    out: list[IncidentChange] = []
    for c in changes:
        out += book.apply(c)
    return out


# --- crafted cases -------------------------------------------------------------


def test_door_open_four_rules_one_incident_opened_escalated_resolved() -> None:
    book = IncidentBook(IncidentSettings(resolve_grace_s=60))
    edge = opened("d1", "edge_anomaly", 0)
    rate = opened("d1", "rate_of_change", 5)
    out = run(book, [edge, rate])
    high = opened("d1", "threshold_high", 60, Severity.CRITICAL)
    outlier = opened("d1", "fleet_outlier", 70)
    out += run(book, [high, outlier])
    out += run(book, [resolved(x, 300) for x in (edge, rate, high, outlier)])
    out += book.expire(T0 + 360 * S)
    assert {c.incident.incident_id for c in out} == {"device.d1.edge_anomaly.1767225600000"}
    notified = [c.kind for c in out if c.notify]
    assert notified == [
        IncidentChangeKind.OPENED,
        IncidentChangeKind.ESCALATED,
        IncidentChangeKind.RESOLVED,
    ]
    last = out[-1].incident
    assert last.status is IncidentStatus.RESOLVED
    assert last.rules == ("edge_anomaly", "fleet_outlier", "rate_of_change", "threshold_high")
    assert (last.alert_count, last.active_alerts, last.severity) == (4, 0, Severity.CRITICAL)
    assert last.notified == ("opened", "escalated", "resolved")
    assert last.resolved_at == T0 + 300 * S  # when its last alert resolved, not the grace end


def test_alerts_joining_at_the_same_severity_are_not_notified() -> None:
    book = IncidentBook()
    out = run(book, [opened("d1", r, i) for i, r in enumerate(RULES[:4])])
    assert [c.kind.value for c in out if c.notify] == ["opened"]


def test_a_flap_within_the_grace_joins_the_same_incident() -> None:
    book = IncidentBook(IncidentSettings(resolve_grace_s=120))
    first = opened("d1", "threshold_high", 0)
    out = run(book, [first, resolved(first, 30)])
    again = opened("d1", "threshold_high", 90)
    out += run(book, [again, resolved(again, 100)])
    out += book.expire(T0 + 220 * S)
    assert len({c.incident.incident_id for c in out}) == 1
    assert [c.kind.value for c in out if c.notify] == ["opened", "resolved"]


def test_after_the_grace_a_new_alert_opens_a_new_incident() -> None:
    book = IncidentBook(IncidentSettings(resolve_grace_s=60))
    first = opened("d1", "threshold_high", 0)
    out = run(book, [first, resolved(first, 30)])
    out += book.apply(opened("d1", "threshold_high", 200))  # expires the first one before
    assert [(c.kind.value, c.incident.incident_id[-13:]) for c in out if c.notify] == [
        ("opened", "1767225600000"),
        ("resolved", "1767225600000"),
        ("opened", "1767225800000"),
    ]


def test_severity_dropping_and_rising_again_escalates_once() -> None:
    book = IncidentBook()
    warn = opened("d1", "fleet_outlier", 0)
    crit = opened("d1", "threshold_high", 10, Severity.CRITICAL)
    crit2 = opened("d1", "rate_of_change", 50, Severity.CRITICAL)
    out = run(book, [warn, crit, resolved(crit, 30), crit2])
    assert [c.kind.value for c in out if c.notify] == ["opened", "escalated"]
    assert kinds(out)[2] == ("updated", "warning", False)


def test_late_alerts_stay_silent_until_a_live_one_reaches_the_incident() -> None:
    book = IncidentBook(IncidentSettings(resolve_grace_s=0))
    late = opened("d1", "threshold_high", 0)
    late = AlertChange(late.kind, late.alert, notify=False)
    out = book.apply(late)
    assert kinds(out) == [("opened", "warning", False)] and out[0].incident.late
    live = opened("d1", "fleet_outlier", 10)
    out = book.apply(live)
    assert kinds(out) == [("opened", "warning", True)] and not out[0].incident.late
    silent = IncidentBook(IncidentSettings(resolve_grace_s=0))
    out = run(silent, [late, resolved(late, 5)]) + silent.expire(T0 + 10 * S)
    assert [c.notify for c in out] == [False, False, False]


def test_an_informational_alert_opens_no_incident() -> None:
    book = IncidentBook()
    shutdown = opened("d1", "device_offline", 0, Severity.INFO)
    assert run(book, [shutdown, resolved(shutdown, 60)]) == []
    assert book.open_incidents() == []


def test_a_power_cut_folds_into_one_site_incident() -> None:
    book = IncidentBook(IncidentSettings(resolve_grace_s=30), site_size=lambda site: 4)
    offs = [opened(f"d{i}", "device_offline", i * 5, Severity.CRITICAL) for i in range(4)]
    out = run(book, offs)
    site = [c for c in out if c.incident.scope is IncidentScope.SITE]
    assert [c.kind.value for c in site] == ["opened", "updated"]  # 3 fold, the 4th joins
    assert site[-1].incident.device_ids == ("d0", "d1", "d2", "d3")
    folded = [c for c in out if c.kind is IncidentChangeKind.RESOLVED]
    # The two devices notified before the third made it a site incident hear
    # that their incidents ended; the third's opening was never told.
    assert [c.notify for c in folded] == [True, True, False]
    assert all(c.incident.message.startswith("folded into site.s1.") for c in folded)
    assert [c.incident.notified for c in folded] == [("opened", "resolved")] * 2 + [()]
    out += run(book, [resolved(x, 300) for x in offs]) + book.expire(T0 + 400 * S)
    notified = [(c.incident.scope.value, c.kind.value) for c in out if c.notify]
    assert notified == [
        ("device", "opened"),
        ("device", "opened"),
        ("device", "resolved"),
        ("device", "resolved"),
        ("site", "opened"),
        ("site", "resolved"),
    ]
    assert [i.incident_id for i in book.open_incidents()] == []


def test_a_few_devices_of_a_large_site_stay_device_incidents() -> None:
    book = IncidentBook(site_size=lambda site: 10)
    out = run(book, [opened(f"d{i}", "device_offline", i) for i in range(4)])
    assert {c.incident.scope for c in out} == {IncidentScope.DEVICE}
    assert len(book.open_incidents()) == 4


def test_restore_skips_what_is_stored_and_continues_the_versions() -> None:
    edge = opened("d1", "edge_anomaly", 0)
    high = opened("d1", "threshold_high", 10, Severity.CRITICAL)
    first = IncidentBook()
    before = run(first, [edge, high])
    again = IncidentBook()
    again.restore([before[-1].incident], [edge.alert, high.alert])
    assert run(again, [edge, high]) == []  # read again after a restart
    after = again.apply(resolved(edge, 20))
    assert [(c.kind.value, c.incident.version) for c in after] == [("updated", 3)]


def test_an_incident_of_many_alerts_restores_with_its_newest_open_ones() -> None:
    """More alerts than a document lists (128): the open ones (the newest here)
    are listed, resolved ones beyond the bound are dropped from memory but
    counted, and after a restart it resolves only when those open ones do."""
    book = IncidentBook(IncidentSettings(resolve_grace_s=120))
    lives = [opened("d1", RULES[i % len(RULES)], i) for i in range(200)]
    latest = {c.alert.alert_id: c.alert for c in lives}
    out: list[IncidentChange] = []
    for i, change in enumerate(lives):
        out += book.apply(change)
        if i < 197:
            done = resolved(change, i + 0.5)
            latest[done.alert.alert_id] = done.alert
            out += book.apply(done)
    (incident,) = book.open_incidents()
    assert incident.alert_count == 200 and incident.active_alerts == 3
    assert incident.rules == tuple(sorted(RULES))
    still_open = [c.alert.alert_id for c in lives[197:]]
    assert set(still_open) <= set(incident.alert_ids)
    assert len(book._open[incident.incident_id].alerts) <= 128  # bounded while it is open

    again = IncidentBook(IncidentSettings(resolve_grace_s=120))
    again.restore([incident], latest.values())
    after = run(again, [resolved(c, 300) for c in lives[197:199]])
    after += again.expire(T0 + 1000 * S)  # one still open: no grace runs
    assert [c.kind.value for c in after] == ["updated", "updated"]
    after = again.apply(resolved(lives[199], 301)) + again.expire(T0 + 1500 * S)
    assert [(c.kind.value, c.notify) for c in after] == [("updated", False), ("resolved", True)]
    assert after[-1].incident.alert_count == 200 and after[-1].incident.active_alerts == 0


def test_settings_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"site_fraction"):
        loads(IncidentSettings, "site_fraction = 1.5\n")


# --- properties ------------------------------------------------------------------


@dataclass(frozen=True)
class Life:
    """One alert's life: device, rule, severity, start, optional rise, duration, late."""

    device: int
    rule: int
    sev: Severity
    start_s: int
    rise_s: int | None
    dur_s: int
    late: bool


LIVES = st.lists(
    st.builds(
        Life,
        device=st.integers(0, 4),
        rule=st.integers(0, len(RULES) - 1),
        sev=st.sampled_from([Severity.WARNING, Severity.CRITICAL, Severity.INFO]),
        start_s=st.integers(0, 2000),
        rise_s=st.none() | st.integers(1, 200),
        dur_s=st.integers(1, 600),
        late=st.booleans(),
    ),
    max_size=25,
)


def history(lives: list[Life]) -> list[AlertChange]:
    """The alert changes of ``lives`` in event-time order (one active alert per key)."""
    events: list[tuple[int, int, AlertChange]] = []
    busy: dict[tuple[int, int], int] = {}
    for n, life in enumerate(sorted(lives, key=lambda x: x.start_s)):
        key = (life.device, life.rule)
        if busy.get(key, -1) >= life.start_s:
            continue  # the AlertBook keeps one active alert per (device, rule)
        busy[key] = life.start_s + life.dur_s
        first = opened(f"d{life.device}", RULES[life.rule], life.start_s, life.sev)
        first = AlertChange(first.kind, first.alert, notify=not life.late)
        events.append((first.alert.updated_at, n * 3, first))
        last = first
        if life.rise_s is not None and life.rise_s < life.dur_s:
            last = updated(first, life.start_s + life.rise_s, Severity.CRITICAL)
            last = AlertChange(last.kind, last.alert, notify=not life.late)
            events.append((last.alert.updated_at, n * 3 + 1, last))
        end = resolved(last, life.start_s + life.dur_s)
        events.append((end.alert.updated_at, n * 3 + 2, end))
    return [c for _, _, c in sorted(events, key=lambda e: (e[0], e[1]))]


FAST = settings(max_examples=150, deadline=None)


def play(changes: list[AlertChange], book: IncidentBook | None = None) -> list[IncidentChange]:
    book = book or IncidentBook(IncidentSettings(resolve_grace_s=60), site_size=lambda s: 5)
    out: list[IncidentChange] = []
    for c in changes:
        out += book.apply(c)
        devices = [d for i in book.open_incidents() for d in i.device_ids]
        assert len(devices) == len(set(devices)), "a device in two open incidents"
    return out + book.expire(T0 + 10**9)


@FAST
@given(LIVES)
def test_every_incident_change_has_a_distinct_id_and_version(lives: list[Life]) -> None:
    out = play(history(lives))
    keys = [(c.incident.incident_id, c.incident.version) for c in out]
    assert len(keys) == len(set(keys))
    for c in out:  # versions of one incident count up from 1 with no hole
        assert c.incident.version == sum(
            1 for x in out[: out.index(c) + 1] if x.incident.incident_id == c.incident.incident_id
        )


@FAST
@given(LIVES)
def test_at_most_three_notifications_per_incident(lives: list[Life]) -> None:
    out = play(history(lives))
    per: dict[str, Counter[str]] = {}
    for c in out:
        if c.notify:
            per.setdefault(c.incident.incident_id, Counter())[c.kind.value] += 1
    for counts in per.values():
        assert counts["opened"] <= 1 and counts["escalated"] <= 1 and counts["resolved"] <= 1
        assert counts["updated"] == 0
    for n, c in enumerate(out):  # the document says the same
        mine = [x for x in out[: n + 1] if x.incident.incident_id == c.incident.incident_id]
        assert list(c.incident.notified) == [x.kind for x in mine if x.notify]
    for c in out:  # a notified opening gets a notified end (a site fold included)
        if c.kind is IncidentChangeKind.RESOLVED and "opened" in c.incident.notified:
            assert c.notify


@FAST
@given(LIVES)
def test_every_incident_resolves_and_severity_is_the_max(lives: list[Life]) -> None:
    changes = history(lives)
    out = play(changes)
    last: dict[str, Incident] = {c.incident.incident_id: c.incident for c in out}
    assert all(i.status is IncidentStatus.RESOLVED for i in last.values())
    for c in out:
        if c.incident.status is IncidentStatus.OPEN and c.incident.active_alerts:
            assert c.incident.severity is not Severity.INFO


@FAST
@given(LIVES)
def test_replay_gives_identical_incident_changes(lives: list[Life]) -> None:
    changes = history(lives)
    assert play(changes) == play(changes)


@FAST
@given(LIVES, st.integers(0, 80), st.integers(0, 10))
def test_restart_from_stored_state_repeats_nothing_and_loses_nothing(
    lives: list[Life], cut: int, overlap: int
) -> None:
    """A restart after ``cut`` changes re-reads ``overlap`` of them: the incident
    changes after the restart are exactly those of an uninterrupted run."""
    changes = history(lives)
    cut = min(cut, len(changes))
    full = play(changes)
    book = IncidentBook(IncidentSettings(resolve_grace_s=60), site_size=lambda s: 5)
    before: list[IncidentChange] = []
    for c in changes[:cut]:
        before += book.apply(c)
    stored = {c.incident.incident_id: c.incident for c in before}
    alerts = {c.alert.alert_id: c.alert for c in changes[:cut]}
    again = IncidentBook(IncidentSettings(resolve_grace_s=60), site_size=lambda s: 5)
    again.restore(stored.values(), alerts.values())
    after = play(changes[max(0, cut - overlap) :], again)
    assert before + after == full


def test_webhook_notify_is_incidents_or_alerts_and_names_the_key() -> None:
    from cloud_processor.config import ProcessorConfig

    assert loads(ProcessorConfig, "").webhook.notify == "incidents"
    assert loads(ProcessorConfig, '[webhook]\nnotify = "alerts"\n').webhook.notify == "alerts"
    with pytest.raises(ConfigError, match=r"webhook\.notify"):
        loads(ProcessorConfig, '[webhook]\nnotify = "pager"\n')
    with pytest.raises(ConfigError, match=r"incidents\.site_min_devices"):
        loads(ProcessorConfig, "[incidents]\nsite_min_devices = 1\n")
