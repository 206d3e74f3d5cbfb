"""Alert notifications off the write path: bounded queue, coalescing, rate limits.

:class:`NotificationDispatcher` wraps a slow notifier (the webhook); :meth:`offer`
only enqueues. The processor feeds it from the Kafka alerts topic
(:class:`~cloud_processor.feed.AlertFeed`, :meth:`offer` with a ``done``
callback), never from its write path. ``webhook.concurrency`` asyncio tasks
(the workers) take the queue from there, each one notification at a time:
a slow receiver costs its round trip once per worker, not once per change.
Changes of one key never overtake each other: a key with a notification in
flight (or an earlier one still waiting) is passed over until that one is done.

- **Coalescing.** The queue holds at most one notification per alert key
  (``(device_id, rule)``, :attr:`telemetry_contract.Alert.key`). A change of a
  key that is already waiting replaces it (counted ``coalesced``), so what
  goes out carries the latest state. A key notified less than ``coalesce_s``
  ago waits until that much time has passed: one key yields at most one
  notification per ``coalesce_s`` (the first change of a quiet key goes out at
  once). ``coalesce_s = 0`` turns coalescing off: every change is its own
  notification, in order.
- **Rate limits.** A token bucket per device (``device_rate_per_s``,
  ``device_burst``) and one for all (``rate_per_s``, ``burst``). A due
  notification without a token waits in the queue (counted ``rate_limited``
  once, and it keeps coalescing meanwhile): nothing is dropped for the rate,
  only intermediate states are superseded, so the receiver always ends up with
  the latest state of every alert.
- **Overflow.** At most ``queue_max`` keys wait; a change of another key is
  dropped, counted ``overflow`` and logged (one line per interval at most).
- **Shutdown.** :meth:`close` sends what is waiting right away (ignoring the
  window and the rate limits: one per key at most) for up to
  ``drain_timeout_s``, then cancels the worker; what is still waiting then (and
  a POST cut short) is counted ``dropped`` and logged.
- **Resolution.** :meth:`offer` takes an optional ``done`` callback, called
  once the change needs nothing more: handed to the notifier (``notified``,
  which includes a change the webhook gave up on after its attempts: the
  webhook counts those, ``webhook_total{result="failed"}``; ``error`` counts a
  notifier that raised), superseded by a later change of its key that
  was delivered (``coalesced``: called with the successor's), or dropped on a
  full queue (``overflow``). It is never called for a change ``dropped`` at
  shutdown or offered after :meth:`close`: :class:`~cloud_processor.feed.AlertFeed`
  commits an alerts-topic offset only below the first unresolved change, so
  those are read again from the topic after a restart.

Every offered change ends in exactly one result, so
``offered == coalesced + overflow + notified + error + dropped + pending``
(:attr:`NotificationDispatcher.counts`, and the
``thermowatch_processor_notifications_total{result}`` metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cloud_processor.config import WebhookSettings
from cloud_processor.metrics import Metrics
from cloud_processor.ports import Change, ChangeNotifier
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import IncidentChange

__all__ = ["RESULTS", "NotificationDispatcher", "TokenBucket", "change_id", "change_key"]

log = logging.getLogger(__name__)

#: The results an offered change ends in (plus ``rate_limited``, a delay, not an end).
RESULTS: Final = ("coalesced", "overflow", "notified", "error", "dropped")

#: An alert key (device_id, rule) or an incident's (device or site, incident_id),
#: plus a serial number when coalescing is off.
Key = tuple[str, ...]
#: Called once a change is resolved (see the module docstring).
Done = Callable[[], None]


def change_key(change: Change) -> Key:
    """What coalesces: one alert key, or one incident; its first part is what the
    per-device rate limit counts (an incident's first device, or its site)."""
    if isinstance(change, IncidentChange):
        inc = change.incident
        return (inc.device_ids[0] if inc.device_ids else inc.site, inc.incident_id)
    return change.alert.key


def change_id(change: Change) -> str:
    """``<id>/<version>``: what a receiver drops repeats by (``X-Thermowatch-Change``)."""
    if isinstance(change, IncidentChange):
        return f"{change.incident.incident_id}/{change.incident.version}"
    return f"{change.alert.alert_id}/{change.alert.version}"


class TokenBucket:
    """At most ``rate`` events per second with bursts of ``burst``.

    Hand-written (a dozen lines): the dispatcher must ask *when* a token will
    be there without taking it, to serve other devices meanwhile, which the
    blocking limiters of libraries (aiolimiter) do not offer.

    >>> b = TokenBucket(rate=2.0, burst=2, now=0.0)
    >>> b.take(0.0), b.take(0.0), b.ready_at(0.0)
    (None, None, 0.5)
    >>> b.full(10.0)
    True
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def ready_at(self, now: float) -> float:
        """When one token is there (``now`` if it already is)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return now
        return now + (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        """Use one token (call when :meth:`ready_at` says it is there)."""
        self._refill(now)
        self._tokens -= 1.0

    def full(self, now: float) -> bool:
        """Refilled to ``burst``: the same as a fresh bucket (safe to forget)."""
        self._refill(now)
        return self._tokens >= self.burst


@dataclass(eq=False)  # compared by identity (several may be in flight)
class _Waiting:
    change: Change
    due: float  # not before (the coalescing window of its key)
    base: Key  # its alert key or incident: one in flight at a time
    held: bool = False  # counted rate_limited already
    done: list[Done] = field(default_factory=list)  # resolved with this one

    def resolve(self) -> None:
        done, self.done = self.done, []
        for callback in done:
            callback()


class NotificationDispatcher:
    """A bounded, coalescing, rate-limited queue in front of ``notifier``.

    ``clock`` is monotonic seconds (tests pass a manual one and call
    :meth:`wake` after moving it).
    """

    def __init__(
        self,
        notifier: ChangeNotifier,
        settings: WebhookSettings,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_interval_s: float = 10.0,
    ) -> None:
        self.notifier = notifier
        self.settings = settings
        self.counts: Counter[str] = Counter()
        self._metrics = metrics
        self._clock = clock
        self._waiting: dict[Key, _Waiting] = {}  # insertion order: first come, first served
        self._last_sent: dict[Key, float] = {}
        self._devices: dict[str, TokenBucket] = {}
        self._global = TokenBucket(settings.rate_per_s, settings.burst, clock())
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: list[_Waiting] = []
        self._draining = False
        self._closed = False
        self._serial = 0
        # One line per interval and event; count= says how many happened since.
        self._log = RateLimitedLog(lines=1, per_s=log_interval_s, clock=clock)

    @property
    def pending(self) -> int:
        """Notifications waiting (one per alert key at most), those in flight included."""
        return len(self._waiting) + len(self._in_flight)

    def offer(self, change: Change, done: Done | None = None) -> None:
        """Queue one change: coalesce it, or drop it when the queue is full.

        ``done`` is called once the change is resolved (module docstring).
        """
        self._count("offered")
        if self._closed:
            self._count("dropped")
            if (held := self._log.take("closed")) is not None:
                log.warning("event=notification_dropped reason=closed count=%d", held + 1)
            return
        key: Key = change_key(change)
        base = key
        if not self.settings.coalesce_s:  # coalescing off: every change its own entry
            self._serial += 1
            key = (*key, str(self._serial))
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.change = change
            if done is not None:
                waiting.done.append(done)
            self._count("coalesced")
            return
        if len(self._waiting) >= self.settings.queue_max:
            self._count("overflow")
            if done is not None:
                done()  # deliberately dropped, counted and logged: resolved
            if (held := self._log.take("overflow")) is not None:
                log.warning(
                    "event=notification_overflow dropped=%d queue_max=%d device_id=%s",
                    held + 1,
                    self.settings.queue_max,
                    key[0],
                )
            return
        now = self._clock()
        last = self._last_sent.get(key)
        due = now if last is None else max(now, last + self.settings.coalesce_s)
        self._waiting[key] = _Waiting(change, due, base, done=[] if done is None else [done])
        self._set_pending()
        self._start()
        self.wake()

    async def close(self) -> None:
        """Drain for up to ``drain_timeout_s``, stop the worker, close the notifier."""
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            self._draining = True
            self.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled(), self.settings.drain_timeout_s)
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks = []
            dropped = self.pending
            if dropped:
                self._count("dropped", dropped)
                log.warning(
                    "event=notifications_dropped reason=shutdown count=%d drain_timeout_s=%s",
                    dropped,
                    self.settings.drain_timeout_s,
                )
            self._waiting.clear()
            self._in_flight = []
            self._set_pending()
        await self.notifier.close()

    # -- the worker ------------------------------------------------------------

    def wake(self) -> None:
        """Make the worker look at the queue again (after an offer or a clock move)."""
        self._idle.clear()
        self._wake.set()

    async def settled(self) -> None:
        """Return when nothing is due and nothing is in flight: the queue is
        empty or waits for time to pass."""
        while self._tasks and not all(t.done() for t in self._tasks):
            await self._idle.wait()
            if self._idle.is_set():  # not woken again meanwhile
                return

    def _start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(self.settings.concurrency)]

    async def _run(self) -> None:
        while True:
            now = self._clock()
            key, at = self._next(now)
            if key is None:
                self._wake.clear()
                if not self._in_flight:
                    self._idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if at is None else at - now)
                continue
            waiting = self._waiting.pop(key)
            if not self._draining:
                self._global.take(now)
                self._device(key[0], now).take(now)
            if self.settings.coalesce_s:
                self._last_sent[key] = now
            self._in_flight.append(waiting)
            try:
                await self.notifier.notify([waiting.change])
            except Exception as exc:  # the notifier logs its own; never stop the worker
                self._count("error")
                log.error(
                    "event=notification_failed alert_id=%s error=%s",
                    change_id(waiting.change),
                    type(exc).__name__,
                )
            else:
                self._count("notified")
            self._in_flight.remove(waiting)
            waiting.resolve()
            self._set_pending()
            self._forget(now)
            self.wake()  # its key is free again: another worker may take the next

    def _next(self, now: float) -> tuple[Key | None, float | None]:
        """The key to notify now, or (None, when to look again: None = on wake)."""
        # A key in flight, or passed over above, keeps its later changes waiting.
        blocked = {w.base for w in self._in_flight}
        if self._draining:
            for key, waiting in self._waiting.items():
                if waiting.base not in blocked:
                    return key, None
                blocked.add(waiting.base)
            return None, None
        soonest: float | None = None
        glob = self._global.ready_at(now)
        for key, waiting in self._waiting.items():
            if waiting.base in blocked:
                continue
            blocked.add(waiting.base)
            if waiting.due > now:
                at = waiting.due
            else:
                at = max(glob, self._device(key[0], now).ready_at(now))
                if at <= now:
                    return key, None
                if not waiting.held:
                    waiting.held = True
                    self._count("rate_limited")
                    if (held := self._log.take("rate_limited")) is not None:
                        log.warning(
                            "event=notification_rate_limited count=%d device_id=%s",
                            held + 1,
                            key[0],
                        )
            soonest = at if soonest is None else min(soonest, at)
        return None, soonest

    def _device(self, device_id: str, now: float) -> TokenBucket:
        bucket = self._devices.get(device_id)
        if bucket is None:
            s = self.settings
            bucket = self._devices[device_id] = TokenBucket(
                s.device_rate_per_s, s.device_burst, now
            )
        return bucket

    def _forget(self, now: float) -> None:
        """Bound the per-key and per-device memory: drop what equals a fresh start."""
        limit = self.settings.queue_max
        if len(self._last_sent) > limit:
            window = self.settings.coalesce_s
            self._last_sent = {k: t for k, t in self._last_sent.items() if t + window > now}
        if len(self._devices) > limit:
            self._devices = {d: b for d, b in self._devices.items() if not b.full(now)}

    def _count(self, result: str, n: int = 1) -> None:
        self.counts[result] += n
        if self._metrics is not None:
            self._metrics.notifications.labels(result).inc(n)

    def _set_pending(self) -> None:
        if self._metrics is not None:
            self._metrics.notifications_pending.set(self.pending)
