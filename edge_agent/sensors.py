"""Temperature sensors behind one small interface: DS18B20 probes and the board's own.

Two real kinds: DS18B20 probes through the kernel's w1-therm sysfs files
(``<root>/28-*/w1_slave``), and the board's own thermal zone (the file
gpiozero's ``CPUTemperature`` reads). Every reader takes its file paths as
arguments, so tests and the simulator point them at fake trees. Parsing and
judging the probe's text is pure (:mod:`edge_agent.w1`); reading many sensors
concurrently is :class:`edge_agent.sensor_pool.SensorPool`.

Why not gpiozero or w1thermsensor for the probes: gpiozero has no DS18B20
class; w1thermsensor hides the raw ``crc=`` verdict behind exceptions and
resolves its own sysfs base path, while we need the CRC flag, the raw
``t=`` value (to recognise the 85 °C reset) and an injectable root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.w1 import StuckCheck, judge, parse_w1_bytes
from telemetry_contract import Quality

__all__ = [
    "DS18B20",
    "HOST_SENSOR_ID",
    "HostSensor",
    "Sample",
    "Sensor",
    "discover_w1",
    "now_ms",
]

HOST_SENSOR_ID = "host"


@dataclass(frozen=True, slots=True)
class Sample:
    """The outcome of reading one sensor once (after retries).

    ``temp_c`` is set only when ``quality`` is ``ok`` or ``stuck``: a CRC
    failure or a power-on reset is not a temperature, whatever digits came
    with it. A ``stuck`` value is kept for the record but, like every
    reading that is not ``ok``, never trains the detector or drives an alarm.
    """

    sensor_id: str
    ts_ms: int
    temp_c: float | None
    quality: Quality
    detail: str = ""
    attempts: int = 1
    #: A DS18B20's raw ``t=`` value when ``ok`` or ``stuck``, with how many readings
    #: before it had the same value: the stuck check's state after this reading,
    #: which the agent stores with the reading so a restart continues the count.
    raw: int | None = None
    repeats: int = 0

    @property
    def ok(self) -> bool:
        return self.quality is Quality.OK


class Sensor(Protocol):
    """Port: anything that yields a :class:`Sample` when read (may block ~1 s)."""

    @property
    def sensor_id(self) -> str: ...

    def present(self) -> bool:
        """Whether the device is still there (a DS18B20 directory can vanish)."""
        ...

    def read(self) -> Sample: ...


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (event time of a reading)."""
    return time.time_ns() // 1_000_000


class DS18B20:
    """One DS18B20 probe read through ``<device_dir>/w1_slave``.

    CRC errors, power-on resets and implausible values are retried
    ``retries`` times; if every attempt is bad the last verdict is returned
    with its quality flag (and no temperature). A value that has not moved
    for ``stuck_after`` readings is returned as ``stuck`` (see
    :class:`StuckCheck`), its temperature kept for the record.
    """

    def __init__(
        self,
        device_dir: str | Path,
        *,
        retries: int = 2,
        retry_delay_s: float = 0.05,
        min_c: float = -55.0,
        max_c: float = 125.0,
        stuck_after: int = 0,
        clock_ms: Callable[[], int] = now_ms,
        stuck_state: tuple[int, int] | None = None,
    ) -> None:
        self.device_dir = Path(device_dir)
        self._id = self.device_dir.name
        self._dir = str(self.device_dir)
        self._file = f"{self._dir}/w1_slave"
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._min_c = min_c
        self._max_c = max_c
        self._clock_ms = clock_ms
        self.last_ok_c: float | None = None
        self._stuck = StuckCheck(stuck_after)
        if stuck_state is not None:
            self._stuck.restore(*stuck_state)

    @property
    def sensor_id(self) -> str:
        return self._id

    def present(self) -> bool:
        return os.path.isdir(self._dir)  # noqa: PTH112 - hot path, no Path object

    def read(self) -> Sample:
        ts = self._clock_ms()
        quality, detail = Quality.DISCONNECTED, ""
        attempt = 0
        for attempt in range(1, self._retries + 2):
            try:
                # os.open/os.read: 3 system calls instead of open()'s 7. Each call
                # releases the GIL, and 8 probe threads finishing at once fight for it.
                # The kernel returns the whole (< 100 byte) attribute in one read.
                fd = os.open(self._file, os.O_RDONLY)
                try:
                    raw = os.read(fd, 4096)
                finally:
                    os.close(fd)
                crc_ok, millic = parse_w1_bytes(raw)
            except FileNotFoundError:
                return Sample(self._id, ts, None, Quality.DISCONNECTED, "w1_slave missing", attempt)
            except (OSError, ValueError) as exc:
                # A probe pulled mid-read gives EIO or a truncated file: not a temperature.
                quality, detail = Quality.DISCONNECTED, f"sensor {self._id}: {exc}"
            else:
                quality, temp = judge(crc_ok, millic, self.last_ok_c, self._min_c, self._max_c)
                if temp is not None:
                    self.last_ok_c = temp
                    chk = self._stuck
                    if chk.stuck(millic):
                        detail = f"t={millic} unchanged for {chk.repeats} readings"
                        return Sample(
                            self._id, ts, temp, Quality.STUCK, detail, attempt, millic, chk.repeats
                        )
                    return Sample(self._id, ts, temp, Quality.OK, "", attempt, millic, chk.repeats)
                detail = f"t={millic} crc={'YES' if crc_ok else 'NO'}"
            if attempt <= self._retries and self._retry_delay_s > 0:
                time.sleep(self._retry_delay_s)
        return Sample(self._id, ts, None, quality, detail, attempt)


class HostSensor:
    """The board's own temperature: the thermal-zone file gpiozero's CPUTemperature reads."""

    def __init__(
        self,
        path: str | Path = "/sys/class/thermal/thermal_zone0/temp",
        *,
        sensor_id: str = HOST_SENSOR_ID,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.path = Path(path)
        self._id = sensor_id
        self._clock_ms = clock_ms

    @property
    def sensor_id(self) -> str:
        return self._id

    def present(self) -> bool:
        return self.path.is_file()

    def read(self) -> Sample:
        ts = self._clock_ms()
        try:
            temp = int(self.path.read_text(encoding="ascii").strip()) / 1000.0
        except (OSError, ValueError) as exc:
            return Sample(self._id, ts, None, Quality.DISCONNECTED, str(exc))
        if not -55.0 <= temp <= 125.0:
            return Sample(self._id, ts, None, Quality.OUT_OF_RANGE, f"temp={temp}")
        return Sample(self._id, ts, temp, Quality.OK)


def discover_w1(root: str | Path) -> list[str]:
    """Names of the DS18B20 (family ``28``) device directories under ``root``, sorted.

    Missing root → empty list (1-Wire not enabled, or the simulator not started yet).
    """
    try:
        # scandir: the entry type comes with the listing, no stat per entry.
        with os.scandir(root) as it:
            return sorted(e.name for e in it if e.name.startswith("28-") and e.is_dir())
    except OSError:
        return []
