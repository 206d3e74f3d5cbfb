"""Realistic normal operation of refrigeration and server rooms, with labelled faults.

A deterministic generator (per seed) of what one DS18B20 probe fitted to a
freezer, a walk-in cold room, a reach-in fridge or a server room reads, week
after week from install: compressor cycling, defrosts, doors in working
hours, day/night and weekday/weekend load, seasonal and weather drift of the
ambient, the probe's lag, offset, noise and 0.0625 °C steps. Faults are
injected at a given time; sensor faults come out with the quality the
agent's own judgement gives them. The detection benchmark
(``benchmarks/detection``) and the simulator (``[fleet] profile = ...``)
use it.

* :mod:`~edge_agent.equipment.profiles` -- the profiles and their sources;
* :mod:`~edge_agent.equipment.faults` -- the fault kinds;
* :mod:`~edge_agent.equipment.physics` -- the unit's physics, step by step;
* :mod:`~edge_agent.equipment.trace` -- :func:`generate` and :class:`Trace`.

>>> tr = generate("freezer", seed=2, duration_s=600.0, interval_s=60.0)
>>> len(tr), tr.profile
(10, 'freezer')
"""

from edge_agent.equipment.faults import FAULT_KINDS, Fault, compatible, compatible_faults
from edge_agent.equipment.physics import Event, install_time_ms, readouts
from edge_agent.equipment.profiles import PROFILES, Profile, profile
from edge_agent.equipment.trace import FaultLabel, Trace, generate

__all__ = [
    "FAULT_KINDS",
    "PROFILES",
    "Event",
    "Fault",
    "FaultLabel",
    "Profile",
    "Trace",
    "compatible",
    "compatible_faults",
    "generate",
    "install_time_ms",
    "profile",
    "readouts",
]
