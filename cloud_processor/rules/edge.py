"""Edge alerts, surfaced as ``edge_<kind>`` alerts, and confirmed by cloud evidence.

An alert the edge agent raises opens ``edge_<kind>``; the edge clearing it
resolves it. An edge verdict that can be checked in the cloud (anomaly,
threshold) is *confirmed* when the same device has an active cloud
threshold, rate or outlier alert: its severity goes one level up and its
message says by what. Evidence that appears later confirms an active edge
alert then (an ``updated`` change); evidence that vanishes does not
downgrade it.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> from telemetry_contract import EdgeAlert, EdgeAlertKind, Severity
>>> book = AlertBook(AlertSettings())
>>> rule = EdgeAlerts(book)
>>> dev = Device("d1", "s1", RuleSettings())
>>> _ = book.apply(dev.signal(Rule.THRESHOLD_HIGH, active=True, ts=1_000), late=False)
>>> edge = EdgeAlert(device_id="d1", site="s1", alert_id="d1.anomaly.7", ts=2_000,
...                  kind=EdgeAlertKind.ANOMALY, severity=Severity.WARNING, message="score 0.97")
>>> s = rule.on_edge_alert(dev, edge)
>>> s.rule.value, s.severity.value, s.message, s.confirmed
('edge_anomaly', 'critical', 'score 0.97 (confirmed by threshold_high)', True)
>>> raised(Severity.INFO), raised(Severity.CRITICAL)
(<Severity.WARNING: 'warning'>, <Severity.CRITICAL: 'critical'>)
"""

from __future__ import annotations

from typing import Final

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import Signal
from telemetry_contract import AlertChange, AlertState, EdgeAlert, EdgeAlertKind, Rule, Severity

__all__ = ["CONFIRMABLE", "EVIDENCE", "EdgeAlerts", "raised"]

_RULE_OF: Final = {
    EdgeAlertKind.ANOMALY: Rule.EDGE_ANOMALY,
    EdgeAlertKind.THRESHOLD: Rule.EDGE_THRESHOLD,
    EdgeAlertKind.SENSOR_FAULT: Rule.EDGE_SENSOR_FAULT,
    EdgeAlertKind.CONFIG_REJECTED: Rule.EDGE_CONFIG_REJECTED,
}
#: Cloud rules whose active alert confirms an edge verdict.
EVIDENCE: Final = (Rule.THRESHOLD_HIGH, Rule.THRESHOLD_LOW, Rule.RATE_OF_CHANGE, Rule.OUTLIER)
#: Edge verdicts that cloud evidence can confirm.
CONFIRMABLE: Final = (Rule.EDGE_ANOMALY, Rule.EDGE_THRESHOLD)
#: Severities in increasing order (the contract's declaration order).
_LEVELS: Final = tuple(Severity)


def raised(severity: Severity) -> Severity:
    """One level up: info -> warning -> critical -> critical."""
    return _LEVELS[min(_LEVELS.index(severity) + 1, len(_LEVELS) - 1)]


class EdgeAlerts(FleetRule):
    """``edge_anomaly``, ``edge_threshold``, ``edge_sensor_fault``, ``edge_config_rejected``."""

    def on_edge_alert(self, device: Device, alert: EdgeAlert) -> Signal | None:
        rule = _RULE_OF[alert.kind]
        if alert.state is AlertState.CLEARED:
            return device.signal(
                rule, active=False, ts=alert.ts, message=f"edge cleared {alert.alert_id}"
            )
        severity = alert.severity
        message = alert.message or f"edge {alert.kind.value}"
        evidence = self._evidence(device) if rule in CONFIRMABLE else []
        if evidence:
            severity = raised(severity)
            message = _confirmed(message, evidence)
        return device.signal(
            rule,
            active=True,
            ts=alert.ts,
            severity=severity,
            value=alert.temp_c,
            score=alert.anomaly_score,
            message=message,
            confirmed=bool(evidence),
        )

    def on_changes(self, device: Device, changes: list[AlertChange], ts: int) -> list[Signal]:
        """Cloud evidence appeared: confirm the device's active, unconfirmed edge alerts."""
        if not any(change.alert.rule in EVIDENCE for change in changes):
            return []
        evidence = self._evidence(device)
        if not evidence:
            return []
        out: list[Signal] = []
        for rule in CONFIRMABLE:
            active = self.alerts.active(device.device_id, rule)
            if active is None or self.alerts.is_confirmed(device.device_id, rule):
                continue
            out.append(
                device.signal(
                    rule,
                    active=True,
                    ts=ts,
                    severity=raised(active.severity),
                    message=_confirmed(active.message, evidence),
                    confirmed=True,
                )
            )
        return out

    def _evidence(self, device: Device) -> list[str]:
        return [r.value for r in EVIDENCE if self.alerts.active(device.device_id, r) is not None]


def _confirmed(message: str, evidence: list[str]) -> str:
    return f"{message} (confirmed by {', '.join(evidence)})"
