"""Fleet rules and alert lifecycle on crafted event sequences (pure, no services)."""

from __future__ import annotations

from cloud_processor.config import AlertSettings, RuleGroup, RulesConfig
from cloud_processor.rules import FleetRules
from telemetry_contract import (
    AlertChange,
    AlertState,
    AlertStatus,
    ChangeKind,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    GapReason,
    Quality,
    Reading,
    Rule,
    Severity,
)

T0 = 1_767_225_600_000
S = 1000


class Fleet:
    """Feeds crafted events; processing time follows event time unless told."""

    def __init__(self, rules: RulesConfig, alerts: AlertSettings | None = None) -> None:
        self.rules = FleetRules(rules, alerts or AlertSettings())
        self.seq: dict[str, int] = {}

    def reading(
        self,
        t_s: float,
        temp: float | None,
        device: str = "d1",
        site: str = "s1",
        quality: Quality = Quality.OK,
        now_s: float | None = None,
    ) -> list[AlertChange]:
        seq = self.seq[device] = self.seq.get(device, 0) + 1
        r = Reading(
            device_id=device,
            sensor_id="host",
            site=site,
            seq=seq,
            ts=T0 + int(t_s * S),
            temp_c=temp,
            quality=quality,
        )
        return self.rules.on_reading(r, now_ms=T0 + int((t_s if now_s is None else now_s) * S))


def kinds(changes: list[AlertChange]) -> list[tuple[str, str]]:
    return [(c.kind.value, c.alert.rule) for c in changes]


def test_threshold_waits_for_min_duration_then_opens() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=60))
    assert f.reading(0, 9.0) == []
    assert f.reading(30, 9.0) == []
    changes = f.reading(60, 9.5)
    assert kinds(changes) == [("opened", "threshold_high")]
    a = changes[0].alert
    assert a.severity is Severity.WARNING and a.value == 9.5 and a.threshold == 8.0
    assert a.alert_id == f"d1.threshold_high.{T0 + 60 * S}"
    assert changes[0].notify and not a.late


def test_threshold_dip_below_limit_restarts_min_duration() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=60))
    f.reading(0, 9.0)
    f.reading(50, 7.9)  # back below: the clock restarts
    assert f.reading(70, 9.0) == []
    assert f.reading(110, 9.0) == []
    assert kinds(f.reading(130, 9.0)) == [("opened", "threshold_high")]


def test_threshold_hysteresis_band_keeps_alert_open_until_clear_level() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, hysteresis_c=1.0, min_duration_s=0))
    assert kinds(f.reading(0, 8.5)) == [("opened", "threshold_high")]
    for t, v in ((10, 7.9), (20, 8.2), (30, 7.1), (40, 7.5)):
        assert f.reading(t, v) == [], v  # oscillating inside the band: no noise
    changes = f.reading(50, 7.0)
    assert kinds(changes) == [("resolved", "threshold_high")]
    a = changes[0].alert
    assert a.status is AlertStatus.RESOLVED and a.resolved_at == T0 + 50 * S
    assert a.clear_reason == "temp_c 7.0 <= 7 (threshold 8 - hysteresis 1)"
    assert a.version == 2


def test_threshold_escalates_to_critical_and_back_as_updates() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, critical_high_c=12.0, min_duration_s=0))
    opened = f.reading(0, 9.0)
    up = f.reading(10, 12.5)
    down = f.reading(20, 9.0)
    assert [c.kind for c in opened + up + down] == [ChangeKind.OPENED, ChangeKind.UPDATED] * 1 + [
        ChangeKind.UPDATED
    ]
    assert up[0].alert.severity is Severity.CRITICAL and up[0].alert.version == 2
    assert down[0].alert.severity is Severity.WARNING and down[0].alert.version == 3
    assert len({c.alert.alert_id for c in opened + up + down}) == 1  # one alert per (device, rule)


def test_low_threshold_with_hysteresis() -> None:
    f = Fleet(RulesConfig(threshold_low_c=-25.0, hysteresis_c=2.0, min_duration_s=0))
    assert kinds(f.reading(0, -26.0)) == [("opened", "threshold_low")]
    assert f.reading(10, -24.0) == []
    assert kinds(f.reading(20, -23.0)) == [("resolved", "threshold_low")]


def test_non_ok_readings_do_not_drive_thresholds() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=0))
    assert f.reading(0, 85.0, quality=Quality.POWER_ON_RESET) == []


def test_rate_of_change_opens_and_clears() -> None:
    f = Fleet(RulesConfig(rate_max_c_per_min=2.0, rate_window_s=60))
    assert f.reading(0, 4.0) == []
    assert f.reading(10, 8.0) == []  # baseline shorter than half the window: no verdict
    changes = f.reading(40, 8.0)  # +4 °C in 40 s = 6 °C/min
    assert kinds(changes) == [("opened", "rate_of_change")]
    assert changes[0].alert.value == 6.0
    assert f.reading(60, 8.5) == []  # 4.5 °C in 50 s: still above the clear level
    # 80 s: the window (20..80 s) holds 8.0, 8.5, 8.0: no change any more
    assert kinds(f.reading(80, 8.0)) == [("resolved", "rate_of_change")]


def test_stale_sensor_opens_on_tick_and_clears_on_reading() -> None:
    f = Fleet(RulesConfig(stale_after_s=300))
    f.reading(0, 4.0)
    assert f.rules.tick(T0 + 299 * S) == []
    changes = f.rules.tick(T0 + 301 * S)
    assert kinds(changes) == [("opened", "stale_sensor")]
    assert f.rules.tick(T0 + 400 * S) == []  # still one alert
    assert kinds(f.reading(500, 4.0)) == [("resolved", "stale_sensor")]


def test_device_offline_from_last_will_and_back_online() -> None:
    f = Fleet(RulesConfig(stale_after_s=60))
    f.reading(0, 4.0)
    off = DeviceStatus(
        device_id="d1", site="s1", ts=T0 + 10 * S, state=DeviceState.OFFLINE, reason="last will"
    )
    changes = f.rules.on_status(off, now_ms=T0 + 10 * S)
    assert kinds(changes) == [("opened", "device_offline")]
    assert "last will" in changes[0].alert.message
    assert f.rules.tick(T0 + 600 * S) == []  # offline, so no extra stale alert
    stale_status = DeviceStatus(device_id="d1", site="s1", ts=T0 + 5 * S, state=DeviceState.ONLINE)
    assert f.rules.on_status(stale_status, now_ms=T0 + 600 * S) == []  # older than the last will
    on = DeviceStatus(device_id="d1", site="s1", ts=T0 + 700 * S, state=DeviceState.ONLINE)
    assert kinds(f.rules.on_status(on, now_ms=T0 + 700 * S)) == [("resolved", "device_offline")]


def test_last_will_after_a_restart_opens_a_new_offline_alert() -> None:
    # The will is composed at connect, so it carries the same ts as the online
    # status of that connection, which resolved the previous offline alert.
    f = Fleet(RulesConfig(stale_after_s=60))
    f.reading(0, 4.0)
    first = DeviceStatus(
        device_id="d1", site="s1", ts=T0 + 10 * S, state=DeviceState.OFFLINE, reason="shutdown"
    )
    announced = f.rules.on_status(first, now_ms=T0 + 10 * S)
    assert kinds(announced) == [("opened", "device_offline")]
    assert (announced[0].alert.severity, announced[0].notify) == (Severity.INFO, False)
    online = DeviceStatus(device_id="d1", site="s1", ts=T0 + 20 * S, state=DeviceState.ONLINE)
    resolved = f.rules.on_status(online, now_ms=T0 + 20 * S)
    assert kinds(resolved) == [("resolved", "device_offline")]
    will = DeviceStatus(
        device_id="d1", site="s1", ts=T0 + 20 * S, state=DeviceState.OFFLINE, reason="lost"
    )
    changes = f.rules.on_status(will, now_ms=T0 + 90 * S)
    assert kinds(changes) == [("opened", "device_offline")]
    assert (changes[0].alert.severity, changes[0].notify) == (Severity.WARNING, True)  # a loss
    assert changes[0].alert.alert_id != resolved[0].alert.alert_id
    # The same will delivered again changes nothing, and the next online resolves it.
    assert f.rules.on_status(will, now_ms=T0 + 91 * S) == []
    back = DeviceStatus(device_id="d1", site="s1", ts=T0 + 95 * S, state=DeviceState.ONLINE)
    assert kinds(f.rules.on_status(back, now_ms=T0 + 95 * S)) == [("resolved", "device_offline")]


def test_an_announced_shutdown_is_informational_and_resolves_when_back() -> None:
    """An agent that says it stops (or enters maintenance) opens no alert worth a
    notification: an info alert the operator sees, resolved when it is back."""
    f = Fleet(RulesConfig(stale_after_s=60))
    f.reading(0, 4.0)
    for n, reason in enumerate(("shutdown", "maintenance: defrost service")):
        t = T0 + (100 + 100 * n) * S
        bye = DeviceStatus(
            device_id="d1", site="s1", ts=t, state=DeviceState.OFFLINE, reason=reason
        )
        opened = f.rules.on_status(bye, now_ms=t)
        assert [(c.kind.value, c.alert.severity, c.notify) for c in opened] == [
            ("opened", Severity.INFO, False)
        ]
        assert opened[0].alert.message == f"device offline: {reason}"
        assert f.rules.tick(t + 600 * S) == []  # announced, so no stale alert either
        back = DeviceStatus(device_id="d1", site="s1", ts=t + 50 * S, state=DeviceState.ONLINE)
        closed = f.rules.on_status(back, now_ms=t + 50 * S)
        assert [(c.kind.value, c.notify) for c in closed] == [("resolved", False)]


def _site(f: Fleet, t: float, temps: dict[str, float]) -> list[AlertChange]:
    """One round of readings, then the per-batch tick that judges outliers."""
    out: list[AlertChange] = []
    for dev, temp in temps.items():
        out += f.reading(t, temp, device=dev)
    return out + f.rules.tick(T0 + int(t * S))


def test_fleet_outlier_robust_z_opens_and_resolves() -> None:
    f = Fleet(RulesConfig(outlier_z=4.0, outlier_clear_z=2.5, outlier_min_peers=4))
    normal = {"a": 4.0, "b": 4.2, "c": 3.9, "d": 4.1, "e": 4.0}
    assert _site(f, 0, normal) == []
    changes = _site(f, 30, {**normal, "e": 12.0})
    assert kinds(changes) == [("opened", "fleet_outlier")]
    assert changes[0].alert.device_id == "e" and changes[0].alert.score is not None
    assert changes[0].alert.score >= 4.0
    assert kinds(_site(f, 60, normal)) == [("resolved", "fleet_outlier")]


def test_fleet_outlier_needs_enough_peers_and_ignores_other_sites() -> None:
    f = Fleet(RulesConfig(outlier_min_peers=4))
    f.reading(0, 4.0, device="a")
    f.reading(0, 4.0, device="b")
    f.reading(0, 4.0, device="x", site="s2")
    f.reading(0, 4.0, device="y", site="s2")
    f.reading(1, 30.0, device="c")
    assert f.rules.tick(T0 + S) == []  # three devices in s1 only


def test_fleet_outlier_does_not_depend_on_arrival_order_within_a_batch() -> None:
    f = Fleet(RulesConfig(outlier_min_peers=4))
    # the outlier arrives first (its partition was read first), its peers after
    f.reading(0, 12.0, device="e")
    for dev, temp in {"a": 4.0, "b": 4.2, "c": 3.9, "d": 4.1}.items():
        f.reading(0, temp, device=dev)
    assert kinds(f.rules.tick(T0)) == [("opened", "fleet_outlier")]


def test_outlier_confirms_an_edge_anomaly() -> None:
    f = Fleet(RulesConfig(outlier_min_peers=4))
    normal = {"a": 4.0, "b": 4.2, "c": 3.9, "d": 4.1, "e": 4.0}
    _site(f, 0, normal)
    edge = EdgeAlert(
        device_id="e",
        site="s1",
        alert_id="e.anomaly.1",
        ts=T0 + S,
        kind=EdgeAlertKind.ANOMALY,
        severity=Severity.WARNING,
    )
    f.rules.on_edge_alert(edge, now_ms=T0 + S)
    changes = _site(f, 30, {**normal, "e": 12.0})
    assert kinds(changes) == [("opened", "fleet_outlier"), ("updated", "edge_anomaly")]
    assert changes[1].alert.severity is Severity.CRITICAL


def _edge(ts_s: float, state: AlertState = AlertState.RAISED) -> EdgeAlert:
    return EdgeAlert(
        device_id="d1",
        site="s1",
        alert_id="d1.anomaly.7",
        ts=T0 + int(ts_s * S),
        kind=EdgeAlertKind.ANOMALY,
        state=state,
        severity=Severity.WARNING,
        message="score 0.97",
        anomaly_score=0.97,
    )


def test_edge_anomaly_alone_keeps_edge_severity() -> None:
    f = Fleet(RulesConfig())
    changes = f.rules.on_edge_alert(_edge(0), now_ms=T0)
    assert kinds(changes) == [("opened", "edge_anomaly")]
    assert changes[0].alert.severity is Severity.WARNING
    assert kinds(f.rules.on_edge_alert(_edge(60, AlertState.CLEARED), now_ms=T0 + 60 * S)) == [
        ("resolved", "edge_anomaly")
    ]


def test_edge_anomaly_confirmed_by_cloud_evidence_is_raised_a_level() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=0))
    f.reading(0, 9.0)  # cloud threshold alert active
    changes = f.rules.on_edge_alert(_edge(1), now_ms=T0 + S)
    assert changes[0].alert.severity is Severity.CRITICAL
    assert "confirmed by threshold_high" in changes[0].alert.message


def test_edge_anomaly_upgraded_when_evidence_arrives_later() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=0))
    f.reading(0, 4.0)
    f.rules.on_edge_alert(_edge(1), now_ms=T0 + S)
    changes = f.reading(2, 9.0)
    assert kinds(changes) == [("opened", "threshold_high"), ("updated", "edge_anomaly")]
    assert changes[1].alert.severity is Severity.CRITICAL


def test_sensor_fault_storm_opens_and_clears() -> None:
    f = Fleet(RulesConfig(fault_storm_count=3, fault_storm_window_s=60))
    out = []
    for t in range(3):
        out += f.reading(t, None, quality=Quality.CRC_ERROR)
    assert kinds(out) == [("opened", "sensor_fault_storm")]
    assert f.reading(30, 4.0) == []  # faults still inside the window
    assert kinds(f.reading(70, 4.0)) == [("resolved", "sensor_fault_storm")]


def test_gap_is_an_alert_until_data_after_it_arrives() -> None:
    f = Fleet(RulesConfig())
    f.seq["d1"] = 10
    gap = Gap(
        device_id="d1", site="s1", ts=T0, first_seq=11, last_seq=20, reason=GapReason.OUTBOX_FULL
    )
    changes = f.rules.on_gap(gap, now_ms=T0)
    assert kinds(changes) == [("opened", "data_gap")]
    assert changes[0].alert.value == 10.0
    f.seq["d1"] = 20
    assert kinds(f.reading(1, 4.0)) == [("resolved", "data_gap")]  # seq 21


def test_flapping_is_suppressed_then_resolved_after_hold() -> None:
    alerts = AlertSettings(flap_max_opens=3, flap_window_s=900, flap_hold_s=120)
    f = Fleet(RulesConfig(threshold_high_c=8.0, hysteresis_c=0.5, min_duration_s=0), alerts)
    seen: list[AlertChange] = []
    t = 0
    for _ in range(6):  # the value bounces across the band every 10 s
        seen += f.reading(t, 9.0)
        seen += f.reading(t + 10, 7.0)
        t += 20
    summary = [(c.kind.value, c.alert.flapping) for c in seen]
    assert summary == [
        ("opened", False),
        ("resolved", False),
        ("opened", False),
        ("resolved", False),
        ("opened", False),
        ("updated", True),  # third open: flapping, held open
    ]
    # stays calm for the hold time: resolved once
    assert f.reading(t + 100, 7.0) == []
    final = f.reading(t + 130, 7.0)
    assert [(c.kind.value, c.alert.flapping) for c in final] == [("resolved", True)]


def test_replayed_backlog_records_late_alerts_without_notifying() -> None:
    f = Fleet(
        RulesConfig(threshold_high_c=8.0, min_duration_s=0), AlertSettings(max_event_age_s=600)
    )
    now = 7200.0  # the backlog is two hours old
    opened = f.reading(0, 9.0, now_s=now)
    resolved = f.reading(60, 4.0, now_s=now)
    assert kinds(opened + resolved) == [
        ("opened", "threshold_high"),
        ("resolved", "threshold_high"),
    ]
    assert all(c.alert.late and not c.notify for c in opened + resolved)


def test_backlog_condition_still_true_now_becomes_news() -> None:
    f = Fleet(
        RulesConfig(threshold_high_c=8.0, min_duration_s=0), AlertSettings(max_event_age_s=600)
    )
    late = f.reading(0, 9.0, now_s=7200)
    assert not late[0].notify
    live = f.reading(7195, 9.5, now_s=7200)
    assert [(c.kind.value, c.alert.late, c.notify) for c in live] == [("updated", False, True)]


def test_events_behind_the_event_time_watermark_are_late() -> None:
    f = Fleet(
        RulesConfig(threshold_high_c=8.0, min_duration_s=0), AlertSettings(allowed_lateness_s=120)
    )
    f.reading(1000, 4.0, device="other", now_s=1000)
    late = f.reading(500, 9.0, now_s=1000)  # 500 s behind the newest event time
    assert late[0].alert.late and not late[0].notify


def test_restored_state_suppresses_replayed_changes() -> None:
    cfg = RulesConfig(threshold_high_c=8.0, min_duration_s=0)
    first = Fleet(cfg)
    stored = first.reading(0, 9.0) + first.reading(10, 12.0) + first.reading(20, 4.0)
    stored += first.reading(30, 9.0)  # a second lifecycle, still open
    latest = {c.alert.alert_id: c.alert for c in stored}
    # restart: state rebuilt from the alerts index, same records delivered again
    second = Fleet(cfg)
    second.rules.restore(latest.values())
    assert second.rules.book.active("d1", "threshold_high") is not None
    again = second.reading(0, 9.0) + second.reading(10, 12.0) + second.reading(20, 4.0)
    again += second.reading(30, 9.0)
    assert again == []
    # ... and a genuinely new change after the replay is emitted
    assert kinds(second.reading(40, 4.0)) == [("resolved", "threshold_high")]


def test_rule_groups_per_site_and_device() -> None:
    cfg = RulesConfig(
        threshold_high_c=8.0,
        min_duration_s=0,
        groups={
            "freezers": RuleGroup(sites=["cold"], threshold_high_c=-15.0),
            "probe": RuleGroup(devices=["cold-d9"], threshold_high_c=0.0),
        },
    )
    f = Fleet(cfg)
    assert kinds(f.reading(0, -10.0, device="cold-d1", site="cold")) == [
        ("opened", "threshold_high")
    ]
    assert f.reading(0, -10.0, device="cold-d9", site="cold") == []
    assert f.reading(0, 5.0, device="warm-d1", site="warm") == []
    assert cfg.for_device("cold-d9", "cold").threshold_high_c == 0.0


def test_all_rules_have_distinct_names() -> None:
    assert len({r.value for r in Rule}) == len(Rule)


def test_replay_starting_inside_a_resolved_alert_opens_nothing() -> None:
    cfg = RulesConfig(threshold_high_c=8.0, min_duration_s=0)
    first = Fleet(cfg)
    temps = [4.0] * 5 + [9.0] * 5 + [4.0] * 5
    stored = [c for t, v in enumerate(temps) for c in first.reading(t, v)]
    assert kinds(stored) == [("opened", "threshold_high"), ("resolved", "threshold_high")]
    second = Fleet(cfg)
    second.rules.restore([stored[-1].alert])
    second.seq["d1"] = 7
    # replay from the middle of the hot stretch: already judged, nothing new
    assert [c for t in range(7, 15) for c in second.reading(t, temps[t])] == []
    # a new excursion after the resolved one is a new alert
    assert kinds(second.reading(20, 9.0)) == [("opened", "threshold_high")]


def test_restoring_twice_does_not_inflate_flapping_counts() -> None:
    cfg = RulesConfig(threshold_high_c=8.0, min_duration_s=0)
    first = Fleet(cfg, AlertSettings(flap_max_opens=3))
    stored = first.reading(0, 9.0) + first.reading(10, 4.0)
    second = Fleet(cfg, AlertSettings(flap_max_opens=3))
    for _ in range(3):  # e.g. three rebalances
        second.rules.restore([stored[-1].alert])
    second.seq["d1"] = 2
    changes = second.reading(20, 9.0) + second.reading(30, 4.0)
    assert [(c.kind.value, c.alert.flapping) for c in changes] == [
        ("opened", False),
        ("resolved", False),
    ]


def test_every_registered_rule_listens_to_something() -> None:
    """Conformance over the registry: each entry builds a FleetRule overriding a hook."""
    from cloud_processor.rules import RULES, AlertBook, FleetRule

    hooks = [h for h in vars(FleetRule) if h.startswith("on_")]
    for make in RULES:
        rule = make(AlertBook(AlertSettings()))
        assert isinstance(rule, FleetRule)
        assert any(getattr(type(rule), h) is not getattr(FleetRule, h) for h in hooks), rule


def test_a_rule_added_to_the_registry_is_routed_its_messages() -> None:
    from cloud_processor.rules import RULES, Device, FleetRule, Signal

    class TooHot(FleetRule):
        def on_temperature(self, device: Device, ts: int, temp_c: float) -> Signal | None:
            if temp_c > 30.0:
                return device.signal(Rule.THRESHOLD_HIGH, active=True, ts=ts, message="hot")
            return None

    rules = FleetRules(RulesConfig(), AlertSettings(), registry=(*RULES, TooHot))
    r = Reading(device_id="d1", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=31.0)
    changes = rules.on_reading(r, now_ms=T0)
    assert [(c.kind.value, c.alert.message) for c in changes] == [("opened", "hot")]


def test_a_restored_confirmed_edge_alert_is_not_confirmed_again() -> None:
    cfg = RulesConfig(threshold_high_c=8.0, min_duration_s=0)
    first = Fleet(cfg)
    first.reading(0, 4.0)
    first.rules.on_edge_alert(_edge(1), now_ms=T0 + S)
    stored = first.reading(2, 9.0)  # threshold opens and confirms the edge alert
    assert kinds(stored) == [("opened", "threshold_high"), ("updated", "edge_anomaly")]
    second = Fleet(cfg)
    second.rules.restore([c.alert for c in stored])
    second.seq["d1"] = 2
    assert kinds(second.reading(3, 4.0)) == [("resolved", "threshold_high")]
    # new evidence: the edge alert, confirmed before the restart, is not raised again
    assert kinds(second.reading(4, 9.5)) == [("opened", "threshold_high")]


def test_confirmation_is_a_field_not_words_in_the_edge_message() -> None:
    f = Fleet(RulesConfig(threshold_high_c=8.0, min_duration_s=0))
    f.reading(0, 4.0)
    edge = EdgeAlert(
        device_id="d1",
        site="s1",
        alert_id="d1.anomaly.8",
        ts=T0 + S,
        kind=EdgeAlertKind.ANOMALY,
        severity=Severity.WARNING,
        message="odd shape (confirmed by the operator)",
    )
    f.rules.on_edge_alert(edge, now_ms=T0 + S)
    changes = f.reading(2, 9.0)
    assert kinds(changes) == [("opened", "threshold_high"), ("updated", "edge_anomaly")]
    assert changes[1].alert.severity is Severity.CRITICAL
