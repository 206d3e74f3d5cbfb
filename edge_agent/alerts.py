"""Alert transitions from per-reading facts, and the local alarm state (pure, no I/O).

:class:`AlertTracker` turns each reading's quality, the detector's verdict
and the high/low thresholds into raised/cleared :class:`Transition` values
(each becomes an ``EdgeAlert``), and says whether the local alarm (LED,
buzzer, relay) and the fault light should be on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from telemetry_contract import AlertState, EdgeAlertKind, Quality, Severity

__all__ = ["AlertTracker", "Transition"]


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert starting or ending (becomes an ``EdgeAlert``)."""

    sensor_id: str
    kind: EdgeAlertKind
    state: AlertState
    severity: Severity
    message: str


@dataclass
class _SensorAlerts:
    anomaly: bool = False
    normal_run: int = 0
    threshold: str = ""  # "", "high" or "low"
    fault: bool = False
    #: The limit exceeded now ("", "high", "low") and since when (ms): the alarm delay.
    exceeding: str = ""
    exceeding_since_ms: int = 0
    #: Consecutive readings that were no temperature, and the time of the first one.
    bad_run: int = 0
    bad_since_ms: int = 0
    #: When the last bad readings came, and the last readings of any kind (ms).
    bad_ms: deque[int] = field(default_factory=deque)
    read_ms: deque[int] = field(default_factory=deque)
    #: The fault was raised by bad readings among good ones (a loose contact).
    flaky: bool = False


@dataclass
class AlertTracker:
    """Raised/cleared transitions from per-reading facts; the local alarm state.

    >>> t = AlertTracker(clear_after=2)
    >>> [x.state.value for x in t.update("p", Quality.OK, 9.0, True, high_c=None, low_c=None)]
    ['raised']
    >>> t.alarm_active
    True
    >>> t.update("p", Quality.OK, 4.0, False, high_c=None, low_c=None)
    []
    >>> [x.state.value for x in t.update("p", Quality.OK, 4.0, False, high_c=None, low_c=None)]
    ['cleared']
    >>> t.alarm_active
    False
    """

    clear_after: int = 5
    #: A sensor fault is reported after this many consecutive bad readings, or after
    #: two spanning ``fault_after_s``, or after this many among good ones within
    #: ``2 × fault_after_s`` (or the last ``2 × fault_after`` readings, if longer): one
    #: failed read (a CRC error that survived the retries) is not a fault, a probe
    #: that stays bad is reported within a minute, a loose contact soon after.
    fault_after: int = 3
    fault_after_s: float = 30.0
    sensors: dict[str, _SensorAlerts] = field(default_factory=dict)

    @property
    def alarm_active(self) -> bool:
        """Whether the local alarm (LED, buzzer, relay) should be on."""
        return any(s.anomaly or s.threshold for s in self.sensors.values())

    @property
    def fault_active(self) -> bool:
        """Whether some sensor reports a fault (the status light blinks fast)."""
        return any(s.fault for s in self.sensors.values())

    def _flaky(self, s: _SensorAlerts, ts_ms: int, bad: bool) -> bool:
        """Whether ``fault_after`` bad readings fall in the window that ends at ``ts_ms``."""
        n = self.fault_after
        if s.bad_ms.maxlen != n:  # a new setting: the windows start again
            s.bad_ms, s.read_ms = deque(maxlen=n), deque(maxlen=2 * n)
        s.read_ms.append(ts_ms)
        if bad:
            s.bad_ms.append(ts_ms)
        start = min(ts_ms - 2 * self.fault_after_s * 1000, s.read_ms[0])
        return len(s.bad_ms) == n and s.bad_ms[0] >= start

    def update(
        self,
        sensor_id: str,
        quality: Quality,
        temp_c: float | None,
        is_anomaly: bool,
        *,
        high_c: float | None,
        low_c: float | None,
        ts_ms: int = 0,
        delay_s: float = 0.0,
        fault: str = "",
    ) -> list[Transition]:
        """The transitions one reading causes (none, most of the time).

        A limit raises its alert once exceeded for ``delay_s`` (from ``ts_ms``);
        ``fault`` is a sensor fault the detector saw in an ``ok`` reading (the
        reading is then no temperature either).
        """
        s = self.sensors.setdefault(sensor_id, _SensorAlerts())
        out: list[Transition] = []
        ok = quality is Quality.OK and temp_c is not None and not fault
        if not ok:
            if s.bad_run == 0:
                s.bad_since_ms = ts_ms
            s.bad_run += 1
        else:
            s.bad_run = 0
        flaky = self._flaky(s, ts_ms, not ok)
        in_a_row = s.bad_run >= self.fault_after or (
            s.bad_run >= 2 and ts_ms - s.bad_since_ms >= self.fault_after_s * 1000
        )
        if not ok and not s.fault and (fault or in_a_row or flaky):
            s.fault = True
            s.flaky = not (fault or in_a_row)
            out.append(
                Transition(
                    sensor_id,
                    EdgeAlertKind.SENSOR_FAULT,
                    AlertState.RAISED,
                    Severity.WARNING,
                    f"sensor reports {fault or quality.value}",
                )
            )
        elif ok and s.fault and not (s.flaky and flaky):
            s.fault = False
            out.append(
                Transition(
                    sensor_id,
                    EdgeAlertKind.SENSOR_FAULT,
                    AlertState.CLEARED,
                    Severity.INFO,
                    "sensor reads ok again",
                )
            )
        if quality is not Quality.OK or temp_c is None:
            return out  # a non-temperature neither raises nor clears anything else
        # A fault the detector saw (a step too fast for air) leaves a real value: the
        # hard limits still judge it, only the anomaly verdict is set aside.
        if fault:
            pass
        elif is_anomaly:
            s.normal_run = 0
            if not s.anomaly:
                s.anomaly = True
                out.append(
                    Transition(
                        sensor_id,
                        EdgeAlertKind.ANOMALY,
                        AlertState.RAISED,
                        Severity.WARNING,
                        f"anomalous temperature {temp_c:.3f} °C",
                    )
                )
        elif s.anomaly:
            s.normal_run += 1
            if s.normal_run >= self.clear_after:
                s.anomaly = False
                s.normal_run = 0
                out.append(
                    Transition(
                        sensor_id,
                        EdgeAlertKind.ANOMALY,
                        AlertState.CLEARED,
                        Severity.INFO,
                        f"back to normal after {self.clear_after} readings",
                    )
                )
        level = ""
        if high_c is not None and temp_c > high_c:
            level = "high"
        elif low_c is not None and temp_c < low_c:
            level = "low"
        if level != s.exceeding:
            s.exceeding, s.exceeding_since_ms = level, ts_ms
        if level and level != s.threshold and ts_ms - s.exceeding_since_ms < delay_s * 1000:
            level = ""  # not exceeded long enough yet
        if level != s.threshold:
            if s.threshold:
                out.append(
                    Transition(
                        sensor_id,
                        EdgeAlertKind.THRESHOLD,
                        AlertState.CLEARED,
                        Severity.INFO,
                        f"{temp_c:.3f} °C is back within limits",
                    )
                )
            if level:
                limit = high_c if level == "high" else low_c
                out.append(
                    Transition(
                        sensor_id,
                        EdgeAlertKind.THRESHOLD,
                        AlertState.RAISED,
                        Severity.CRITICAL,
                        f"{temp_c:.3f} °C is {'above' if level == 'high' else 'below'} {limit} °C",
                    )
                )
            s.threshold = level
        return out
