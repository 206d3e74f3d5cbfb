"""Labelled faults that can be injected into a profile's normal operation (pure data).

Two classes. *Temperature* faults change what the air really does (the
detector should raise a temperature alarm): a door left open, a compressor
that fails, a defrost heater that does not stop, a refrigerant leak (cooling
capacity drains away, then the air drifts up slowly), a power cut (and the
recovery after it), an HVAC failure in a server room. *Sensor* faults change
only what the probe reports (the agent should say "sensor fault", never
"temperature anomaly"): the DS18B20's 85 °C power-on value, CRC errors, a
value that no longer moves, a probe that is gone, and a probe pulled out of
the unit into the room air (its readings are good temperatures, of the wrong
air).

>>> Fault("door_left_open", start_s=3600).end_s
7200.0
>>> compatible("defrost_stuck", PROFILES["fridge"]), compatible("hvac_failure", PROFILES["freezer"])
(False, False)
>>> Fault("meltdown", start_s=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: fault.kind: unknown fault 'meltdown' (known: compressor_failure, crc_error, ...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from edge_agent.equipment.profiles import PROFILES, Profile

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "compatible",
    "compatible_faults",
]

FaultClass = Literal["temperature", "sensor"]


@dataclass(frozen=True, slots=True)
class FaultKind:
    """What a fault kind is: its class, where it applies and how long it lasts by default."""

    name: str
    klass: FaultClass
    #: Profiles it applies to (by kind of equipment), and whether it needs a heater defrost.
    equipment: frozenset[str]
    default_duration_s: float
    needs_heater: bool = False


_FRIDGES = frozenset({"refrigeration"})
_ALL = frozenset({"refrigeration", "hvac"})

#: Every fault kind by name.
FAULT_KINDS: Final[dict[str, FaultKind]] = {
    k.name: k
    for k in (
        FaultKind("door_left_open", "temperature", _FRIDGES, 3600.0),
        FaultKind("compressor_failure", "temperature", _FRIDGES, 6 * 3600.0),
        FaultKind("defrost_stuck", "temperature", _FRIDGES, 3 * 3600.0, needs_heater=True),
        FaultKind("refrigerant_leak", "temperature", _FRIDGES, 8 * 3600.0),
        FaultKind("power_cut", "temperature", _ALL, 3 * 3600.0),
        FaultKind("hvac_failure", "temperature", frozenset({"hvac"}), 2 * 3600.0),
        FaultKind("power_on_reset", "sensor", _ALL, 600.0),
        FaultKind("crc_error", "sensor", _ALL, 600.0),
        FaultKind("stuck", "sensor", _ALL, 3 * 3600.0),
        FaultKind("disconnected", "sensor", _ALL, 1800.0),
        FaultKind("probe_in_air", "sensor", _ALL, 1800.0),
    )
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault injected at ``start_s`` (seconds after the trace starts).

    ``duration_s`` (default: the kind's) is how long it lasts: the door is
    closed, the compressor repaired, the power back, the probe plugged back in.
    ``rate`` is the share of readings a flaky sensor fault spoils (1: all);
    ``drift_c_per_h`` how fast the air drifts up once a leak has drained the
    cooling capacity (after ``leak_onset_s``).
    """

    kind: str
    start_s: float
    duration_s: float | None = None
    rate: float = 1.0
    drift_c_per_h: float = 1.0
    leak_onset_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            known = ", ".join(sorted(FAULT_KINDS))
            raise ValueError(f"fault.kind: unknown fault {self.kind!r} (known: {known})")
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"fault.start_s: must be >= 0, got {self.start_s}")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise ValueError(f"fault.duration_s: must be > 0, got {self.duration_s}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault.rate: must be in 0..1, got {self.rate}")
        if not (math.isfinite(self.drift_c_per_h) and self.drift_c_per_h >= 0):
            raise ValueError(f"fault.drift_c_per_h: must be >= 0, got {self.drift_c_per_h}")
        if not (math.isfinite(self.leak_onset_s) and self.leak_onset_s > 0):
            raise ValueError(f"fault.leak_onset_s: must be > 0, got {self.leak_onset_s}")

    @property
    def klass(self) -> FaultClass:
        """``temperature`` or ``sensor``: which kind of alarm should report it."""
        return FAULT_KINDS[self.kind].klass

    @property
    def end_s(self) -> float:
        dur = self.duration_s
        return self.start_s + (FAULT_KINDS[self.kind].default_duration_s if dur is None else dur)


def compatible(kind: str, prof: Profile) -> bool:
    """Whether fault ``kind`` can happen to equipment ``prof``."""
    fk = FAULT_KINDS[kind]
    if prof.kind not in fk.equipment:
        return False
    return not fk.needs_heater or (prof.defrost_heater and prof.defrost_interval_h[1] > 0)


def compatible_faults(profile_name: str) -> list[str]:
    """The fault kinds that apply to the profile called ``profile_name``, sorted.

    >>> compatible_faults("server_room")  # doctest: +NORMALIZE_WHITESPACE
    ['crc_error', 'disconnected', 'hvac_failure', 'power_cut', 'power_on_reset',
     'probe_in_air', 'stuck']
    """
    prof = PROFILES[profile_name]
    return sorted(k for k in FAULT_KINDS if compatible(k, prof))
