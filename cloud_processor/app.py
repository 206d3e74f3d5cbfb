"""Wiring and run loop: Kafka -> rules -> search server, alerts out.

Delivery guarantee of this hop: a Kafka offset is committed only after every
document of the records before it is stored (readings, alert documents and
the one-minute windows they touched) and their alert changes are published,
so a crash, a rebalance or a search outage can repeat records but never skip
one; repeats are harmless because every write is idempotent (``create`` with
a deterministic ``_id`` for readings, replace for windows and alerts).

One loop iteration: fetch a batch, decode it (records that break the
contract go to the dead-letter topic), run the rules, start publishing the
alert changes (Kafka topic and webhook), bulk-write the readings and then the
alert documents, and every ``commit_interval_s`` recompute the dirty windows
and commit. Alert changes are published on their own ordered chain, as soon
as the rules produced them: they do not wait for the bulk writes or the
window flushes queued before them (that would add one or two bulk requests
to every alert's latency), yet a batch's offsets still become committable
only after its changes are published and its documents stored. When the
search server is down the bulk write retries with backoff and nothing else
happens: consumption pauses, nothing is committed, and the
loop carries on by itself when the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from cloud_processor.aggregates import DirtyWindows
from cloud_processor.config import ProcessorConfig
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.metrics import Metrics
from cloud_processor.rules import FleetRules
from cloud_processor.storage import BulkTotals, Storage
from cloud_processor.webhook import WebhookNotifier
from stagekit.health import HealthServer
from stagekit.search import SearchBackend, make_backend
from stagekit.search.indices import IndexNames
from telemetry_contract import (
    AlertChange,
    ContractError,
    DeadLetter,
    DeviceStatus,
    EdgeAlert,
    Gap,
    Reading,
    decode,
    encode,
    encode_alert_change,
    kafka_key,
    kafka_topics,
)
from telemetry_contract.deadletter import dead_letter

__all__ = ["Processor"]

log = logging.getLogger(__name__)

_ENC: Final = msgspec.json.Encoder()
#: Writes (a batch's bulk requests, or a window flush) that may wait on the
#: write chain while the loop fetches and evaluates the next batches.
_WRITE_DEPTH: Final = 4


@dataclass
class _Pending:
    """Prepared batches waiting for one write: while a write runs, the batches
    fetched meanwhile are merged here and go out together in the next one."""

    readings: list[BulkItem] = field(default_factory=list)
    changes: list[AlertChange] = field(default_factory=list)
    offsets: dict[Any, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    notified: asyncio.Task[None] | None = None


class Processor:
    """The cloud processor: ``await start()``, ``await run(stop)``, ``await close()``."""

    def __init__(
        self,
        config: ProcessorConfig,
        *,
        backend: SearchBackend | None = None,
        clock: Callable[[], float] = time.time,
        replay_from_ms: int | None = None,
    ) -> None:
        self.config = config
        self.topics = kafka_topics(config.kafka.topic_prefix)
        self.metrics = Metrics()
        self.names = IndexNames(config.search.index_prefix)
        self.rules = FleetRules(config.rules, config.alerts)
        self.dirty = DirtyWindows()
        self._backend = backend
        self._clock = clock
        self._replay_from = replay_from_ms
        self._pending: dict[Any, int] = {}
        #: (device_id, seq) -> (partition, offset) of readings the rules hold
        #: for reordering: no offset past one of them is committed.
        self._held_at: dict[tuple[str, int], tuple[Any, int]] = {}
        self._positions: dict[Any, int] = {}
        self._lock = asyncio.Lock()
        self._last_commit = time.monotonic()
        self._consumer: Any = None
        self._producer: Any = None
        self._webhook: WebhookNotifier | None = None
        self._http: HealthServer | None = None
        self._joined = False
        self._replay_end: dict[Any, int] = {}
        self._reading_count = 0
        self._given_up = 0  # FleetRules.given_up already counted in the metric
        self._inflight: asyncio.Task[None] | None = None  # the last write on the chain
        self._queued: deque[asyncio.Task[None]] = deque()
        self._open: _Pending | None = None  # the write on the chain not started yet
        self._flushing: asyncio.Task[None] | None = None  # the last scheduled flush
        self._notifying: asyncio.Task[None] | None = None
        self.storage: Storage | None = None

    # -- lifecycle -----------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def ready(self) -> bool:
        """Joined the group and the search server answers."""
        return self._joined and self.storage is not None and self.storage.available is True

    async def start(self) -> None:
        """Connect everything, create templates and topics, rebuild alert state."""
        cfg = self.config
        if self._backend is None:
            self._backend = make_backend(cfg.search)
        m = self.metrics
        self.storage = Storage(
            self._backend,
            self.names,
            bulk_max_docs=cfg.search.bulk_max_docs,
            bulk_concurrency=cfg.search.bulk_concurrency,
            retention_days=cfg.search.retention_days,
            retry_initial_s=cfg.search.retry_initial_s,
            retry_max_s=cfg.search.retry_max_s,
            shards=cfg.search.shards,
            replicas=cfg.search.replicas,
            refresh_interval=cfg.search.refresh_interval,
            on_bulk=lambda seconds, _t: m.bulk_latency.observe(seconds),
            on_state=lambda up: m.search_up.set(1 if up else 0),
        )
        if cfg.http.enabled:
            self._http = HealthServer(
                cfg.http.host,
                cfg.http.port,
                m.render,
                lambda: (self.ready, "ready" if self.ready else "not ready"),
            )
            await self._http.start()
        info = await self.storage.ensure_schema()
        version = info.get("version", {})
        log.info(
            "event=search_connected backend=%s distribution=%s version=%s prefix=%s",
            self._backend.name,
            version.get("distribution", "elasticsearch"),
            version.get("number", "?"),
            self.names.prefix,
        )
        if self.storage.lifecycle == "ilm":
            log.info(
                "event=ilm_policy_applied policy=%sretention retention_days=%d",
                self.names.prefix,
                cfg.search.retention_days,
            )
        else:
            log.warning(
                "event=no_lifecycle_management lifecycle=%s detail=no ILM policy applied; "
                "run 'thermowatch processor retention' daily (retention_days=%d)",
                self.storage.lifecycle,
                cfg.search.retention_days,
            )
        await self._restore()
        from cloud_processor import kafka as kafka_io
        from stagekit.kafka import create_topics

        await create_topics(cfg.kafka, [self.topics.alerts, self.topics.deadletter])
        self._producer = kafka_io.make_producer(cfg.kafka)
        await self._producer.start()
        if cfg.webhook.url:
            self._webhook = WebhookNotifier(
                cfg.webhook, on_result=lambda r: m.webhook.labels(r).inc()
            )
        topics = [self.topics.telemetry, self.topics.edge_alerts, self.topics.status]
        if self._replay_from is None:
            self._consumer = kafka_io.make_consumer(cfg.kafka)
            listener = kafka_io.Revocations(self._on_revoked, self._on_assigned)
            self._consumer.subscribe(topics, listener=listener.listener)
            await self._consumer.start()
        else:
            await self._start_replay(topics, kafka_io)

    async def _start_replay(self, topics: list[str], kafka_io: Any) -> None:
        from aiokafka import TopicPartition

        self._consumer = kafka_io.make_consumer(self.config.kafka, group_id=None)
        await self._consumer.start()
        from stagekit.kafka import partitions_of

        parts = await partitions_of(self.config.kafka, topics)
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        self._consumer.assign(tps)
        starts = await self._consumer.offsets_for_times(dict.fromkeys(tps, self._replay_from))
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            self._consumer.seek(tp, found.offset if found is not None else ends[tp])
            if (found.offset if found is not None else ends[tp]) < ends[tp]:
                self._replay_end[tp] = ends[tp]
        self._joined = True
        log.info("event=replay_started from_ms=%d partitions=%d", self._replay_from, len(tps))

    async def _restore(self) -> None:
        assert self.storage is not None
        since = self._now_ms() - int(self.config.alerts.restore_resolved_s * 1000)
        alerts = await self.storage.load_alerts(since_ms=since)
        self.rules.restore(alerts)
        self.metrics.active_alerts.set(len(self.rules.book.active_alerts()))
        log.info(
            "event=alerts_restored loaded=%d open=%d",
            len(alerts),
            len(self.rules.book.active_alerts()),
        )

    async def close(self) -> None:
        """Flush, commit and disconnect (idempotent)."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._flush_and_commit()
            for task in (*self._queued, self._inflight, self._notifying):
                if task is not None:  # flush failed: do not leave it running
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            self._queued.clear()
            self._inflight = self._notifying = None
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._webhook is not None:
            await self._webhook.close()
            self._webhook = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._backend is not None:
            await self._backend.close()

    async def __aenter__(self) -> Processor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- rebalance -------------------------------------------------------------

    async def _on_revoked(self, revoked: set[Any]) -> None:
        """Store and commit everything consumed before the partitions move on."""
        self._joined = False
        async with self._lock:
            try:
                await self._flush_and_commit()
            except Exception as exc:  # the new owner will see a repeat, never a gap
                log.warning("event=commit_on_revoke_failed error=%s", exc)
            for tp in revoked:
                self._pending.pop(tp, None)
                self._positions.pop(tp, None)
            # Readings held for those partitions stay held here and are judged
            # at expiry; the new owner re-reads them too (the commit stopped
            # before them): the same alert ids, so at worst a repeated webhook.
            self._held_at = {k: v for k, v in self._held_at.items() if v[0] not in revoked}
        log.info("event=partitions_revoked count=%d", len(revoked))

    async def _on_assigned(self, assigned: set[Any]) -> None:
        """Pick up alerts written by the previous owner of these partitions."""
        async with self._lock:
            await self._restore()
        self._joined = True
        log.info("event=partitions_assigned count=%d", len(assigned))

    # -- the loop --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or, in replay mode, until caught up)."""
        stop = stop or asyncio.Event()
        cfg = self.config.kafka
        while not stop.is_set():
            if self._replay_from is not None and self._replay_done():
                break
            batch = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms(), max_records=cfg.max_batch
            )
            async with self._lock:
                await self._handle(batch)
                if time.monotonic() - self._last_commit >= cfg.commit_interval_s and (
                    self._flushing is None or self._flushing.done()
                ):
                    # One flush at a time: while one waits on the chain (a slow
                    # search server), later windows simply join the next one.
                    self._schedule_flush()
        async with self._lock:
            if self._replay_from is not None:
                self._release_held()  # the hole will not be filled: judge what is held
            await self._flush_and_commit()
        if self._replay_from is not None:
            log.info("event=replay_finished")

    def _poll_timeout_ms(self) -> int:
        """Poll no longer than until the reorder stage releases a held reading."""
        timeout = self.config.kafka.poll_timeout_ms
        release = self.rules.next_release_ms()
        if release is not None:
            timeout = max(0, min(timeout, release - self._now_ms()))
        return timeout

    def _release_held(self) -> None:
        changes = self.rules.release_held(self._now_ms())
        self._held_at.clear()
        if changes:
            self._chain(self._write([], changes, {}, [], self._notify(changes)))

    def _commit_floor(self) -> dict[Any, int]:
        """Per partition, the offset of its oldest reading still held for
        reordering: committing past it could lose that reading's alert in a crash
        (its changes are not decided yet). Called when a flush is scheduled: the
        changes of readings released before then are written before the flush."""
        floor: dict[Any, int] = {}
        for key, (tp, offset) in list(self._held_at.items()):
            if not self.rules.is_held(*key):
                del self._held_at[key]
            elif offset < floor.get(tp, offset + 1):
                floor[tp] = offset
        return floor

    def _replay_done(self) -> bool:
        return all(self._positions.get(tp, -1) >= end for tp, end in self._replay_end.items())

    async def _handle(self, batch: dict[Any, list[Any]]) -> None:
        """Prepare a batch (decode, rules) while earlier ones are being written.

        Writes (and window flushes) run one at a time, in batch order, on one
        chain. While a write runs, the loop keeps fetching and evaluating, and
        the batches it prepares meanwhile are merged into the next write (so
        a slow bulk request neither holds back the rules nor multiplies into
        many small ones); the loop waits only when that next write has grown
        to ``_WRITE_DEPTH`` batches' worth of readings. Alert changes are
        published at once, in batch order, on their own chain
        (:meth:`_notify`). A batch's offsets become committable only when its
        write has finished, which includes waiting for its notifications.
        """
        readings, changes, offsets, dead = self._prepare(batch)
        notified = self._notify(changes)
        pending = self._open
        if pending is None:
            pending = self._open = _Pending()
            self._chain(self._write_pending(pending))
        pending.readings += readings
        pending.changes += changes
        pending.offsets.update(offsets)
        pending.dead += dead
        if notified is not None:
            pending.notified = notified  # the last one waits for those before it
        await self._throttle()

    async def _write_pending(self, pending: _Pending) -> None:
        if self._open is pending:
            self._open = None  # batches prepared from now on go to the next write
        await self._write(
            pending.readings, pending.changes, pending.offsets, pending.dead, pending.notified
        )

    def _chain(self, step: Coroutine[Any, Any, None]) -> None:
        """Run ``step`` after everything already on the write chain."""
        prev = self._inflight
        self._inflight = asyncio.create_task(self._after(prev, step))
        self._queued.append(self._inflight)

    @staticmethod
    async def _after(prev: asyncio.Task[None] | None, step: Coroutine[Any, Any, None]) -> None:
        try:
            if prev is not None:
                await prev  # a failure there fails this one too: nothing later is committed
        except BaseException:
            step.close()
            raise
        await step

    async def _throttle(self) -> None:
        """Re-raise a failed write; wait while too many writes are queued."""
        while self._queued and self._queued[0].done():
            self._queued.popleft().result()
        limit = _WRITE_DEPTH * self.config.kafka.max_batch
        while len(self._queued) > _WRITE_DEPTH or (
            self._open is not None and len(self._open.readings) >= limit
        ):
            await self._queued.popleft()

    def _notify(self, changes: list[AlertChange]) -> asyncio.Task[None] | None:
        """Publish ``changes`` after the changes of earlier batches (ordered chain)."""
        if not changes:
            return None
        prev = self._notifying
        self._notifying = asyncio.create_task(self._publish_after(prev, changes))
        return self._notifying

    async def _publish_after(
        self, prev: asyncio.Task[None] | None, changes: list[AlertChange]
    ) -> None:
        if prev is not None:
            await prev  # a failure there fails this one too: the batch is not committed
        await self._publish(changes)

    async def _drain(self) -> None:
        """Wait for every queued write (and re-raise the first error)."""
        self._open = None
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            self._queued.clear()
            await task  # the last one waits for all before it

    async def _write(
        self,
        readings: list[BulkItem],
        changes: list[AlertChange],
        offsets: dict[Any, int],
        dead: list[DeadLetter],
        notified: asyncio.Task[None] | None = None,
    ) -> None:
        if dead and self._producer is not None:
            futures = [
                await self._producer.send(self.topics.deadletter, value=encode(d)) for d in dead
            ]
            await asyncio.gather(*futures)
        await self._store(readings, changes, notified)
        self._pending.update(offsets)

    def _prepare(
        self, batch: dict[Any, list[Any]]
    ) -> tuple[list[BulkItem], list[AlertChange], dict[Any, int], list[DeadLetter]]:
        now_ms = self._now_ms()
        readings: list[BulkItem] = []
        changes: list[AlertChange] = []
        offsets: dict[Any, int] = {}
        dead: list[DeadLetter] = []
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp not in assigned or not records:
                continue  # revoked meanwhile: the new owner reads them again
            for rec in records:
                letter = self._route(rec.value, now_ms, readings, changes, (tp, rec.offset))
                if letter is not None:
                    dead.append(
                        dead_letter(
                            rec.value or b"",
                            letter.reason,
                            str(letter),
                            source_topic=tp.topic,
                            received_ms=now_ms,
                        )[0]
                    )
            offsets[tp] = records[-1].offset + 1
            self._positions[tp] = records[-1].offset + 1
        changes += self.rules.tick(now_ms)
        self.metrics.reorder_held.set(self.rules.held_count)
        if self.rules.given_up > self._given_up:
            self.metrics.reorder_given_up.inc(self.rules.given_up - self._given_up)
            self._given_up = self.rules.given_up
            for device_id, first, last in self.rules.take_given_up():
                log.warning(
                    "event=seqs_given_up device=%s first_seq=%d last_seq=%d count=%d "
                    "(no Gap announced them: lost in transit unless they arrive late)",
                    device_id,
                    first,
                    last,
                    last - first + 1,
                )
        if self._reading_count:
            self.metrics.records.labels("reading").inc(self._reading_count)
            self._reading_count = 0
        for tp in assigned:
            hw = self._consumer.highwater(tp)
            pos = self._positions.get(tp)
            if hw is not None and pos is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(hw - pos, 0))
        return readings, changes, offsets, dead

    def _route(
        self,
        value: bytes | None,
        now_ms: int,
        readings: list[BulkItem],
        changes: list[AlertChange],
        where: tuple[Any, int] | None = None,
    ) -> ContractError | None:
        """Route one record; a record that breaks the contract is returned."""
        m = self.metrics
        try:
            msg = decode(value or b"", now_ms=now_ms)
        except ContractError as exc:
            m.invalid.inc()
            log.warning("event=invalid_record error=%s", exc)
            return exc
        if isinstance(msg, Reading):
            self._reading_count += 1
            loc = self.config.locations.get(msg.device_id)
            readings.append(
                BulkItem(
                    Action.CREATE,
                    self.names.readings_for(msg.ts),
                    reading_id(msg),
                    reading_doc(msg, loc),
                )
            )
            if msg.temp_c is not None and msg.quality.value == "ok":
                self.dirty.add(msg.device_id, msg.site, msg.ts)
            changes += self.rules.on_reading(msg, now_ms=now_ms)
            if where is not None and self.rules.is_held(msg.device_id, msg.seq):
                self._held_at[(msg.device_id, msg.seq)] = where
        elif isinstance(msg, Gap):
            m.records.labels("gap").inc()
            changes += self.rules.on_gap(msg, now_ms=now_ms)
        elif isinstance(msg, EdgeAlert):
            m.records.labels("edge_alert").inc()
            changes += self.rules.on_edge_alert(msg, now_ms=now_ms)
        elif isinstance(msg, DeviceStatus):
            m.records.labels("device_status").inc()
            changes += self.rules.on_status(msg, now_ms=now_ms)
        else:
            m.records.labels("other").inc()
        return None

    def _count(self, index: str, totals: BulkTotals) -> None:
        docs = self.metrics.docs
        docs.labels(index, "stored").inc(totals.stored)
        docs.labels(index, "duplicate").inc(totals.duplicates)
        docs.labels(index, "rejected").inc(totals.rejected)

    async def _store(
        self,
        readings: list[BulkItem],
        changes: list[AlertChange],
        notified: asyncio.Task[None] | None = None,
    ) -> None:
        """Store readings and alert documents; ``notified`` publishes ``changes``
        (started by :meth:`_handle`; published here when None)."""
        assert self.storage is not None
        if readings:
            self._count("readings", await self.storage.write(readings))
        if not changes:
            return
        latest: dict[str, AlertChange] = {}
        for c in changes:
            latest[c.alert.alert_id] = c
        now_ms = self._now_ms()
        items = [
            self.storage.alert_item(
                c.alert, self.config.locations.get(c.alert.device_id), processed_at=now_ms
            )
            for c in latest.values()
        ]
        # Notify first, then store: a crash in between repeats a notification
        # (same alert_id and version, receivers can drop it) instead of losing
        # it, because state rebuilt from the index would consider it sent.
        if notified is not None:
            await notified
        else:
            await self._publish(changes)
        self._count("alerts", await self.storage.write(items, ordered=True))
        for c in changes:
            self.metrics.alerts.labels(c.kind.value, c.alert.rule).inc()
            log.info(
                "event=alert_%s alert_id=%s version=%d severity=%s late=%s notify=%s",
                c.kind.value,
                c.alert.alert_id,
                c.alert.version,
                c.alert.severity.value,
                c.alert.late,
                c.notify,
            )
        self.metrics.active_alerts.set(len(self.rules.book.active_alerts()))

    async def _publish(self, changes: list[AlertChange]) -> None:
        if self._producer is not None and self.config.kafka.publish_alerts:
            futures = [
                await self._producer.send(
                    self.topics.alerts,
                    value=encode_alert_change(c),
                    key=kafka_key(c.alert.device_id),
                )
                for c in changes
            ]
            await asyncio.gather(*futures)
        if self._webhook is not None:
            for c in changes:
                await self._webhook.send(c)

    async def _flush_and_commit(self) -> None:
        """Wait for the write in flight, then flush windows and commit (see _flush_now)."""
        await self._drain()
        dirty, self.dirty = self.dirty, DirtyWindows()
        self._last_commit = time.monotonic()
        await self._flush_now(dirty, self._commit_floor())

    def _schedule_flush(self) -> None:
        """Queue a flush behind the write in flight; the loop meanwhile prepares
        the next batch (whose windows go to a fresh dirty set and whose write
        waits for this flush)."""
        dirty, self.dirty = self.dirty, DirtyWindows()
        self._last_commit = time.monotonic()
        self._open = None  # later batches are written after this flush
        self._chain(self._flush_now(dirty, self._commit_floor()))
        self._flushing = self._inflight

    async def _flush_now(self, dirty: DirtyWindows, floor: dict[Any, int] | None = None) -> None:
        """Recompute dirty windows, write them, then commit the offsets of written
        batches (but none past a reading held for reordering, ``floor``)."""
        assert self.storage is not None
        if len(dirty):
            windows = await self.storage.compute_windows(dirty)
            items = self.storage.aggregate_items(windows, dict(self.config.locations))
            self._count("agg1m", await self.storage.write(items))
        if not self._pending or self._replay_from is not None:
            self._pending.clear()
            return
        from aiokafka.errors import CommitFailedError

        assigned = self._consumer.assignment()
        floor = floor or {}
        offsets = {
            tp: min(off, floor.get(tp, off)) for tp, off in self._pending.items() if tp in assigned
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("event=commit_failed error=%s", exc)
            return
        # A partition capped by a held reading keeps its offset for the next commit.
        self._pending = {tp: off for tp, off in self._pending.items() if off > offsets.get(tp, off)}
        self.metrics.commits.inc()
