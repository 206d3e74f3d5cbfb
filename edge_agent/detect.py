"""Local anomaly detection: one online model per sensor (pure, no I/O).

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
never reach a monitor: they are not temperatures. The models themselves live
in :mod:`edge_agent.detectors`; turning verdicts into alerts is
:mod:`edge_agent.alerts`.

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

import io
import math
import pickle
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from edge_agent.detectors import context, thermal, zscore
from edge_agent.detectors.base import DetectorSpecError, Model, Param
from edge_agent.profiles import PROFILES, Profile

__all__ = [
    "DETECTORS",
    "REMOVED",
    "Detector",
    "DetectorSpecError",
    "Metrics",
    "Model",
    "Param",
    "SensorMonitor",
    "Verdict",
    "check_detector",
    "evaluate",
]

#: name -> default parameters (``threshold`` and ``warmup`` are common to all).
#: ``thermal`` (the default) is built for equipment temperatures and judges by time;
#: ``context`` scores best on NAB (docs/benchmarks.md), for generic streams; its
#: default threshold is the one the NAB sweep chose, run through this monitor.
DETECTORS: Final[dict[str, dict[str, Param]]] = {
    "thermal": dict(thermal.DEFAULTS),
    "zscore": dict(zscore.DEFAULTS),
    "context": dict(context.DEFAULTS),
}

#: Detectors that were removed, and why: a config naming one is refused with this reason.
REMOVED: Final[dict[str, str]] = {
    "hst": (
        "was removed: on temperatures it never reached its threshold and its fixed "
        "-40..80 °C feature bounds clipped hotter channels; use thermal (equipment) or "
        "context (generic streams), see docs/upgrade-notes.md"
    ),
}

#: name -> {parameter of an earlier version: why it is refused} (the error names the key).
_REMOVED_PARAMS: Final[dict[str, Mapping[str, str]]] = {"zscore": zscore.REMOVED_PARAMS}

#: name -> range checks of merged, type-checked parameters (raise DetectorSpecError).
_CHECKS: Final[dict[str, Callable[[Mapping[str, Param]], object]]] = {
    "thermal": thermal.check,
    "zscore": zscore.check,
    "context": context.check_params,
}

#: Bounds of the parameters every detector has: ``threshold`` (scores are finite,
#: a higher one never flags) and ``warmup`` (a count of readings, no memory).
MAX_THRESHOLD: Final = 1e6
MAX_WARMUP: Final = 1_000_000

#: name -> the model for checked parameters and the equipment profile.
_Builder = Callable[[Mapping[str, Param], Profile], Model | thermal.ThermalModel]
_BUILDERS: Final[dict[str, _Builder]] = {
    "thermal": thermal.build,
    "zscore": lambda p, _: zscore.build(p),
    "context": lambda p, _: context.build_model(context.check_params(p)),
}

#: The parameters of ``thermal`` that only set margins: changing them keeps what was learned.
_RETUNABLE: Final = frozenset({"target_false_alarms_per_week", "threshold"})

#: Where the model classes of state files saved by earlier versions live now, so
#: that an upgrade keeps the learned models instead of starting a new warm-up.
_MOVED: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("edge_agent.detect", "ZScoreModel"): ("edge_agent.detectors.zscore", "ZScoreModel"),
    ("edge_agent.detect_nab", "ContextModel"): ("edge_agent.detectors.context", "ContextModel"),
}


def check_detector(name: str, params: Mapping[str, Param]) -> dict[str, Param]:
    """Merged, type-checked parameters for detector ``name``.

    >>> check_detector("zscore", {"threshold": 4})["threshold"]
    4.0
    >>> check_detector("zscore", {"thresold": 4})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.thresold: unknown parameter ...
    """
    if name in REMOVED:
        raise DetectorSpecError("name", f"{name!r} {REMOVED[name]}")
    if name not in DETECTORS:
        known = ", ".join(sorted(DETECTORS))
        raise DetectorSpecError("name", f"unknown detector {name!r} (known: {known})")
    defaults = DETECTORS[name]
    merged: dict[str, Param] = dict(defaults)
    for key, value in params.items():
        if key in _REMOVED_PARAMS.get(name, {}):
            raise DetectorSpecError(f"params.{key}", _REMOVED_PARAMS[name][key])
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
    if not 0 < float(merged["threshold"]) <= MAX_THRESHOLD:
        raise DetectorSpecError(
            "params.threshold", f"must be > 0 and <= {MAX_THRESHOLD:g}, got {merged['threshold']}"
        )
    if not 1 <= int(merged["warmup"]) <= MAX_WARMUP:
        raise DetectorSpecError(
            "params.warmup", f"must be in 1..{MAX_WARMUP}, got {merged['warmup']}"
        )
    # Every range is checked here, before any model exists: a config is rejected
    # whole, never accepted and then failing when the first reading builds a model.
    _CHECKS[name](merged)
    return merged


@dataclass(frozen=True, slots=True)
class Verdict:
    """A monitor's opinion of one reading; ``score`` is None during warm-up (learning).

    ``fault`` names a sensor fault the model saw in an ``ok`` reading (a probe
    pulled into room air: ``implausible_step``): the reading is then no
    temperature. ``recognised`` says the reading is part of a learned
    recurring excursion (a defrost): the hard limits wait longer.
    """

    score: float | None
    is_anomaly: bool
    warm: bool
    fault: str = ""
    recognised: bool = False


class SensorMonitor:
    """One sensor's online model with warm-up, threshold and no-learn-on-flag.

    >>> mon = SensorMonitor("context", {"warmup": 50})
    >>> for i in range(400):
    ...     _ = mon.observe(4.0 + 0.1 * (i % 5))
    >>> seen = mon.seen
    >>> mon.observe(25.0).is_anomaly, mon.seen == seen   # the jump is flagged, not learned
    (True, True)

    A model that judges by time (``thermal``) gets each reading's ``ts_ms``
    and decides itself: learning period, verdict, what it learns.
    """

    def __init__(
        self, name: str, params: Mapping[str, Param] | None = None, profile: str = "generic"
    ) -> None:
        self.name = name
        self.params = check_detector(name, params or {})
        self.profile = profile
        self._threshold = float(self.params["threshold"])
        self._warmup = int(self.params["warmup"])
        self._model = _BUILDERS[name](self.params, _profile(profile))
        self.seen = 0  # readings learned

    def retune(self, params: Mapping[str, Param]) -> None:
        """New margins for a model that keeps what it learned (``thermal``)."""
        self.params = check_detector(self.name, params)
        model = self._model
        if isinstance(model, thermal.ThermalModel):
            model.threshold = float(self.params["threshold"])
            model.retune(float(self.params["target_false_alarms_per_week"]))

    def missed(self, ts_ms: int) -> None:
        """A reading at ``ts_ms`` was no temperature (a model that judges by time notes it)."""
        if isinstance(self._model, thermal.ThermalModel):
            self._model.missed(ts_ms)

    def observe(self, temp_c: float, ts_ms: int | None = None) -> Verdict:
        """Judge an ``ok`` temperature, then learn it unless it was flagged."""
        model = self._model
        if isinstance(model, thermal.ThermalModel):
            # Without a time (a bare series), readings are taken to be 1 s apart.
            score, flagged, fault, known = model.observe_at(
                self.seen * 1000 if ts_ms is None else ts_ms, temp_c
            )
            if not flagged and not fault:
                self.seen += 1
            return Verdict(score, flagged, score is not None, fault, known)
        at = getattr(model, "at", None)
        if at is not None:  # a model of a time window (zscore) gets the reading's time
            at(ts_ms)
        if self.seen < self._warmup:
            model.learn(temp_c)
            self.seen += 1
            return Verdict(None, False, False)
        score = model.score(temp_c)
        if not math.isfinite(score) or score < 0:
            score = 0.0
        flagged = score >= self._threshold
        if not flagged:
            model.learn(temp_c)
            self.seen += 1
        else:
            hold = getattr(model, "hold", None)
            if hold is not None:  # a sequence model: keeps it aside, unlearned
                hold()
        return Verdict(score, flagged, True)


def _profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise DetectorSpecError("profile", f"unknown profile {name!r} (known: {known})") from None


class Detector:
    """A :class:`SensorMonitor` per sensor, created on first sight; picklable state."""

    def __init__(
        self, name: str, params: Mapping[str, Param] | None = None, profile: str = "generic"
    ) -> None:
        self.name = name
        self.params = check_detector(name, params or {})
        self.profile = profile
        _profile(profile)
        self.monitors: dict[str, SensorMonitor] = {}
        #: Why :meth:`loads` started fresh instead of restoring ("" if it did not).
        self.discarded = ""
        #: A readable state discarded by :meth:`loads`: the retained remote config that
        #: arrives after the start may ask for the detector that saved it (:meth:`resume`).
        self.set_aside = b""

    def observe(self, sensor_id: str, temp_c: float, ts_ms: int | None = None) -> Verdict:
        mon = self.monitors.get(sensor_id)
        if mon is None:
            mon = self.monitors[sensor_id] = SensorMonitor(self.name, self.params, self.profile)
        return mon.observe(temp_c, ts_ms)

    def missed(self, sensor_id: str, ts_ms: int) -> None:
        """A reading of ``sensor_id`` at ``ts_ms`` was no temperature (a sensor fault)."""
        mon = self.monitors.get(sensor_id)
        if mon is not None:
            mon.missed(ts_ms)

    def retunes_to(self, name: str, params: Mapping[str, Param], profile: str) -> bool:
        """Whether a change to ``(name, params, profile)`` only moves margins (learning stays)."""
        if (name, profile) != (self.name, self.profile) or name != "thermal":
            return False
        new = check_detector(name, params)
        changed = {k for k in new if new[k] != self.params.get(k)}
        return changed <= _RETUNABLE

    def retune(self, params: Mapping[str, Param]) -> None:
        """New margins for every sensor, learned state kept (see :meth:`retunes_to`)."""
        self.params = check_detector(self.name, params)
        for mon in self.monitors.values():
            mon.retune(self.params)

    def state_bytes(self) -> int:
        """Size of the saved state (what ``detector.pickle`` holds)."""
        return len(self.dumps())

    def dumps(self) -> bytes:
        """The whole state (models included) as bytes, for an atomic save."""
        return pickle.dumps(
            {
                "name": self.name,
                "params": self.params,
                "profile": self.profile,
                "monitors": self.monitors,
            }
        )

    @classmethod
    def loads(
        cls, data: bytes, name: str, params: Mapping[str, Param], profile: str = "generic"
    ) -> Detector:
        """Restore saved state if it was made by the same detector, parameters and profile.

        Otherwise (config changed while the agent was down) start fresh, except
        when only ``thermal``'s margins changed: what it learned stays (the
        learning period is not started again). The state file is written by
        this agent into its own StateDirectory.
        """
        det = cls(name, params, profile)
        try:
            state: dict[str, Any] = _Unpickler(io.BytesIO(data)).load()
        except (ModuleNotFoundError, AttributeError):  # a removed detector's models (hst)
            det.discarded = "made by a removed detector"
            return det
        if (state.get("name"), state.get("profile", "generic")) != (det.name, det.profile):
            det.discarded = f"made by {state.get('name')}/{state.get('profile', 'generic')}"
            det.set_aside = data
            return det
        if state.get("params") == det.params:
            det.monitors = dict(state["monitors"])
        else:
            old = cls.__new__(cls)
            old.name, old.params, old.profile = det.name, dict(state.get("params", {})), profile
            if old.retunes_to(det.name, det.params, det.profile):
                det.monitors = dict(state["monitors"])
                det.retune(det.params)
            else:  # e.g. zscore's models before its time window (other parameters)
                det.discarded = "made with other parameters"
                det.set_aside = data
        return det

    def resume(self, name: str, params: Mapping[str, Param], profile: str) -> Detector | None:
        """The state set aside at the start, if made by ``(name, params, profile)`` (or with
        other margins only: see :meth:`loads`); else None. Offered once, at the first
        reconfiguration: later, what this detector learned since is the newer."""
        data, self.set_aside = self.set_aside, b""
        if data:
            det = Detector.loads(data, name, params, profile)
            if not det.discarded:
                return det
        return None


class _Unpickler(pickle.Unpickler):
    """Reads the agent's own state file (written into its StateDirectory), moved classes too."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _MOVED.get((module, name), (module, name))
        return super().find_class(module, name)


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
