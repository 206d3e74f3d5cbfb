"""Temperature sensors behind one small interface, read concurrently.

Two real kinds: DS18B20 probes through the kernel's w1-therm sysfs files
(``<root>/28-*/w1_slave``), and the board's own thermal zone (the file
gpiozero's ``CPUTemperature`` reads). Every reader takes its file paths as
arguments, so tests and the simulator point them at fake trees.

Why not gpiozero or w1thermsensor for the probes: gpiozero has no DS18B20
class; w1thermsensor hides the raw ``crc=`` verdict behind exceptions and
resolves its own sysfs base path, while we need the CRC flag, the raw
``t=`` value (to recognise the 85 °C reset) and an injectable root.

Parsing and judging are pure functions:

>>> text = ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\\n"
...         "72 01 4b 46 7f ff 0e 10 57 t=23125\\n")
>>> parse_w1_slave(text)
(True, 23125)
>>> judge(True, 23125, None, -55.0, 125.0)
(<Quality.OK: 'ok'>, 23.125)
>>> judge(False, 23125, None, -55.0, 125.0)[0]
<Quality.CRC_ERROR: 'crc_error'>
>>> judge(True, 85000, 4.0, -55.0, 125.0)[0]
<Quality.POWER_ON_RESET: 'power_on_reset'>
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.errors import NoSensorError
from telemetry_contract import Quality

__all__ = [
    "DS18B20",
    "HOST_SENSOR_ID",
    "HostSensor",
    "Sample",
    "Sensor",
    "SensorPool",
    "StuckCheck",
    "discover_w1",
    "judge",
    "parse_w1_bytes",
    "parse_w1_slave",
]

log = logging.getLogger(__name__)

HOST_SENSOR_ID = "host"
#: What the DS18B20 scratchpad holds after power-on, before any conversion:
#: +85.000 °C. A probe that browns out mid-conversion returns it too, so 85.000
#: read out of the blue is a fault, not a temperature.
POWER_ON_RESET_MILLIC = 85000
#: An 85.000 °C reading is believed only right after readings this close to it
#: (an oven really at 85 °C passes through 84.x first).
RESET_BELIEVABLE_WITHIN_C = 2.0

_CRC = re.compile(r"crc=([0-9a-fA-F]{2})\s+(YES|NO)\s*$")
_T = re.compile(r"t=(-?\d+)\s*$")


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


def parse_w1_slave(text: str) -> tuple[bool, int]:
    """``(crc_ok, millidegrees)`` from the two lines of a ``w1_slave`` file.

    >>> parse_w1_slave("50 05 4b : crc=1c NO\\n50 05 4b t=85000")
    (False, 85000)
    >>> parse_w1_slave("ff ff : crc=00 YES\\nff ff t=-1250\\n")
    (True, -1250)
    >>> parse_w1_slave("00 00 00 : crc=00 YES\\n00 00 00 t=0\\n")  # nobody answered
    (False, 0)
    >>> parse_w1_slave("")
    Traceback (most recent call last):
    ...
    ValueError: w1_slave: expected 2 lines ('... crc=xx YES|NO', '... t=<millidegrees>'), got 0
    """
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(
            "w1_slave: expected 2 lines ('... crc=xx YES|NO', '... t=<millidegrees>'), "
            f"got {len(lines)}"
        )
    crc = _CRC.search(lines[0])
    if crc is None:
        raise ValueError(f"w1_slave: no 'crc=xx YES|NO' in first line {lines[0][:80]!r}")
    t = _T.search(lines[1])
    if t is None:
        raise ValueError(f"w1_slave: no 't=<millidegrees>' in second line {lines[1][:80]!r}")
    # An all-zero scratchpad has a valid CRC (0) but means no probe answered
    # (shorted or missing data line): treat it as a failed CRC check.
    pad = lines[0].split(":", 1)[0].split()
    all_zero = bool(pad) and all(b == "00" for b in pad)
    return crc.group(2) == "YES" and not all_zero, int(t.group(1))


#: Bytes of a well-formed ``w1_slave`` file: printable ASCII and ``\n``. Within
#: them, only ``\n`` breaks a line and only the space is whitespace.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_w1_bytes(raw: bytes) -> tuple[bool, int]:
    """:func:`parse_w1_slave` on the raw bytes of the file, same results, same errors.

    The usual file (``... : crc=xx YES|NO`` / ``... t=<millidegrees>``) is parsed
    without decoding or regular expressions; anything else goes to
    :func:`parse_w1_slave`.

    >>> parse_w1_bytes(b"72 01 4b 7f : crc=57 YES\\n72 01 4b 7f t=23125\\n")
    (True, 23125)
    >>> parse_w1_bytes(b"50 05 4b : crc=1c NO\\n50 05 4b t=-85000")
    (False, -85000)
    >>> parse_w1_bytes(b"00 00 00 : crc=00 YES\\n00 00 00 t=0\\n")
    (False, 0)
    >>> parse_w1_bytes(b"ff : crc=00  YES \\nff t= 12\\n")
    Traceback (most recent call last):
    ...
    ValueError: w1_slave: no 't=<millidegrees>' in second line 'ff t= 12'
    """
    parts = raw.split(b"\n", 2)
    if len(parts) >= 2 and not raw.translate(None, _PLAIN):
        line0, line1 = parts[0], parts[1]
        if line0.endswith(b" YES"):
            crc_ok, head = True, line0[:-4]
        elif line0.endswith(b" NO"):
            crc_ok, head = False, line0[:-3]
        else:
            head = b""
        t = line1.rfind(b"t=")
        if head[-6:-2] == b"crc=" and _HEX.issuperset(head[-2:]) and t >= 0:
            digits = line1[t + 2 :]
            if (digits[1:] if digits[:1] == b"-" else digits).isdigit():
                pad = line0.split(b":", 1)[0].split()
                return crc_ok and not (pad and pad.count(b"00") == len(pad)), int(digits)
    return parse_w1_slave(raw.decode("ascii", "replace"))


def judge(
    crc_ok: bool,
    millic: int,
    last_ok_c: float | None,
    min_c: float,
    max_c: float,
) -> tuple[Quality, float | None]:
    """The quality verdict on one raw DS18B20 value, and the temperature if it is usable.

    ``last_ok_c`` is the previous good value from the same probe; 85.000 °C is
    believed only when that was already close to 85.

    >>> judge(True, 85000, 84.5, -55.0, 125.0)
    (<Quality.OK: 'ok'>, 85.0)
    >>> judge(True, 85000, None, -55.0, 125.0)[0]
    <Quality.POWER_ON_RESET: 'power_on_reset'>
    >>> judge(True, 127937, None, -55.0, 125.0)
    (<Quality.OUT_OF_RANGE: 'out_of_range'>, None)
    """
    if not crc_ok:
        return Quality.CRC_ERROR, None
    if millic == POWER_ON_RESET_MILLIC and (
        last_ok_c is None or abs(last_ok_c - 85.0) > RESET_BELIEVABLE_WITHIN_C
    ):
        return Quality.POWER_ON_RESET, None
    temp = millic / 1000.0
    if not min_c <= temp <= max_c:
        return Quality.OUT_OF_RANGE, None
    return Quality.OK, temp


class StuckCheck:
    """Flags a DS18B20 whose raw value has not moved by one LSB for too long.

    A real probe in a live room jitters by at least one LSB (0.0625 °C at 12
    bits) every few readings; a value frozen for ``after`` consecutive
    readings means a stuck probe or bus (a kernel cache, a broken conversion),
    so the readings are reported ``stuck``. ``after = 0`` disables the check.
    Raw millidegrees are compared, so any change of the ``t=`` value counts;
    readings that were not ok (CRC error, reset) neither count nor break a run.

    >>> chk = StuckCheck(after=3)
    >>> [chk.stuck(v) for v in (4062, 4062, 4062, 4062, 4062, 4125, 4125)]
    [False, False, False, True, True, False, False]
    >>> chk.repeats   # 4125 repeated once
    1
    >>> StuckCheck(after=0).stuck(4062), StuckCheck(after=0).stuck(4062)
    (False, False)
    """

    __slots__ = ("_last", "after", "repeats")

    def __init__(self, after: int) -> None:
        self.after = after
        self._last: int | None = None
        self.repeats = 0  # consecutive readings equal to the one before them

    def restore(self, last: int, repeats: int) -> None:
        """Continue a run saved before a restart (see :attr:`Sample.raw`).

        >>> chk = StuckCheck(after=3)
        >>> chk.restore(4062, 2)
        >>> chk.stuck(4062), chk.repeats
        (True, 3)
        """
        self._last, self.repeats = last, max(0, repeats)

    def stuck(self, millic: int) -> bool:
        """Record one ok raw value; True when it is (still) frozen."""
        if millic == self._last:
            self.repeats += 1
        else:
            self._last = millic
            self.repeats = 0
        return 0 < self.after <= self.repeats


def _now_ms() -> int:
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
        clock_ms: Callable[[], int] = _now_ms,
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
        clock_ms: Callable[[], int] = _now_ms,
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


def _list_w1(root: str) -> set[str] | None:
    """The ``28-*`` names in ``root`` (unsorted, type unchecked); None if unlistable."""
    try:
        return {n for n in os.listdir(root) if n.startswith("28-")}  # noqa: PTH208 - hot path
    except OSError:
        return None


class SensorPool:
    """The set of sensors, rediscovered each round and read concurrently.

    Each sensor is read on a worker thread, so one slow or hung probe never
    stalls the others or the main loop (and its watchdog pings). A sensor whose
    previous read is still running is not read again; once that read is older
    than ``read_timeout_s`` the sensor is reported ``disconnected`` each round
    until the read returns. A DS18B20 whose directory disappears is reported
    ``disconnected``; one that appears is picked up (hot-plug).

    ``on_sample`` gets every sample (on the worker thread). ``on_round_done``,
    if given, is called once when the last read started by a round has
    finished: a consumer that collects samples cheaply (a deque) and wakes
    only then handles a round in one go, instead of being woken per probe.

    With ``spread_after_s`` set, a round's reads start one after the other on
    a single worker while they are fast (a fake tree, or a kernel that
    answers from its cache: ~20 µs each, where a thread hand-over per probe
    costs more than the read), and the owner calls :meth:`spread` once
    :meth:`spread_deadline` has passed: reads still waiting then get a worker
    each, so a slow or hung probe delays the others by ``spread_after_s`` at
    most. After a round with a slow read (a real DS18B20 conversion takes
    ~750 ms) every read gets its own worker at once, until a round is fast
    again. Without it, every read always gets its own worker.
    """

    def __init__(
        self,
        *,
        w1_root: str | Path | None,
        host_file: str | Path | None,
        on_sample: Callable[[Sample], None],
        on_round_done: Callable[[], None] | None = None,
        read_timeout_s: float = 5.0,
        retries: int = 2,
        retry_delay_s: float = 0.05,
        min_c: float = -55.0,
        max_c: float = 125.0,
        stuck_after: int = 0,
        clock_ms: Callable[[], int] = _now_ms,
        monotonic: Callable[[], float] = time.monotonic,
        spread_after_s: float | None = None,
    ) -> None:
        self._w1_root = Path(w1_root) if w1_root is not None else None
        self._host = HostSensor(host_file, clock_ms=clock_ms) if host_file is not None else None
        self._on_sample = on_sample
        self._on_round_done = on_round_done
        self._timeout = read_timeout_s
        self._probe_kw = {"retries": retries, "retry_delay_s": retry_delay_s}
        self._min_c, self._max_c = min_c, max_c
        self._stuck_after = stuck_after
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._sensors: dict[str, Sensor] = {}
        self._w1_root_s = str(self._w1_root) if self._w1_root is not None else ""
        self._listed: set[str] = set()  # DS18B20 directories seen by the last full scan
        self._raw_listing: set[str] | None = None  # the "28-" names that scan saw
        self._order: list[tuple[str, Sensor, bool]] = []  # see _sorted()
        self._busy: dict[str, float] = {}  # sensor id -> monotonic start of the running read
        self._round = 0  # id of the latest round
        self._pending = 0  # reads of the latest round still running
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._spread_after = spread_after_s
        self._queued: collections.deque[tuple[str, Sensor, int]] = collections.deque()
        self._spread_at: float | None = None  # when reads still queued get workers of their own
        self._slow = True  # a read took spread_after_s or more: the next round goes wide
        self._stuck_state: dict[str, tuple[int, int]] = {}

    def start(self) -> list[str]:
        """Discover sensors; :class:`NoSensorError` when there is none."""
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sensor")
        self.rescan()
        if not self._sensors:
            raise NoSensorError(*self.places())
        return self.sensor_ids()

    def restore_stuck(self, state: dict[str, tuple[int, int]]) -> None:
        """Stuck-check runs saved before a restart: probe id -> (raw value, repeats).

        Call before :meth:`start`; a probe found later starts from its entry.
        """
        self._stuck_state = dict(state)

    def places(self) -> list[str]:
        where = []
        if self._w1_root is not None:
            where.append(f"{self._w1_root}/28-*/w1_slave")
        if self._host is not None:
            where.append(str(self._host.path))
        return where

    def sensor_ids(self) -> list[str]:
        return [sid for sid, _, _ in self._sorted()]

    def _sorted(self) -> list[tuple[str, Sensor, bool]]:
        """``(id, sensor, is_w1)`` in id order, rebuilt only when a sensor was added."""
        if len(self._order) != len(self._sensors):  # sensors are added, never removed
            self._order = [
                (sid, s, isinstance(s, DS18B20)) for sid, s in sorted(self._sensors.items())
            ]
        return self._order

    def rescan(self) -> tuple[list[str], list[str]]:
        """Pick up new probes; returns ``(appeared, vanished)`` sensor ids."""
        appeared = self._rescan()
        vanished = [sid for sid, s, w1 in self._sorted() if not self._present(sid, s, w1)]
        return appeared, vanished

    def _rescan(self) -> list[str]:
        appeared: list[str] = []
        if self._w1_root is not None:
            # Every round lists the directory (a probe plugged in or pulled shows at the
            # next round), but only a listing that differs from the last full scan's is
            # sorted and type-checked: in steady state one getdents, no stat, no sort.
            raw = _list_w1(self._w1_root_s)
            if raw is None or raw != self._raw_listing:
                names = discover_w1(self._w1_root)
                self._listed = set(names)
                self._raw_listing = raw
                for name in names:
                    if name not in self._sensors:
                        self._sensors[name] = DS18B20(
                            self._w1_root / name,
                            retries=int(self._probe_kw["retries"]),
                            retry_delay_s=float(self._probe_kw["retry_delay_s"]),
                            min_c=self._min_c,
                            max_c=self._max_c,
                            stuck_after=self._stuck_after,
                            clock_ms=self._clock_ms,
                            stuck_state=self._stuck_state.get(name),
                        )
                        appeared.append(name)
        if self._host is not None and HOST_SENSOR_ID not in self._sensors and self._host.present():
            self._sensors[HOST_SENSOR_ID] = self._host
            appeared.append(HOST_SENSOR_ID)
        for sid in appeared:
            log.info("event=sensor_found sensor=%s", sid)
        return appeared

    def _present(self, sid: str, sensor: Sensor, w1: bool) -> bool:
        # A probe found by the directory listing of this round is there: the listing
        # already says so, no stat per probe per round.
        return sid in self._listed if w1 else sensor.present()

    def round(self) -> None:
        """Start one read of every sensor; results go to ``on_sample`` as they finish."""
        if self._executor is None:
            raise RuntimeError("SensorPool.start() was not called")
        self._rescan()
        now = self._monotonic()
        present = [(sid, s, self._present(sid, s, w1)) for sid, s, w1 in self._sorted()]
        timeout = self._timeout
        reads: list[tuple[str, Sensor, int]] = []
        reports: list[tuple[str, str]] = []  # (sensor id, why it is disconnected), in id order
        with self._lock:  # one acquisition per round, not one per sensor
            self._round += 1
            rid = self._round
            busy = self._busy
            for sid, sensor, here in present:
                if not here:
                    reports.append((sid, "device gone"))
                    continue
                started = busy.get(sid)
                if started is None:
                    busy[sid] = now
                    reads.append((sid, sensor, rid))
                elif now - started >= timeout:
                    reports.append((sid, f"read hung for {now - started:.1f}s"))
            # This loop itself counts too: no "done" before every read is started.
            self._pending = 1 + len(reads)
        for sid, why in reports:
            self._on_sample(Sample(sid, self._clock_ms(), None, Quality.DISCONNECTED, why))
        wide, self._slow = self._slow or self._spread_after is None, False
        if wide:
            for read in reads:
                self._executor.submit(self._read, *read)
        elif reads:
            with self._lock:
                self._queued.extend(reads)
                self._spread_at = now + (self._spread_after or 0.0)
            self._executor.submit(self._read_queued)
        self._finish(rid)

    def spread_deadline(self) -> float | None:
        """Monotonic time at which :meth:`spread` is due, None when nothing waits."""
        return self._spread_at if self._queued else None

    def spread(self) -> int:
        """Give every read still queued behind a slow one a worker of its own."""
        with self._lock:
            reads = list(self._queued)
            self._queued.clear()
            self._spread_at = None
        if reads and self._executor is not None:
            self._slow = True
            log.debug("event=sensor_reads_spread waiting=%d", len(reads))
            for read in reads:
                self._executor.submit(self._read, *read)
        return len(reads)

    def _read_queued(self) -> None:
        """Worker thread: read the queued probes one after the other."""
        while True:
            with self._lock:
                if not self._queued:
                    self._spread_at = None
                    return
                read = self._queued.popleft()
            self._read(*read)

    def _read(self, sid: str, sensor: Sensor, rid: int) -> None:
        """Worker thread: read one sensor, report it, and say when the round is complete."""
        t0 = self._monotonic()
        try:
            sample = sensor.read()
        except Exception as exc:  # a broken port must not kill the worker silently
            sample = Sample(sid, self._clock_ms(), None, Quality.DISCONNECTED, repr(exc))
        if self._spread_after is not None and self._monotonic() - t0 >= self._spread_after:
            self._slow = True
        with self._lock:
            started = self._busy.pop(sid, None)
        if started is not None and self._monotonic() - started >= self._timeout:
            # Its round was already reported as hung; a late value is stale.
            log.warning("event=sensor_late sensor=%s", sid)
        else:
            self._on_sample(sample)
        self._finish(rid)

    def _finish(self, rid: int) -> None:
        """One part of round ``rid`` is over; the last one calls ``on_round_done``."""
        with self._lock:
            if rid != self._round:
                return  # a slow read of an older round: collected at the next wake-up
            self._pending -= 1
            last = self._pending == 0
        if last and self._on_round_done is not None:
            self._on_round_done()

    def busy(self) -> int:
        with self._lock:
            return len(self._busy)

    def close(self) -> None:
        """Stop accepting reads; a hung read thread is abandoned, not joined."""
        with self._lock:
            self._queued.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
