"""Every sensor of the device, rediscovered each round and read concurrently.

A hung probe (a stuck 1-Wire bus) never stalls the others nor the agent's
main loop; a probe plugged in or pulled out shows at the next round.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_agent.errors import NoSensorError
from edge_agent.sensors import (
    DS18B20,
    HOST_SENSOR_ID,
    HostSensor,
    Sample,
    Sensor,
    discover_w1,
    now_ms,
)
from telemetry_contract import Quality

__all__ = ["SensorPool"]

log = logging.getLogger(__name__)


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
    answers from its cache, where a thread hand-over per probe costs more
    than the read), and the owner calls :meth:`spread` once
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
        clock_ms: Callable[[], int] = now_ms,
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

    def add(self, sensor: Sensor) -> None:
        """Read ``sensor`` too from the next round on (one that discovery does not find).

        Any :class:`~edge_agent.sensors.Sensor` will do: another kind of probe,
        or a test's fake (a probe that hangs, say).
        """
        self._sensors[sensor.sensor_id] = sensor

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
