"""What the agent decides on simulated equipment: false alarms and time to detect (pure).

Every sample of a :class:`~edge_agent.equipment.Trace` goes through the
agent's own :class:`~edge_agent.judge.SampleJudge` (detector verdict, alert
transitions, local alarm), in order, as on a Pi. A *temperature alarm* is a
raised transition of kind ``anomaly`` or ``threshold`` (the buzzer); a
*sensor alarm* one of kind ``sensor_fault``. On normal operation every
raise is false. For a fault, the time to detect is from when the agent can
first see it (:attr:`~edge_agent.equipment.FaultLabel.observable_s`) to the
first raise of its class; a sensor fault must never raise a temperature
alarm (until :data:`SETTLE_S` after it ends).

A stretch with no reading (a power cut that also stopped the agent) is a
restart: the tracker starts empty and the detector continues from its saved
state, as :meth:`edge_agent.pipeline.ReadingPipeline.restore_detector` does.
"""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from benchmarks.detection.configs import edge_config_for, with_detector
from edge_agent.alerts import Transition
from edge_agent.config import EdgeConfig
from edge_agent.detect import Detector, Param
from edge_agent.equipment import Fault, Trace, compatible_faults, generate
from edge_agent.judge import SampleJudge
from edge_agent.sensors import Sample
from telemetry_contract import AlertState, EdgeAlertKind

__all__ = [
    "FaultRun",
    "Judge",
    "NormalRun",
    "fault_start_s",
    "run_device_week",
    "run_faults",
    "run_normal",
]

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
#: Faults start after this much normal operation, plus up to a day (per seed).
FAULT_AFTER_S = 2 * DAY_S
#: A fault trace goes on this long after the fault ends (recovery).
TAIL_S = 2 * 3600.0
#: After a sensor fault ends, a temperature alarm is still blamed on it this long.
SETTLE_S = 600.0
#: A false alarm this soon after a normal event's start is put down to it (air recovers).
CAUSE_WINDOW_S = {"defrost": 5400.0, "door_open": 900.0}
TEMPERATURE_KINDS = frozenset({EdgeAlertKind.ANOMALY, EdgeAlertKind.THRESHOLD})


class Judge(Protocol):
    """What the harness needs of a judge (:class:`~edge_agent.judge.SampleJudge`)."""

    def judge(self, s: Sample) -> tuple[Any, list[Transition]]: ...

    @property
    def alarm_active(self) -> bool: ...


JudgeFactory = Callable[[EdgeConfig], Judge]


def restart(old: Judge, config: EdgeConfig, factory: JudgeFactory) -> Judge:
    """The judge of an agent that restarts: fresh alerts, the detector's saved state."""
    new = factory(config)
    det = getattr(old, "detector", None)
    if isinstance(det, Detector) and isinstance(new, SampleJudge):
        spec = config.detector
        new.detector = Detector.loads(det.dumps(), spec.name, spec.params, spec.profile)
    return new


def state_bytes(judge: Judge) -> int:
    """Pickled size of what the agent keeps per device (the detector's state file)."""
    det = getattr(judge, "detector", None)
    if isinstance(det, Detector):
        return len(det.dumps())
    return len(pickle.dumps(judge))


@dataclass
class NormalRun:
    """Alarms raised on one normal trace (every one of them false)."""

    profile: str
    seed: int
    samples: int = 0
    hours: float = 0.0
    temperature_alarms: int = 0
    sensor_alarms: int = 0
    temperature_alarms_24h: int = 0
    sensor_alarms_24h: int = 0
    cpu_s: float = 0.0
    state_bytes: int = 0
    #: Seconds after install of each temperature alarm (to see where they cluster).
    alarm_times_s: list[float] = field(default_factory=list)
    #: Temperature alarms by what was going on: ``defrost`` (during one or while the air
    #: recovers), ``door_open``, ``first_24h`` (none of those, first day), ``other``.
    causes: dict[str, int] = field(default_factory=dict)


def alarm_cause(trace: Trace, t_s: float) -> str:
    """What was going on at ``t_s``: the normal event it follows, the first day, or other.

    >>> from edge_agent.equipment import Event
    >>> tr = Trace("fridge", 1, 0, 1.0, [], [], (Event("door_open", 90000.0, 90030.0),), ())
    >>> alarm_cause(tr, 90100.0), alarm_cause(tr, 100.0), alarm_cause(tr, 99999.0)
    ('door_open', 'first_24h', 'other')
    """
    for kind in ("defrost", "door_open"):
        window = CAUSE_WINDOW_S[kind]
        if any(e.kind == kind and e.start_s <= t_s < e.end_s + window for e in trace.events):
            return kind
    return "first_24h" if t_s < DAY_S else "other"


@dataclass
class FaultRun:
    """What the agent did about one injected fault."""

    profile: str
    seed: int
    kind: str
    klass: str
    observable_s: float
    ttd_s: float | None = None
    temperature_alarms: int = 0
    sensor_alarms: int = 0
    #: The local alarm was already on when the fault started (a raise is still needed).
    alarm_on_at_start: bool = False

    @property
    def detected(self) -> bool:
        return self.ttd_s is not None

    @property
    def sensor_as_temperature(self) -> bool:
        """A sensor fault that the agent reported as a temperature alarm."""
        return self.klass == "sensor" and self.temperature_alarms > 0


def _raises(transitions: list[Transition]) -> tuple[int, int]:
    """(temperature raises, sensor raises) among ``transitions``."""
    temp = sens = 0
    for tr in transitions:
        if tr.state is AlertState.RAISED:
            if tr.kind in TEMPERATURE_KINDS:
                temp += 1
            elif tr.kind is EdgeAlertKind.SENSOR_FAULT:
                sens += 1
    return temp, sens


@dataclass
class Device:
    """One device's agent as the harness runs it: its judge, replaced when it restarts."""

    judge: Judge
    config: EdgeConfig
    factory: JudgeFactory = SampleJudge

    def feed(self, trace: Trace, start: int = 0) -> Iterator[tuple[int, list[Transition] | None]]:
        """``(i, transitions)`` of every sample from ``start`` on; None when there was no reading.

        The first reading after a stretch without any is an agent restart.
        """
        down = False
        for i, sample in trace.samples(start=start):
            if sample is None:
                down = True
                yield i, None
                continue
            if down:
                self.judge, down = restart(self.judge, self.config, self.factory), False
            yield i, self.judge.judge(sample)[1]


def run_normal(
    trace: Trace,
    judge: Judge,
    config: EdgeConfig,
    factory: JudgeFactory = SampleJudge,
    *,
    snapshot_at: int | None = None,
) -> tuple[NormalRun, Judge, bytes | None]:
    """Count the alarms ``judge`` raises over ``trace``; also the judge pickled at ``snapshot_at``.

    Returns the run, the judge at the end (a restart replaces it) and the
    snapshot: the judge before sample ``snapshot_at`` (None when not asked for).
    """
    run = NormalRun(trace.profile, trace.seed, hours=len(trace) * trace.interval_s / 3600.0)
    first_day = trace.index_at(DAY_S)
    dev = Device(judge, config, factory)
    snap = pickle.dumps(judge) if snapshot_at == 0 else None
    pickling = 0.0
    start = time.process_time()
    for i, transitions in dev.feed(trace):
        if i + 1 == snapshot_at:
            t0 = time.process_time()
            snap = pickle.dumps(dev.judge)
            pickling = time.process_time() - t0
        if transitions is None:
            continue
        run.samples += 1
        if transitions:
            temp, sens = _raises(transitions)
            run.temperature_alarms += temp
            run.sensor_alarms += sens
            if i < first_day:
                run.temperature_alarms_24h += temp
                run.sensor_alarms_24h += sens
            if temp:
                t = i * trace.interval_s
                run.alarm_times_s.append(t)
                cause = alarm_cause(trace, t)
                run.causes[cause] = run.causes.get(cause, 0) + temp
    run.cpu_s = time.process_time() - start - pickling
    run.state_bytes = state_bytes(dev.judge)
    return run, dev.judge, snap


def run_faults(
    trace: Trace,
    judge: Judge,
    config: EdgeConfig,
    factory: JudgeFactory = SampleJudge,
    *,
    start: int = 0,
) -> list[FaultRun]:
    """Feed ``trace`` from sample ``start`` on; what the judge did about each labelled fault."""
    on = judge.alarm_active
    runs = [
        FaultRun(trace.profile, trace.seed, f.kind, f.klass, f.observable_s, alarm_on_at_start=on)
        for f in trace.faults
    ]
    for i, transitions in Device(judge, config, factory).feed(trace, start):
        if not transitions:
            continue
        temp, sens = _raises(transitions)
        t = i * trace.interval_s
        for run, label in zip(runs, trace.faults, strict=True):
            if not label.start_s <= t < label.end_s + SETTLE_S:
                continue
            run.temperature_alarms += temp
            run.sensor_alarms += sens
            right = temp if label.klass == "temperature" else sens
            if right and run.ttd_s is None and t >= label.observable_s:
                run.ttd_s = t - label.observable_s
    return runs


def fault_start_s(seed: int) -> float:
    """When the faults of ``seed`` start: after two days, at a seed-drawn time of day.

    >>> 2 * 86400 <= fault_start_s(5) < 3 * 86400
    True
    """
    return FAULT_AFTER_S + random.Random(f"fault-start/{seed}").uniform(0.0, DAY_S)


@dataclass(frozen=True, slots=True)
class WeekJob:
    """One device-week of ``profile`` (seed ``seed``) and the faults to inject into it."""

    profile: str
    seed: int
    interval_s: float
    faults: tuple[str, ...] = ()
    duration_s: float = WEEK_S
    #: Another detector than the profile's default, and its parameters ("": the default).
    detector: str = ""
    params: tuple[tuple[str, Param], ...] = ()


def run_device_week(
    job: WeekJob,
    config_for: Callable[[str], EdgeConfig] = edge_config_for,
    factory: JudgeFactory = SampleJudge,
) -> tuple[NormalRun, list[FaultRun]]:
    """One device-week from install (false alarms), then each fault injected into it.

    The judge is pickled at the fault start during the normal run, so each
    fault run continues from exactly the state the normal week had then.
    """
    base = config_for(job.profile)
    if job.detector:
        base = with_detector(base, job.detector, dict(job.params))
    # The device samples at the trace's interval (settings counted in readings scale with it).
    config = msgspec.structs.replace(
        base, sampling=msgspec.structs.replace(base.sampling, interval_s=job.interval_s)
    )
    stuck_after = config.sensors.stuck_after
    trace = generate(
        job.profile,
        job.seed,
        duration_s=job.duration_s,
        interval_s=job.interval_s,
        stuck_after=stuck_after,
    )
    t0 = fault_start_s(job.seed)
    at = trace.index_at(t0) if job.faults else None
    normal, _, snap = run_normal(trace, factory(config), config, factory, snapshot_at=at)
    faults: list[FaultRun] = []
    for kind in job.faults:
        fault = Fault(kind, start_s=t0)
        ftrace = generate(
            job.profile,
            job.seed,
            duration_s=fault.end_s + TAIL_S,
            interval_s=job.interval_s,
            faults=[fault],
            stuck_after=stuck_after,
        )
        assert at is not None and snap is not None
        if ftrace.temps[:at] != trace.temps[:at]:
            raise AssertionError(f"{job.profile}/{job.seed}: fault {kind} changed the past")
        faults += run_faults(ftrace, pickle.loads(snap), config, factory, start=at)
    return normal, faults


def week_jobs(
    profiles: Sequence[str],
    weeks: int,
    seed: int,
    interval_s: float,
    faults: bool | Sequence[str] = True,
    detector: str = "",
    params: Sequence[tuple[str, Param]] = (),
) -> list[WeekJob]:
    """``weeks`` device-weeks per profile (seeds ``seed``, ``seed + 1``, ...), with its faults.

    ``faults``: every compatible one (True), none (False), or those of these kinds that apply.

    >>> [j.faults for j in week_jobs(["server_room"], 1, 1, 10.0, ["stuck", "door_left_open"])]
    [('stuck',)]
    """

    def kinds(p: str) -> tuple[str, ...]:
        ok = compatible_faults(p)
        if isinstance(faults, bool):
            return tuple(ok) if faults else ()
        return tuple(k for k in ok if k in faults)

    return [
        WeekJob(p, seed + w, interval_s, kinds(p), detector=detector, params=tuple(params))
        for p in profiles
        for w in range(weeks)
    ]
