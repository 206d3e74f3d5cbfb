"""Equipment profiles: hard limits, alarm delays and physical bounds per kind of equipment.

A profile is what a refrigeration controller or a data-centre monitor knows
about the equipment before it has seen a single reading: the temperature the
goods or the servers must not exceed, how long a limit may be exceeded before
the alarm sounds (a door opened for loading, a defrost), and how fast the
air around the probe can change at all. Choose one with
``[detector] profile = "cold_room"``; ``[alarm] high_c`` / ``low_c`` override
its limits.

Sources of the defaults:

* **Chilled food** (``cold_room``, ``fridge``): at or below 8 °C (UK Food
  Safety and Hygiene (England) Regulations 2013, schedule 4: chill holding
  ≤ 8 °C; the US FDA Food Code 3-501.16 asks ≤ 5 °C / 41 °F). The alarm is at
  8 °C, the legal limit, not at the 5 °C target. Below −1 °C chilled food
  starts to freeze.
* **Frozen food** (``freezer``): ≤ −18 °C (Regulation (EC) No 37/2005 and
  Directive 89/108/EEC on quick-frozen foodstuffs, which tolerate brief
  upward fluctuations of at most 3 °C): the alarm is at −15 °C.
* **Server rooms** (``server_room``): ASHRAE TC 9.9 *Thermal Guidelines for
  Data Processing Environments*, class A1 allowable inlet range 15–32 °C
  (recommended 18–27 °C): the alarm is at the allowable limits.
* **Delays**: commercial controllers delay the temperature alarm and bypass
  the high alarm for a while after a defrost or a door opening (e.g. Carel's
  ``d8`` "high-temperature alarm exclusion after defrost and/or door open",
  1 h by default in the Carel MasterCella manual +050004036; defrost lasts
  at most 30–45 min, ``dP1``). Here a limit must be exceeded for
  ``delay_s`` (30 min in refrigeration) and for ``defrost_delay_s`` (90 min:
  Carel's 1 h bypass plus the time a freezer's air takes to come back below
  −15 °C after a 30 min defrost) while the detector recognises the
  excursion as a learned, recurring one (a defrost), or is still learning
  and cannot tell yet; a server room has no defrost and a short delay.
* **Physical bounds**: the air around a probe (a DS18B20 in a steel sleeve
  lags about 3 min) in a room with thermal mass does not move away from its
  last minute's mean by more than ``max_step_c``: a faster step means the
  probe itself moved (pulled out into room air), a sensor fault, not a
  temperature. The bounds are about twice the largest such step of normal
  operation, door openings and defrosts included, in the simulated corpus
  (``edge_agent/equipment``, two weeks at 10 s: 1.3 °C freezer → 3,
  0.8 °C cold room → 2, 1.1 °C fridge → 2, 0.5 °C server room → 1). A
  server room's probe pulled into air of about the same temperature moves
  too little to be seen.

>>> p = PROFILES["cold_room"]
>>> p.high_c, p.low_c, p.delay_s / 60, p.defrost_delay_s / 60
(8.0, -1.0, 30.0, 90.0)
>>> sorted(PROFILES)
['cold_room', 'freezer', 'fridge', 'generic', 'server_room']

The simulated equipment of the detection benchmark (``edge_agent/equipment``)
has profiles of the same names: there they describe physics, here the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["PROFILES", "Profile"]


@dataclass(frozen=True, slots=True)
class Profile:
    """What is known about one kind of equipment before any reading."""

    name: str
    #: Hard limits (None: none); ``[alarm] high_c`` / ``low_c`` override them.
    high_c: float | None
    low_c: float | None
    #: A limit must be exceeded this long before its alarm is raised ...
    delay_s: float
    #: ... or this long while the excursion is a learned recurring one (a defrost).
    defrost_delay_s: float
    #: A change of more than this within about a minute is the probe moving, not the air
    #: (0: no check).
    max_step_c: float


#: The profiles by name; ``generic`` (the default) knows nothing about the equipment.
PROFILES: Final[dict[str, Profile]] = {
    p.name: p
    for p in (
        Profile("generic", None, None, 0.0, 0.0, 0.0),
        Profile("freezer", -15.0, None, 1800.0, 5400.0, 3.0),
        Profile("cold_room", 8.0, -1.0, 1800.0, 5400.0, 2.0),
        Profile("fridge", 8.0, -1.0, 1800.0, 5400.0, 2.0),
        Profile("server_room", 32.0, 15.0, 300.0, 300.0, 1.0),
    )
}
