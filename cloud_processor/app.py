"""Wiring and run loop: Kafka -> rules -> search server, alerts out.

Delivery guarantee of this hop: a Kafka offset is committed only after every
document of the records before it is stored (readings, alert documents and
the one-minute windows they touched) and their alert changes are published,
so a crash, a rebalance or a search outage can repeat records but never skip
one; repeats are harmless because every write is idempotent (``create`` with
a deterministic ``_id`` for readings, replace for windows and alerts).

One loop iteration: fetch a batch; prepare it (decode, dead letters, rules:
:mod:`~cloud_processor.batches`); start publishing its alert changes at once,
on their own ordered chain (:mod:`~cloud_processor.notifiers`), without
waiting for the bulk writes or window flushes queued before them (that would
add one or two bulk requests to every alert's latency); queue its documents
on the write chain (:mod:`~cloud_processor.chain`, :mod:`~cloud_processor.sink`:
readings, then the alert documents once their changes are published); and
every ``commit_interval_s`` queue a window flush and a commit of what is
stored (:mod:`~cloud_processor.offsets`). When the search server is
down the bulk write retries with backoff and nothing else happens:
consumption pauses, nothing is committed, and the loop carries on by itself
when the server answers again.

The adapters come in through the constructor (:mod:`~cloud_processor.ports`);
:func:`cloud_processor.factory.build_processor` builds the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from cloud_processor.batches import BatchPreparer
from cloud_processor.chain import WriteChain
from cloud_processor.config import ProcessorConfig
from cloud_processor.kafka import kafka_retriable
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import Notifications
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Batch, Notifier, Partition, Producer, Source, Store
from cloud_processor.rules import FleetRules
from cloud_processor.sink import Sink
from cloud_processor.spill import SpillStore
from cloud_processor.storage import StoppedError, unless_stopped
from cloud_processor.windowfold import LiveWindows
from stagekit.backoff import Backoff, sleep_or_stop
from stagekit.health import HealthServer
from stagekit.kafka import warn_if_insecure
from stagekit.search.indices import IndexNames
from telemetry_contract import AlertChange, kafka_topics, printable

__all__ = ["STOP_GRACE_S", "Processor"]

log = logging.getLogger(__name__)

#: Devices (or alerts) handled between two yields to the event loop when a
#: rebalance restores state, so that heartbeats keep going out.
_RESUME_CHUNK = 5000

#: Once told to stop, how long the last writes may take (the search server
#: may be down); what they leave is read again at the next start.
STOP_GRACE_S = 4.0


async def _nothing() -> None:
    """Nothing to undo: a feed whose start failed has already let go of its consumer."""


class Processor:
    """The cloud processor: ``await start()``, ``await run(stop)``, ``await close()``."""

    def __init__(
        self,
        config: ProcessorConfig,
        *,
        source: Source,
        producer: Producer,
        storage: Store,
        notifiers: Sequence[Notifier] = (),
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.topics = kafka_topics(config.kafka.topic_prefix)
        self.metrics = metrics or Metrics()
        self.names = IndexNames(config.search.index_prefix)
        spill = config.rules.state_spill_dir
        self._spill = SpillStore(spill) if spill else None  # opened at the first compaction
        self.rules = FleetRules(config.rules, config.alerts, records=self._spill)
        self.source = source
        self.producer = producer
        self.storage = storage
        self.offsets = Offsets()
        self.notifications = Notifications(notifiers)
        hold_s = config.aggregates.live_hold_s
        self.live = LiveWindows[Partition](hold_ms=int(hold_s * 1000)) if hold_s > 0 else None
        self.batches = BatchPreparer(
            rules=self.rules,
            names=self.names,
            locations=config.locations,
            source=source,
            offsets=self.offsets,
            metrics=self.metrics,
            recompute_window_s=config.aggregates.recompute_window_s,
            live=self.live,
        )
        self.sink = Sink(
            storage=storage,
            producer=producer,
            deadletter_topic=self.topics.deadletter,
            notifications=self.notifications,
            offsets=self.offsets,
            rules=self.rules,
            locations=config.locations,
            metrics=self.metrics,
            now_ms=self._now_ms,
            live=self.live,
        )
        self.writes = WriteChain(self.sink.write, max_batch=config.kafka.max_batch)
        self._clock = clock
        self._replay = source.replay_from_ms is not None
        self._lock = asyncio.Lock()
        self._last_commit = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None  # the last scheduled flush
        self._resuming: asyncio.Task[None] | None = None  # the last assignment's resume
        self._http: HealthServer | None = None
        self._joined = False
        self._consuming = False

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def ready(self) -> bool:
        """Joined the group and the search server answers."""
        return self._joined and self.storage.available is True

    # -- lifecycle -----------------------------------------------------------

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Ensure the schema, rebuild alert state, create topics, connect.

        While the search server is down this waits for it; when ``stop`` is
        set meanwhile it raises :class:`~cloud_processor.storage.StoppedError`.
        """
        cfg, m = self.config, self.metrics
        warn_if_insecure(cfg.kafka, log)
        if cfg.http.enabled:
            self._http = HealthServer(
                cfg.http.host,
                cfg.http.port,
                m.render,
                lambda: (self.ready, "ready" if self.ready else "not ready"),
            )
            await self._http.start()
        if insecure := cfg.search.insecure():
            log.warning(
                "event=search_insecure url=%s detail=%s",
                cfg.search.shown(),
                "; ".join(insecure),
            )
        info = await self.storage.ensure_schema(stop=stop)
        version = info.get("version", {})
        log.info(
            "event=search_connected backend=%s distribution=%s version=%s prefix=%s",
            self.storage.backend_name,
            version.get("distribution", "elasticsearch"),
            version.get("number", "?"),
            self.names.prefix,
        )
        if self.storage.lifecycle != "none":
            log.info(
                "event=lifecycle_policy_applied lifecycle=%s policy=%s retention_days=%d",
                self.storage.lifecycle,
                self.storage.policy,
                cfg.search.retention_days,
            )
        else:
            log.warning(
                "event=no_lifecycle_management lifecycle=%s detail=the cluster has neither "
                "ILM nor ISM; run 'thermowatch processor retention' daily (retention_days=%d)",
                self.storage.lifecycle,
                cfg.search.retention_days,
            )
        await self._restore(stop)
        await self._connect("producer", self.producer.start, self.producer.stop, stop)
        # The webhook's feed reads before we write; it joins its own group on
        # the alerts topic, so it waits out a Kafka that is away like the others.
        await self._connect("feed", self.notifications.start, _nothing, stop)
        await self._connect(
            "consumer",
            lambda: self.source.start(self._on_revoked, self._on_assigned),
            self.source.stop,
            stop,
        )
        self._consuming = True
        if self._replay:
            self.offsets.replay_end = dict(self.source.end_offsets)
            self._joined = True

    async def _connect(
        self,
        what: str,
        start: Callable[[], Awaitable[None]],
        undo: Callable[[], Awaitable[None]],
        stop: asyncio.Event | None,
    ) -> None:
        """``start()`` a Kafka client, retrying while Kafka is unreachable.

        The same policy as the search server's (``search.retry_initial_s`` up
        to ``retry_max_s``, jittered), one log line per retry; raises
        :class:`~cloud_processor.storage.StoppedError` as soon as ``stop`` is set.
        """
        s = self.config.search
        backoff = Backoff(s.retry_initial_s, max(s.retry_max_s, s.retry_initial_s), jitter="equal")
        while True:
            try:
                await unless_stopped(f"Kafka ({what})", start(), stop)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await undo()  # a half-started client: start afresh
                if isinstance(exc, StoppedError) or not kafka_retriable(exc):
                    raise
                wait = backoff.next()
                log.warning(
                    "event=kafka_retry op=%s attempt=%d delay_s=%.2f error=%s",
                    what,
                    backoff.attempts,
                    wait,
                    printable(str(exc) or type(exc).__name__, 300),
                )
                if await sleep_or_stop(wait, stop):
                    raise StoppedError(f"stopped while Kafka is unreachable ({what})") from exc
                continue
            if backoff.attempts:
                log.info("event=kafka_connected op=%s attempts=%d", what, backoff.attempts)
            return

    async def _restore(
        self, stop: asyncio.Event | None = None, owns: Callable[[str], bool] | None = None
    ) -> None:
        """Load the alerts of the devices ``owns`` says are this member's (None: all)."""
        since = self._now_ms() - int(self.config.alerts.restore_resolved_s * 1000)
        alerts = await self.storage.load_alerts(since_ms=since, stop=stop)
        loaded = len(alerts)
        if owns is not None:
            alerts = [a for a in alerts if owns(a.device_id)]
        for i in range(0, len(alerts), _RESUME_CHUNK):  # the loop heartbeats in between
            self.rules.restore(alerts[i : i + _RESUME_CHUNK], now_ms=self._now_ms())
            await asyncio.sleep(0)
        active = self.rules.book.open_count
        self.metrics.active_alerts.set(active)
        log.info("event=alerts_restored loaded=%d kept=%d open=%d", loaded, len(alerts), active)

    async def close(self) -> None:
        """Flush, commit and disconnect (idempotent; after :meth:`abandon`: disconnect)."""
        if self._resuming is not None:
            self._resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resuming
            self._resuming = None
        if self._consuming:
            self._consuming = False
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._flush_and_commit()
            await self.writes.cancel()  # the flush failed: do not leave them running
            await self.notifications.cancel()
        await self.source.stop()
        await self.producer.stop()
        await self.notifications.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.storage.close()
        if self._spill is not None:
            self._spill.close()

    async def abandon(self) -> None:
        """Cancel the writes in flight, commit nothing more (a stop cut short):
        their records are read again at the next start."""
        self._consuming = False
        await self.writes.cancel()
        await self.notifications.cancel()

    # -- rebalance -------------------------------------------------------------

    async def _on_revoked(self, revoked: set[Partition]) -> None:
        """Store and commit everything consumed before the partitions move on."""
        self._joined = False
        if self._resuming is not None:
            self._resuming.cancel()  # for the partitions of before: the next assignment's
        async with self._lock:
            try:
                await self._flush_and_commit()
            except Exception as exc:  # the new owner will see a repeat, never a gap
                log.warning("event=commit_on_revoke_failed error=%s", exc)
            self.offsets.revoke(revoked)
            if self.live is not None:
                self.live.revoked(revoked)
        log.info("event=partitions_revoked count=%d", len(revoked))

    async def _on_assigned(self, assigned: set[Partition]) -> None:
        """Let go of the devices whose partitions went to another member, and
        pick up the alerts written by the previous owners of these partitions;
        then, in the background, the devices heard from lately (:meth:`_resume`)."""
        async with self._lock:
            owns = self.source.owner()
            handed = self.rules.hand_over(owns)
            await self._restore(owns=owns)
        self._joined = True
        log.info("event=partitions_assigned count=%d devices_handed_over=%d", len(assigned), handed)
        if self._resuming is not None:
            self._resuming.cancel()
        self._resuming = asyncio.create_task(self._resume(), name="resume-devices")

    async def _resume(self) -> None:
        """Watch the devices of this member's partitions heard from lately that
        it knows nothing of (see :meth:`FleetRules.resume`): their newest
        windows of the longest ``stale_after_s`` plus a minute.

        Outside the rebalance callback and a chunk at a time, so that the
        event loop keeps heartbeating: at 100,000 devices this is seconds of
        work, and a callback that long gets the member thrown out of the
        group (``session_timeout_ms``). A device heard from meanwhile is
        simply known by then; a failure only costs this catch-up (logged)."""
        try:
            now = self._now_ms()
            since = now - int((self.config.rules.longest_stale_s() + 60) * 1000)
            last = await self.storage.load_last_heard(since_ms=since)
            resumed = 0
            for i in range(0, len(last), _RESUME_CHUNK):
                async with self._lock:
                    resumed += self.rules.resume(
                        last[i : i + _RESUME_CHUNK], keep=self.source.owner(), now_ms=now
                    )
                await asyncio.sleep(0)
            log.info("event=devices_resumed found=%d resumed=%d", len(last), resumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not fatal: those devices go stale once heard from
            log.warning("event=devices_resume_failed error=%s", exc)

    # -- the loop --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or, in replay mode, until caught up)."""
        stop = stop or asyncio.Event()
        cfg = self.config.kafka
        while not stop.is_set():
            if self._replay and self.offsets.replay_done():
                break
            batch = await self.source.getmany(
                timeout_ms=self.poll_timeout_ms(), max_records=cfg.max_batch
            )
            async with self._lock:
                await self.handle(batch)
                if time.monotonic() - self._last_commit >= cfg.commit_interval_s and (
                    self._flushing is None or self._flushing.done()
                ):
                    # One flush at a time: while one waits on the chain (a slow
                    # search server), later windows simply join the next one.
                    self._schedule_flush()
        async with self._lock:
            if self._replay:
                self._release_held()  # the hole will not be filled: judge what is held
            await self._flush_and_commit()
        if self._replay:
            log.info("event=replay_finished")

    def poll_timeout_ms(self) -> int:
        """Poll no longer than until the reorder stage releases a held reading."""
        timeout = self.config.kafka.poll_timeout_ms
        release = self.rules.next_release_ms()
        if release is not None:
            timeout = max(0, min(timeout, release - self._now_ms()))
        return timeout

    async def handle(self, batch: Batch) -> None:
        """Prepare a batch (decode, rules) while earlier ones are being written.

        Its alert changes are published at once, in batch order; its documents
        join the next write on the chain (:mod:`~cloud_processor.chain`), and
        its offsets become committable when that write has finished, which
        includes waiting for its notifications. Waits only when too many
        writes are queued; re-raises a failed write.
        """
        prepared = self.batches.prepare(batch, self._now_ms())
        self.writes.add(prepared, self.notifications.publish(prepared.changes))
        await self.writes.throttle()

    def _release_held(self) -> None:
        changes = self.rules.release_held(self._now_ms())
        self.offsets.release_all()
        if changes:
            notified = self.notifications.publish(changes)
            self.writes.then(self._store_changes(changes, notified))

    async def _store_changes(
        self, changes: list[AlertChange], notified: asyncio.Task[None] | None
    ) -> None:
        await self.sink.store([], changes, notified)

    def commit_floor(self) -> dict[Partition, int]:
        """Per partition, the offset of its oldest reading still held for
        reordering: committing past it could lose that reading's alert in a crash
        (its changes are not decided yet). Called when a flush is scheduled: the
        changes of readings released before then are written before the flush."""
        return self.offsets.floor(self.rules.is_held)

    async def _flush_and_commit(self) -> None:
        """Wait for the writes in flight, then flush windows and commit (see _flush)."""
        await self.writes.drain()
        self._last_commit = time.monotonic()
        await self._flush(self.commit_floor())

    def _schedule_flush(self) -> None:
        """Queue a flush behind the write in flight; the loop meanwhile prepares
        the next batch (whose write, and the windows it touches, wait for this
        flush)."""
        self._last_commit = time.monotonic()
        self._flushing = self.writes.then(self._flush(self.commit_floor()))

    async def _flush(self, floor: dict[Partition, int]) -> None:
        """Write the windows the writes before it touched, then commit the
        offsets of written batches (but none past a reading held for
        reordering, ``floor``)."""
        await self.sink.write_windows()
        if not self.offsets.pending or self._replay:
            self.offsets.pending.clear()
            return
        offsets = self.offsets.to_commit(self.source.assignment(), floor)
        if offsets and await self.source.commit(offsets):
            self.offsets.committed(offsets)
            if self.live is not None:
                self.live.committed(offsets)
            self.metrics.commits.inc()
