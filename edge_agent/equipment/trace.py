"""A labelled trace of one probe: what the agent would see, sample by sample (pure).

:func:`generate` runs a profile's physics (:mod:`edge_agent.equipment.physics`)
and passes every raw reading through the agent's own quality judgement
(:func:`edge_agent.w1.judge` on the kernel's ``t=`` value, then
:class:`edge_agent.w1.StuckCheck`), exactly as
:class:`edge_agent.sensors.DS18B20` does after its retries. So a sensor
fault carries the quality a Pi would give it, never a label invented here.

>>> tr = generate("fridge", seed=1, duration_s=3600.0, interval_s=10.0)
>>> len(tr), tr.interval_s, tr.qualities[0]
(360, 10.0, <Quality.OK: 'ok'>)
>>> all(round(t * 1000) == int(round(t * 16) * 1000 / 16) for t in tr.temps)  # 1/16 °C steps
True
>>> tr2 = generate("fridge", seed=1, duration_s=3600.0, interval_s=10.0,
...                faults=[Fault("crc_error", start_s=600.0, duration_s=60.0)])
>>> [q.value for q in tr2.qualities[59:67]]
['ok', 'crc_error', 'crc_error', 'crc_error', 'crc_error', 'crc_error', 'crc_error', 'ok']
>>> tr2.faults[0].klass, tr2.temps[:60] == tr.temps[:60]
('sensor', True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from edge_agent.config import SensorsSettings
from edge_agent.equipment.faults import Fault, FaultClass
from edge_agent.equipment.physics import Event, install_time_ms, observable_s, readouts, schedule
from edge_agent.equipment.profiles import Profile, profile
from edge_agent.sensors import Sample
from edge_agent.w1 import POWER_ON_RESET_MILLIC, StuckCheck, ds18b20_millic, judge
from telemetry_contract import Quality

__all__ = ["FaultLabel", "Trace", "generate"]


@dataclass(frozen=True, slots=True)
class FaultLabel:
    """Ground truth of one injected fault (seconds after the trace's start).

    ``observable_s`` is when the agent can first see it: the start, except
    for a power cut that also cut the agent's own power (then: the return).
    """

    kind: str
    klass: FaultClass
    start_s: float
    end_s: float
    observable_s: float


@dataclass(frozen=True, slots=True)
class Trace:
    """One probe's samples from install (``start_ms``) on, every ``interval_s``.

    ``temps[i]`` is the temperature the agent reads (None when it is not one),
    ``qualities[i]`` the agent's verdict, or None when the agent took no
    reading at all (it had no power). ``events`` are the normal events
    (``defrost``, ``door_open``), ``faults`` the injected faults.
    """

    profile: str
    seed: int
    start_ms: int
    interval_s: float
    temps: list[float | None]
    qualities: list[Quality | None]
    events: tuple[Event, ...]
    faults: tuple[FaultLabel, ...]

    def __len__(self) -> int:
        return len(self.temps)

    def ts_ms(self, i: int) -> int:
        """Event time of sample ``i``."""
        return self.start_ms + round(i * self.interval_s * 1000)

    def index_at(self, t_s: float) -> int:
        """The first sample at or after ``t_s`` seconds from the start."""
        return max(0, -int(-t_s // self.interval_s))

    def samples(
        self, sensor_id: str = "28-000000000001", start: int = 0
    ) -> Iterator[tuple[int, Sample | None]]:
        """``(i, Sample)`` from sample ``start`` on, as the agent's sensor pool hands them over.

        None for a moment without a reading (the agent had no power).
        """
        temps, quals = self.temps, self.qualities
        for i in range(start, len(temps)):
            q = quals[i]
            yield i, (None if q is None else Sample(sensor_id, self.ts_ms(i), temps[i], q))


def generate(
    profile_name: str | Profile,
    seed: int,
    *,
    duration_s: float,
    interval_s: float = 1.0,
    faults: Sequence[Fault] = (),
    start_ms: int | None = None,
    stuck_after: int | None = None,
    min_c: float = -55.0,
    max_c: float = 125.0,
) -> Trace:
    """The trace of ``duration_s`` of one unit of ``profile_name`` (deterministic per seed).

    ``start_ms`` (default: a working hour of a weekday of 2025 drawn from the
    seed) is the install time. ``stuck_after`` is the agent's setting
    (default: the agent's default), the plausible range its ``min/max``.
    """
    prof = profile_name if isinstance(profile_name, Profile) else profile(profile_name)
    if not interval_s > 0:
        raise ValueError(f"interval_s: must be > 0, got {interval_s}")
    if not 0 <= duration_s <= 366 * 86400:  # NaN fails too; a year at most (memory)
        raise ValueError(f"duration_s: must be in 0..{366 * 86400}, got {duration_s}")
    if start_ms is None:
        start_ms = install_time_ms(seed)
    after = SensorsSettings().stuck_after if stuck_after is None else stuck_after
    sched = schedule(prof, seed, duration_s, start_ms)
    temps: list[float | None] = []
    quals: list[Quality | None] = []
    add_t, add_q = temps.append, quals.append
    chk = StuckCheck(after)
    last_ok: float | None = None
    ok, stuck = Quality.OK, Quality.STUCK
    for state, value in readouts(
        prof,
        seed,
        duration_s=duration_s,
        interval_s=interval_s,
        faults=faults,
        start_ms=start_ms,
        sched=sched,
    ):
        if state == "ok":
            millic = ds18b20_millic(value)
            q, temp = judge(True, millic, last_ok, min_c, max_c)
            if temp is not None:
                last_ok = temp
                q = stuck if chk.stuck(millic) else ok
        elif state == "crc":
            q, temp = judge(False, ds18b20_millic(value), last_ok, min_c, max_c)
        elif state == "reset":
            q, temp = judge(True, POWER_ON_RESET_MILLIC, last_ok, min_c, max_c)
            if temp is not None:  # believed: the probe really was at 85 °C
                last_ok = temp
        elif state == "gone":
            q, temp = Quality.DISCONNECTED, None
        else:  # "off": the agent itself was down
            add_t(None)
            add_q(None)
            continue
        add_t(temp)
        add_q(q)
    labels = tuple(
        FaultLabel(f.kind, f.klass, f.start_s, f.end_s, observable_s(f, prof)) for f in faults
    )
    return Trace(
        prof.name,
        seed,
        start_ms,
        interval_s,
        temps,
        quals,
        tuple(sched.events(duration_s)),
        labels,
    )
