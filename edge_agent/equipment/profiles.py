"""Equipment profiles: the physical parameters of what a probe is fitted to (pure data).

Four kinds of equipment a thermowatch probe watches, each with a controller
that cycles its cooling around a setpoint (on/off with a differential), the
thermal time constants that set how fast the air warms and cools, the
defrost schedule of refrigeration, door traffic in working hours and the
heat load of a server room.

Where the figures come from (public sources, by name; the time constants
are chosen so the cycles below come out as those sources describe them):

============================  =================================================================
Figure                        Source
============================  =================================================================
freezer setpoint -20 °C,      Frozen food is held at -18 °C (0 °F) or colder: US FDA Food Code
limit -18 °C                  and USDA freezing guidance; Regulation (EC) No 37/2005 (quick-
                              frozen foodstuffs, air temperature monitoring). Controllers are
                              set a little colder so the cycle stays below the limit.
cold room / fridge limit      Cold holding at 5 °C (41 °F) or below: US FDA Food Code
5 °C; UK legal 8 °C           3-501.16 (HACCP plans use it as the critical limit); UK: chill
                              holding at 8 °C or below, Food Safety and Hygiene (England)
                              Regulations 2013, Schedule 4.
differential 2 K              Default differential (2.0 °C) of refrigeration controllers'
                              manuals: Dixell XR series (``HY``), AKO-165xx (``C1``).
defrost every 6-8 h,          Defrost interval and maximum duration parameters of the same
20-30 min, ~+10 °C            manuals: Dixell XR/XM (``IdF`` interval between defrosts,
                              ``MdF`` maximum duration, ``dtE`` termination temperature, about
                              +8 °C), AKO-165xx (``d0`` defrost frequency, default 6 h); the
                              air near the evaporator warms by about 10 K. Reach-in fridges
                              defrost off-cycle (compressor stopped, no heater: Johnson
                              Controls PENN A421 off-cycle defrost guide), so their air warms
                              only a few kelvin, from the walls' leak.
server room 18-27 °C          ASHRAE TC 9.9 Thermal Guidelines for Data Processing
recommended, 15-32 °C         Environments, class A1: recommended 18-27 °C inlet, allowable
allowable                     15-32 °C. Setpoint 22 °C with a 1.5 K differential.
0.0625 °C, ±0.5 °C, 85 °C     DS18B20 datasheet (Maxim Integrated / Analog Devices): 12-bit
                              resolution 0.0625 °C, accuracy ±0.5 °C from -10 to +85 °C, the
                              temperature register reads +85 °C after power-on.
noise 0.03 °C (sd), probe     Assumptions, not from a source: the datasheet states accuracy,
lag 1-3 min, offset 0.2 °C    not noise. The noise decides how long a healthy probe can repeat
                              one value (see the stuck check); check it against a recording.
============================  =================================================================

>>> PROFILES["freezer"].cut_in_c, PROFILES["freezer"].cut_out_c
(-19.0, -21.0)
>>> sorted(PROFILES)
['cold_room', 'freezer', 'fridge', 'server_room']
>>> profile("attic")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: profile: unknown equipment profile 'attic' (known: cold_room, freezer, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["PROFILES", "Profile", "profile"]


@dataclass(frozen=True, slots=True)
class Profile:
    """One kind of equipment: its controller, its thermal behaviour, its usage."""

    name: str
    kind: Literal["refrigeration", "hvac"]
    #: Controller setpoint and differential: cooling starts at setpoint + differential / 2
    #: and stops at setpoint - differential / 2.
    setpoint_c: float
    differential_c: float
    #: While cooling runs, the air is pulled towards this temperature (evaporator or
    #: supply air) with this time constant.
    cooling_target_c: float
    tau_cool_s: float
    #: The air warms towards the ambient through the walls with this time constant.
    tau_leak_s: float
    #: Ambient around the unit (kitchen, store room, building): mean, extra warmth at
    #: the peak of a working day, standard deviation of multi-day weather swings and
    #: amplitude of the yearly cycle.
    ambient_c: float
    ambient_day_c: float
    ambient_weather_c: float
    ambient_season_c: float
    #: Internal heat (server racks) in K/s at full load, and the load at night.
    heat_load_c_per_s: float = 0.0
    night_load: float = 1.0
    #: The probe's own time constant (a DS18B20 in a steel sleeve, in moving air) and
    #: the standard deviation of its placement offset (per installation).
    probe_tau_s: float = 120.0
    probe_offset_c: float = 0.2
    #: What the probe reads above the room air at full rack load (a probe near the
    #: rack inlets), and the share of the building's drift it picks up.
    probe_load_c: float = 0.0
    probe_ambient_share: float = 0.0
    #: Reading noise (sd, °C) before the probe's 0.0625 °C quantization.
    noise_c: float = 0.03
    #: Defrost: interval range (hours; 0: no defrost), duration range (minutes), warming
    #: of the air (K), and whether a heater does it (False: off-cycle defrost).
    defrost_interval_h: tuple[float, float] = (0.0, 0.0)
    defrost_minutes: tuple[float, float] = (20.0, 30.0)
    defrost_rise_c: float = 10.0
    defrost_heater: bool = True
    #: Door openings per hour in working hours on weekdays, on Saturdays, and at any
    #: other time; how long each lasts (s); how fast the air exchanges while open.
    doors_per_hour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    door_seconds: tuple[float, float] = (10.0, 40.0)
    tau_door_s: float = 1500.0
    #: Working hours (local time, from, to).
    working_hours: tuple[int, int] = (7, 19)
    #: Whether the agent (and the heat load) keeps running in a power cut (a UPS).
    on_ups: bool = False
    #: The limits of the standards above (product / inlet temperature), for reference.
    limit_low_c: float | None = None
    limit_high_c: float | None = None

    @property
    def cut_in_c(self) -> float:
        """Air temperature at which the controller starts cooling."""
        return self.setpoint_c + self.differential_c / 2

    @property
    def cut_out_c(self) -> float:
        """Air temperature at which the controller stops cooling."""
        return self.setpoint_c - self.differential_c / 2


#: The profiles by name. The time constants are chosen for cooling cycles of about
#: 35 min (freezer, cold room), 25 min (fridge) and 15 min (server room).
PROFILES: Final[dict[str, Profile]] = {
    "freezer": Profile(
        name="freezer",
        kind="refrigeration",
        setpoint_c=-20.0,
        differential_c=2.0,
        cooling_target_c=-35.0,
        tau_cool_s=3600.0,
        tau_leak_s=24000.0,
        ambient_c=22.0,
        ambient_day_c=3.0,
        ambient_weather_c=1.5,
        ambient_season_c=2.0,
        probe_tau_s=120.0,
        noise_c=0.03,
        defrost_interval_h=(6.0, 6.0),
        defrost_minutes=(20.0, 30.0),
        defrost_rise_c=10.0,
        doors_per_hour=(4.0, 2.0, 0.2),
        door_seconds=(10.0, 40.0),
        tau_door_s=1500.0,
        limit_high_c=-18.0,
    ),
    "cold_room": Profile(
        name="cold_room",
        kind="refrigeration",
        setpoint_c=2.0,
        differential_c=2.0,
        cooling_target_c=-6.0,
        tau_cool_s=2000.0,
        tau_leak_s=10800.0,
        ambient_c=20.0,
        ambient_day_c=2.0,
        ambient_weather_c=1.5,
        ambient_season_c=3.0,
        probe_tau_s=180.0,
        noise_c=0.03,
        defrost_interval_h=(6.0, 8.0),
        defrost_minutes=(20.0, 30.0),
        defrost_rise_c=9.0,
        doors_per_hour=(8.0, 4.0, 0.3),
        door_seconds=(15.0, 90.0),
        tau_door_s=3000.0,
        limit_high_c=5.0,
    ),
    "fridge": Profile(
        name="fridge",
        kind="refrigeration",
        setpoint_c=3.5,
        differential_c=2.0,
        cooling_target_c=-5.0,
        tau_cool_s=1500.0,
        tau_leak_s=6000.0,
        ambient_c=22.0,
        ambient_day_c=3.0,
        ambient_weather_c=1.5,
        ambient_season_c=2.0,
        probe_tau_s=90.0,
        noise_c=0.03,
        defrost_interval_h=(6.0, 6.0),
        defrost_minutes=(20.0, 30.0),
        defrost_rise_c=5.0,
        defrost_heater=False,
        doors_per_hour=(10.0, 6.0, 0.5),
        door_seconds=(5.0, 30.0),
        tau_door_s=600.0,
        limit_high_c=5.0,
    ),
    "server_room": Profile(
        name="server_room",
        kind="hvac",
        setpoint_c=22.0,
        differential_c=1.5,
        cooling_target_c=14.0,
        tau_cool_s=900.0,
        tau_leak_s=21600.0,
        ambient_c=21.0,
        ambient_day_c=2.0,
        ambient_weather_c=3.0,
        ambient_season_c=5.0,
        heat_load_c_per_s=0.005,
        night_load=0.6,
        probe_tau_s=60.0,
        probe_load_c=1.0,
        probe_ambient_share=0.1,
        noise_c=0.03,
        on_ups=True,
        limit_low_c=18.0,
        limit_high_c=27.0,
    ),
}


def profile(name: str) -> Profile:
    """The profile called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"profile: unknown equipment profile {name!r} (known: {known})") from None
