"""The physics of one unit, step by step: what its probe reads each sample (pure).

One air node and one probe node. The air relaxes towards the ambient
through the walls, towards the evaporator (or supply air) while cooling
runs, towards the room while a door is open, towards a heater's target
while defrosting; a server room's racks add heat. The controller switches
cooling on at the cut-in and off at the cut-out (hysteresis on its own air
sensor), so the air saw-tooths around the setpoint. The probe follows the
air with its own time constant, plus a placement offset and noise; the
consumer quantizes to the DS18B20's 0.0625 °C.

Between changes of state (cooling, door, heater) the node's equation is
linear with constant inputs, so each step uses its exact solution
``T_eq + (T - T_eq) * exp(-k dt)``: stable at any sampling interval.

Schedules (defrosts, door openings, the ambient minute by minute) are drawn
before the loop from their own random streams, so a fault injected at some
time leaves everything before it unchanged.

>>> from edge_agent.equipment.profiles import PROFILES
>>> it = readouts(PROFILES["freezer"], 1, duration_s=60.0, interval_s=10.0)
>>> [state for state, _ in it]
['ok', 'ok', 'ok', 'ok', 'ok', 'ok']
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from edge_agent.equipment.faults import Fault, compatible
from edge_agent.equipment.profiles import Profile

__all__ = ["Event", "Schedule", "install_time_ms", "readouts", "schedule"]

DAY_S = 86400.0
#: The ambient's weather swings forget themselves in about two days.
WEATHER_TAU_S = 2 * DAY_S
#: 2025-01-01T00:00:00Z: simulated installations happen in 2025.
_YEAR_START_S = 1_735_689_600
#: Read states: a good reading, a CRC failure, the 85 °C reset value, the probe's
#: directory gone, and no reading at all (the agent itself has no power).
READ_STATES = ("ok", "crc", "reset", "gone", "off")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the unit, from ``start_s`` to ``end_s`` after install."""

    kind: str
    start_s: float
    end_s: float


def install_time_ms(seed: int) -> int:
    """When the probe of ``seed`` was installed: a working hour of a weekday in 2025.

    >>> import time
    >>> t = time.gmtime(install_time_ms(3) / 1000)
    >>> t.tm_year, t.tm_wday < 5, 8 <= t.tm_hour < 17
    (2025, True, True)
    """
    rng = random.Random(f"install/{seed}")  # noqa: S311 - simulation, not crypto
    day = rng.randrange(364)
    while (day + 2) % 7 >= 5:  # 2025-01-01 was a Wednesday (weekday 2)
        day = (day + 1) % 364
    seconds = rng.randrange(8 * 3600, 17 * 3600)
    return (_YEAR_START_S + day * 86400 + seconds) * 1000


def _local(abs_s: float) -> tuple[int, float]:
    """(weekday, hour) of an epoch second (sites are taken to run on UTC)."""
    return (int(abs_s // DAY_S) + 3) % 7, (abs_s % DAY_S) / 3600.0


def _activity(prof: Profile, abs_s: float) -> float:
    """How busy the site is, 0..1: a working-day hump, less on Saturday, little on Sunday."""
    weekday, hour = _local(abs_s)
    lo, hi = prof.working_hours
    if not lo - 1 < hour < hi + 3:
        return 0.0
    hump = math.sin(math.pi * (hour - lo + 1) / (hi - lo + 4))
    return hump * (1.0 if weekday < 5 else 0.5 if weekday == 5 else 0.15)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Everything drawn before the loop: ambient and load per minute, defrosts, doors."""

    ambient: list[float]
    load: list[float]
    #: (start_s, end_s, heater target °C, heater time constant s; 0 for off-cycle defrost)
    defrosts: list[tuple[float, float, float, float]]
    doors: list[tuple[float, float]]
    probe_offset_c: float

    def events(self, duration_s: float) -> list[Event]:
        out = [Event("defrost", s, e) for s, e, _, _ in self.defrosts if s < duration_s]
        out += [Event("door_open", s, e) for s, e in self.doors if s < duration_s]
        return sorted(out, key=lambda e: e.start_s)


def heater_target(prof: Profile, minutes: float, rise_c: float) -> tuple[float, float]:
    """(target °C, time constant s) of a heater that warms the air by ``rise_c`` in ``minutes``.

    With the walls' leak the air tends to the target with rate ``1/tau_leak + 1/tau``;
    ``tau`` is twice the defrost, so the air is still warming when it ends.
    """
    dur = minutes * 60.0
    tau = 2.0 * dur
    k = 1.0 / prof.tau_leak_s + 1.0 / tau
    t_eq = prof.setpoint_c + rise_c / (1.0 - math.exp(-k * dur))
    return (t_eq * k - prof.ambient_c / prof.tau_leak_s) * tau, tau


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; the rates here are a few per hour)."""
    if lam <= 0:
        return 0
    limit, n, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def schedule(prof: Profile, seed: int, duration_s: float, start_ms: int) -> Schedule:
    """Draw the unit's ambient, load, defrosts and doors for ``duration_s`` after ``start_ms``."""
    start = start_ms / 1000.0
    minutes = int(duration_s // 60) + 2
    rng = random.Random(f"{prof.name}/{seed}/ambient")  # noqa: S311 - simulation
    decay = math.exp(-60.0 / WEATHER_TAU_S)
    kick = prof.ambient_weather_c * math.sqrt(1.0 - decay * decay)
    weather = rng.gauss(0.0, prof.ambient_weather_c)
    ambient: list[float] = []
    load: list[float] = []
    for m in range(minutes):
        abs_s = start + 60.0 * m
        doy = ((abs_s - _YEAR_START_S) / DAY_S) % 365.25
        season = -prof.ambient_season_c * math.cos(2 * math.pi * (doy - 20.0) / 365.25)
        busy = _activity(prof, abs_s)
        ambient.append(prof.ambient_c + season + weather + prof.ambient_day_c * busy)
        load.append(prof.night_load + (1.0 - prof.night_load) * busy)
        weather = weather * decay + kick * rng.gauss(0.0, 1.0)
    drng = random.Random(f"{prof.name}/{seed}/defrost")  # noqa: S311 - simulation
    defrosts: list[tuple[float, float, float, float]] = []
    lo_h, hi_h = prof.defrost_interval_h
    if hi_h > 0:
        every = drng.uniform(lo_h, hi_h) * 3600.0  # the controller's setting, per unit
        t = drng.uniform(0.0, every)
        while t < duration_s:
            mins = drng.uniform(*prof.defrost_minutes)
            rise = prof.defrost_rise_c * drng.uniform(0.9, 1.1)
            target, tau = heater_target(prof, mins, rise) if prof.defrost_heater else (0.0, 0.0)
            defrosts.append((t, t + mins * 60.0, target, tau))
            t += every
    orng = random.Random(f"{prof.name}/{seed}/doors")  # noqa: S311 - simulation
    doors: list[tuple[float, float]] = []
    lo, hi = prof.working_hours
    for h in range(int(duration_s // 3600) + 1):
        weekday, hour = _local(start + 3600.0 * h)
        working = lo <= hour < hi and weekday < 6
        rate = prof.doors_per_hour[0 if weekday < 5 else 1] if working else prof.doors_per_hour[2]
        for _ in range(_poisson(orng, rate)):
            t = 3600.0 * h + orng.uniform(0.0, 3600.0)
            doors.append((t, t + orng.uniform(*prof.door_seconds)))
    doors.sort()
    merged: list[tuple[float, float]] = []
    for s, e in doors:  # one opening while another is still open is one opening
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    offset = random.Random(f"{prof.name}/{seed}/probe").gauss(0.0, prof.probe_offset_c)  # noqa: S311
    return Schedule(ambient, load, defrosts, merged, offset)


def readouts(
    prof: Profile,
    seed: int,
    *,
    duration_s: float,
    interval_s: float = 1.0,
    faults: Sequence[Fault] = (),
    start_ms: int | None = None,
    sched: Schedule | None = None,
) -> Iterator[tuple[str, float]]:
    """``(state, temp_c)`` of each sample: state in :data:`READ_STATES`, temp before quantization.

    Deterministic per ``(prof, seed, interval_s, faults)``; a fault changes
    nothing before its start. ``temp_c`` is what the probe would measure
    (meaningful when state is ``ok``).
    """
    for f in faults:
        if not compatible(f.kind, prof):
            raise ValueError(f"fault.kind: {f.kind!r} does not apply to profile {prof.name!r}")
    if start_ms is None:
        start_ms = install_time_ms(seed)
    sc = sched or schedule(prof, seed, duration_s, start_ms)
    rng = random.Random(f"{prof.name}/{seed}/noise")  # noqa: S311 - simulation
    frngs = [random.Random(f"{prof.name}/{seed}/fault/{i}") for i in range(len(faults))]  # noqa: S311
    dt = interval_s
    cut_in, cut_out = prof.cut_in_c, prof.cut_out_c
    inv_leak, inv_cool, inv_door = 1 / prof.tau_leak_s, 1 / prof.tau_cool_s, 1 / prof.tau_door_s
    probe_a = 1.0 - math.exp(-dt / prof.probe_tau_s)
    # The share of a moved cooling target that shows in the air while cooling always runs.
    cool_share = inv_cool / (inv_leak + inv_cool)
    air = rng.uniform(cut_out, cut_in)
    cooling = rng.random() < 0.5
    share = prof.probe_ambient_share
    probe = air + prof.probe_load_c * sc.load[0] + share * (sc.ambient[0] - prof.ambient_c)
    decays: dict[float, float] = {}
    defrosts, doors = sc.defrosts, sc.doors
    di = oi = 0
    was_off = False
    frozen: dict[int, float] = {}
    n = int(duration_s / dt)
    for i in range(n):
        t = i * dt
        m = int(t // 60.0)
        amb, load = sc.ambient[m], sc.load[m]
        while oi < len(doors) and doors[oi][1] <= t:
            oi += 1
        door = oi < len(doors) and doors[oi][0] <= t
        while di < len(defrosts) and defrosts[di][1] <= t:
            di += 1
        defrosting = di < len(defrosts) and defrosts[di][0] <= t
        heat_c, heat_tau = defrosts[di][2:] if defrosting else (0.0, 0.0)
        cooling_off = defrosting
        target, powered, in_air, state = prof.cooling_target_c, True, False, "ok"
        stuck_at: float | None = None
        for fi, f in enumerate(faults):
            if not f.start_s <= t < f.end_s:
                continue
            k = f.kind
            if k == "door_left_open":
                door = True
            elif k in ("compressor_failure", "hvac_failure"):
                cooling_off = True
            elif k == "defrost_stuck":
                cooling_off = True
                heat_c, heat_tau = heater_target(prof, 25.0, prof.defrost_rise_c)
            elif k == "refrigerant_leak":
                since = t - f.start_s
                # Capacity drains until the air just stays at the cut-in, then creeps up.
                edge = (cut_in * (inv_leak + inv_cool) - amb * inv_leak) / inv_cool
                target += (edge - target) * min(1.0, since / f.leak_onset_s)
                target += f.drift_c_per_h / cool_share * max(0.0, since - f.leak_onset_s) / 3600
            elif k == "power_cut":
                cooling_off, powered, heat_tau = True, False, 0.0
                if not prof.on_ups:
                    state = "off"
            elif k == "probe_in_air":
                in_air = True
            elif k == "stuck":
                stuck_at = frozen.setdefault(fi, probe)
            elif f.rate >= 1.0 or frngs[fi].random() < f.rate:
                state = {"power_on_reset": "reset", "crc_error": "crc"}.get(k, "gone")
        if not cooling_off:
            if air >= cut_in:
                cooling = True
            elif air <= cut_out:
                cooling = False
        else:
            cooling = False
        inv = inv_leak
        acc = amb * inv_leak
        if powered or prof.on_ups:
            acc += prof.heat_load_c_per_s * load
        if cooling:
            inv += inv_cool
            acc += target * inv_cool
        if door:
            inv += inv_door
            acc += amb * inv_door
        if heat_tau > 0:  # a defrost heater is on
            inv += 1.0 / heat_tau
            acc += heat_c / heat_tau
        e = decays.get(inv)
        if e is None:
            e = decays[inv] = math.exp(-inv * dt)
        t_eq = acc / inv
        air = t_eq + (air - t_eq) * e
        seen = amb if in_air else air + prof.probe_load_c * load
        seen += share * (amb - prof.ambient_c)
        probe += (seen - probe) * probe_a
        value = probe + sc.probe_offset_c + rng.gauss(0.0, prof.noise_c)
        if stuck_at is not None:
            value = stuck_at + sc.probe_offset_c
        if state == "off":
            was_off = True
        elif was_off:
            was_off, state = False, "reset"  # the probe's first conversion after power-up
        yield state, max(-55.0, min(125.0, value))


def observable_s(f: Fault, prof: Profile) -> float:
    """When the agent can first see fault ``f``: its start, or the power's return."""
    if f.kind == "power_cut" and not prof.on_ups:
        return f.end_s
    return f.start_s
