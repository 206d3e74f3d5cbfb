"""Local anomaly detection: one online river model per sensor (pure, no I/O).

The agent feeds every ``ok`` reading of a sensor to that sensor's
:class:`SensorMonitor`, which

* learns without judging for the first ``warmup`` readings (no verdict yet),
* then scores each reading *before* learning from it, flags it when the
  score reaches ``threshold``, and
* does **not** learn from a flagged reading: otherwise a fire or an open
  freezer door would teach the model that the fault is normal, and the alarm
  would switch itself off while the fault goes on. A model of sequences
  (``context``) may also define ``hold()``: the monitor calls it for a
  flagged reading, and the model keeps that reading aside, unlearned, until
  the alarm has cleared (it still knows the reading happened, so the
  sequence it tracks has no hole); while readings keep being flagged
  nothing of them is learned.

Readings whose quality is not ``ok`` (CRC error, 85 °C reset, unplugged) must
never reach a monitor: they are not temperatures. :class:`AlertTracker` turns
verdicts and thresholds into raised/cleared alert transitions.

Detectors are swappable by name (:data:`DETECTORS`) and measurable
(:func:`evaluate` against labelled series, e.g. the simulator's ground truth).

>>> mon = SensorMonitor("zscore", {"warmup": 20, "threshold": 6.0})
>>> [mon.observe(4.0 + 0.05 * (i % 3)).warm for i in range(20)][-1]
False
>>> mon.observe(4.05).is_anomaly
False
>>> v = mon.observe(30.0)
>>> v.is_anomaly, v.score > 6.0
(True, True)
>>> mon.seen   # the flagged 30.0 was not learned
21
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from edge_agent import detect_nab
from telemetry_contract import AlertState, EdgeAlertKind, Quality, Severity

__all__ = [
    "DETECTORS",
    "AlertTracker",
    "Detector",
    "DetectorSpecError",
    "Metrics",
    "Model",
    "SensorMonitor",
    "Transition",
    "Verdict",
    "check_detector",
    "evaluate",
]

Param = float | int | bool | str


class DetectorSpecError(ValueError):
    """A detector name or parameter is not acceptable; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"detector.{key}: {problem}")


class Model(Protocol):
    """A univariate online model: score a value, then (maybe) learn it."""

    def score(self, x: float) -> float: ...

    def learn(self, x: float) -> None: ...


class ZScoreModel:
    """Distance from an exponentially weighted mean, in exponentially weighted std units.

    Built on river's ``stats.EWMean``/``stats.EWVar``. ``min_std`` is a noise
    floor: a probe in a very stable room (12-bit steps of 0.0625 °C) would
    otherwise score one step as a huge deviation.
    """

    def __init__(self, alpha: float, min_std: float) -> None:
        from river import stats

        self._mean = stats.EWMean(fading_factor=alpha)
        self._var = stats.EWVar(fading_factor=alpha)
        self._min_var = min_std * min_std

    def score(self, x: float) -> float:
        mean = self._mean.get()
        var = max(self._var.get(), self._min_var)
        return abs(x - mean) / math.sqrt(var)

    def learn(self, x: float) -> None:
        self._mean.update(x)
        self._var.update(x)


class HSTModel:
    """river's HalfSpaceTrees on (temperature, change since last reading).

    Half-space trees want features in known bounds; ``min_c``/``max_c`` and
    ``max_delta_c`` give them (values are clamped into the bounds).
    """

    def __init__(
        self,
        n_trees: int,
        height: int,
        window_size: int,
        min_c: float,
        max_c: float,
        max_delta_c: float,
        seed: int,
    ) -> None:
        from river import anomaly

        self._lo, self._hi, self._dmax = min_c, max_c, max_delta_c
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            limits={"t": (min_c, max_c), "d": (-max_delta_c, max_delta_c)},
            seed=seed,
        )
        self._prev: float | None = None

    def _features(self, x: float) -> dict[str, float]:
        d = 0.0 if self._prev is None else x - self._prev
        return {
            "t": min(max(x, self._lo), self._hi),
            "d": min(max(d, -self._dmax), self._dmax),
        }

    def score(self, x: float) -> float:
        return float(self._model.score_one(self._features(x)))  # type: ignore[no-untyped-call]

    def learn(self, x: float) -> None:
        self._model.learn_one(self._features(x))  # type: ignore[no-untyped-call]
        self._prev = x


#: name -> default parameters (``threshold`` and ``warmup`` are common to all).
DETECTORS: Final[dict[str, dict[str, Param]]] = {
    "zscore": {"threshold": 6.0, "warmup": 30, "alpha": 0.01, "min_std": 0.1},
    # Pattern-onset detector scored on NAB (docs/benchmarks.md); its default
    # threshold is the one the NAB sweep chose, run through this monitor.
    "context": dict(detect_nab.NAB_DEFAULTS),
    "hst": {
        "threshold": 0.9,
        "warmup": 200,
        "n_trees": 10,
        "height": 8,
        "window_size": 100,
        "min_c": -40.0,
        "max_c": 80.0,
        "max_delta_c": 5.0,
        "seed": 42,
    },
}


def check_detector(name: str, params: Mapping[str, Param]) -> dict[str, Param]:
    """Merged, type-checked parameters for detector ``name``.

    >>> check_detector("zscore", {"threshold": 4})["threshold"]
    4.0
    >>> check_detector("zscore", {"thresold": 4})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_agent.detect.DetectorSpecError: detector.params.thresold: unknown parameter (known: ...)
    """
    if name not in DETECTORS:
        known = ", ".join(sorted(DETECTORS))
        raise DetectorSpecError("name", f"unknown detector {name!r} (known: {known})")
    defaults = DETECTORS[name]
    merged: dict[str, Param] = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise DetectorSpecError(f"params.{key}", f"unknown parameter (known: {known})")
        want = type(defaults[key])
        if want is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
            if not math.isfinite(value):
                raise DetectorSpecError(f"params.{key}", f"must be finite, got {value}")
        elif not isinstance(value, want) or isinstance(value, bool) != (want is bool):
            raise DetectorSpecError(
                f"params.{key}", f"must be {want.__name__}, got {type(value).__name__} {value!r}"
            )
        merged[key] = value
    if float(merged["threshold"]) <= 0:
        raise DetectorSpecError("params.threshold", f"must be > 0, got {merged['threshold']}")
    if int(merged["warmup"]) < 1:
        raise DetectorSpecError("params.warmup", f"must be >= 1, got {merged['warmup']}")
    return merged


def _build(name: str, p: Mapping[str, Param]) -> Model:
    if name == "context":
        return detect_nab.build_model(detect_nab.check_params(p))
    if name == "zscore":
        return ZScoreModel(float(p["alpha"]), float(p["min_std"]))
    return HSTModel(
        int(p["n_trees"]),
        int(p["height"]),
        int(p["window_size"]),
        float(p["min_c"]),
        float(p["max_c"]),
        float(p["max_delta_c"]),
        int(p["seed"]),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A monitor's opinion of one reading; ``score`` is None during warm-up."""

    score: float | None
    is_anomaly: bool
    warm: bool


class SensorMonitor:
    """One sensor's online model with warm-up, threshold and no-learn-on-flag.

    >>> mon = SensorMonitor("context", {"warmup": 50})
    >>> for i in range(400):
    ...     _ = mon.observe(4.0 + 0.1 * (i % 5))
    >>> seen = mon.seen
    >>> mon.observe(25.0).is_anomaly, mon.seen == seen   # the jump is flagged, not learned
    (True, True)
    """

    def __init__(self, name: str, params: Mapping[str, Param] | None = None) -> None:
        self.name = name
        self.params = check_detector(name, params or {})
        self._threshold = float(self.params["threshold"])
        self._warmup = int(self.params["warmup"])
        self._model = _build(name, self.params)
        self.seen = 0  # readings learned

    def observe(self, temp_c: float) -> Verdict:
        """Judge an ``ok`` temperature, then learn it unless it was flagged."""
        if self.seen < self._warmup:
            self._model.learn(temp_c)
            self.seen += 1
            return Verdict(None, False, False)
        score = self._model.score(temp_c)
        if not math.isfinite(score) or score < 0:
            score = 0.0
        flagged = score >= self._threshold
        if not flagged:
            self._model.learn(temp_c)
            self.seen += 1
        else:
            hold = getattr(self._model, "hold", None)
            if hold is not None:  # a sequence model: keeps it aside, unlearned
                hold()
        return Verdict(score, flagged, True)


class Detector:
    """A :class:`SensorMonitor` per sensor, created on first sight; picklable state."""

    def __init__(self, name: str, params: Mapping[str, Param] | None = None) -> None:
        self.name = name
        self.params = check_detector(name, params or {})
        self.monitors: dict[str, SensorMonitor] = {}

    def observe(self, sensor_id: str, temp_c: float) -> Verdict:
        mon = self.monitors.get(sensor_id)
        if mon is None:
            mon = self.monitors[sensor_id] = SensorMonitor(self.name, self.params)
        return mon.observe(temp_c)

    def dumps(self) -> bytes:
        """The whole state (models included) as bytes, for an atomic save."""
        return pickle.dumps({"name": self.name, "params": self.params, "monitors": self.monitors})

    @classmethod
    def loads(cls, data: bytes, name: str, params: Mapping[str, Param]) -> Detector:
        """Restore saved state if it was made by the same detector and parameters.

        Otherwise (config changed while the agent was down) start fresh.
        The state file is written by this agent into its own StateDirectory.
        """
        det = cls(name, params)
        state: dict[str, Any] = pickle.loads(data)  # noqa: S301 - our own state file
        if state.get("name") == det.name and state.get("params") == det.params:
            det.monitors = dict(state["monitors"])
        return det


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
    sensors: dict[str, _SensorAlerts] = field(default_factory=dict)

    @property
    def alarm_active(self) -> bool:
        """Whether the local alarm (LED, buzzer, relay) should be on."""
        return any(s.anomaly or s.threshold for s in self.sensors.values())

    @property
    def fault_active(self) -> bool:
        return any(s.fault for s in self.sensors.values())

    def update(
        self,
        sensor_id: str,
        quality: Quality,
        temp_c: float | None,
        is_anomaly: bool,
        *,
        high_c: float | None,
        low_c: float | None,
    ) -> list[Transition]:
        s = self.sensors.setdefault(sensor_id, _SensorAlerts())
        out: list[Transition] = []
        ok = quality is Quality.OK and temp_c is not None
        if not ok and not s.fault:
            s.fault = True
            out.append(
                Transition(
                    sensor_id,
                    EdgeAlertKind.SENSOR_FAULT,
                    AlertState.RAISED,
                    Severity.WARNING,
                    f"sensor reports {quality.value}",
                )
            )
        elif ok and s.fault:
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
        if not ok or temp_c is None:
            return out  # a non-temperature neither raises nor clears anything else
        if is_anomaly:
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


@dataclass(frozen=True, slots=True)
class Metrics:
    """Point-wise detection quality and cost on a labelled series."""

    n: int
    tp: int
    fp: int
    fn: int
    cpu_us_per_point: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def evaluate(
    name: str, params: Mapping[str, Param], series: Iterable[tuple[float, bool]]
) -> Metrics:
    """Score one sensor's ``(temp_c, is_incident)`` series; warm-up points count as negatives.

    >>> data = [(4.0 + 0.01 * (i % 5), False) for i in range(100)] + [(25.0, True)]
    >>> m = evaluate("zscore", {"warmup": 50}, data)
    >>> m.tp, m.fp, m.fn
    (1, 0, 0)
    """
    mon = SensorMonitor(name, params)
    n = tp = fp = fn = 0
    start = time.process_time()
    for temp, label in series:
        flagged = mon.observe(temp).is_anomaly
        n += 1
        tp += flagged and label
        fp += flagged and not label
        fn += label and not flagged
    cpu = time.process_time() - start
    return Metrics(n, tp, fp, fn, cpu * 1e6 / n if n else 0.0)
