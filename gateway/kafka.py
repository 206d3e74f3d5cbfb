"""Kafka adapter: an idempotent aiokafka producer that retries a record until it is written.

Delivery guarantee of this hop: the ``on_written`` callback fires for a
submitted record only once Kafka acknowledged it with ``acks=all``; until then
the record is retried, with backoff, for as long as it takes. The idempotent
producer keeps one partition's records in order across its own retries;
records are keyed by device id, so one device's records stay in one partition
(the Java client's murmur2 partitioner, as every other producer uses).

For throughput the sink builds the batches itself (``create_batch`` /
``send_batch``): per record that costs a fraction of ``send()``, which matters
because the MQTT client shares the interpreter with it. Records submitted
while a batch is being sent form the next one; ``kafka.linger_ms`` bounds how
long a lone record waits for company.

Retry delays come from :class:`stagekit.backoff.Backoff`: 0.2 s doubling up
to ``kafka.retry_backoff_max_s``. A failed write waits on the sink's one write
backoff (reset by the next confirmed batch); connecting and creating topics
retry until Kafka answers, and stop waiting as soon as :meth:`KafkaSink.stop`
is called.

Everything here must run inside the event loop (aiokafka clients bind to the
running loop when created).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.bridge import KafkaRecord
from gateway.config import KafkaSettings
from gateway.metrics import Metrics
from gateway.ports import OnWritten
from stagekit.backoff import Backoff, sleep_or_stop
from stagekit.kafka import TopicError, create_topics
from stagekit.kafkapace import pace_metadata, quiet_client_logs
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import KafkaTopics

__all__ = ["KafkaSetupError", "KafkaSink", "kafka_client_options", "make_producer"]

log = logging.getLogger(__name__)

_INITIAL_BACKOFF_S: Final = 0.2
#: With this many records queued, flush at once instead of lingering.
_EAGER_BATCH: Final = 500
_PARTITION_CACHE_MAX: Final = 100_000
#: While Kafka stays away, one summary line per kind of failure this often.
_SUMMARY_EVERY_S: Final = 60.0


def _partitioner() -> Callable[[bytes, list[int], list[int]], int]:
    from aiokafka.partitioner import DefaultPartitioner

    return DefaultPartitioner()  # type: ignore[no-any-return]


class _LazyPartitioner:
    """The Java client's murmur2 partitioner, imported on first use (no I/O at import)."""

    _impl: Callable[[bytes, list[int], list[int]], int] | None = None

    def __call__(self, key: bytes, partitions: list[int], available: list[int]) -> int:
        if self._impl is None:
            self._impl = _partitioner()
        return self._impl(key, partitions, available)


_PARTITIONER: Final = _LazyPartitioner()


class KafkaSetupError(RuntimeError):
    """Kafka refused the gateway's set-up (e.g. a topic it cannot create): fatal."""

    retriable = False


def kafka_client_options(settings: KafkaSettings) -> dict[str, Any]:
    """The producer's connection options: the shared block's (TLS, SASL) and the request timeout."""
    return {**settings.client_options(), "request_timeout_ms": settings.request_timeout_ms}


def make_producer(settings: KafkaSettings) -> Any:
    """The sink's producer: idempotent, ``acks=all`` (create it inside the event loop)."""
    from aiokafka import AIOKafkaProducer

    s = settings
    producer = AIOKafkaProducer(
        **kafka_client_options(s),
        enable_idempotence=True,
        acks="all",
        compression_type=None if s.compression == "none" else s.compression,
        linger_ms=s.linger_ms,
        max_batch_size=s.max_batch_size,
        retry_backoff_ms=500,
    )
    # While Kafka is away aiokafka would retry metadata with no pause (a core,
    # a log line per try): pace it with the sink's backoff, quiet its loggers.
    pace_metadata(producer.client, lambda: retry_backoff(s), min_interval_s=0.5)
    quiet_client_logs()
    return producer


def retry_backoff(settings: KafkaSettings) -> Backoff:
    """The gateway's Kafka retry delays: 0.2 s doubling up to ``kafka.retry_backoff_max_s``,
    jittered so that gateways that lost the same Kafka do not come back in step."""
    # The cap also caps the first delay (a cap below 0.2 s is a test's).
    cap = settings.retry_backoff_max_s
    return Backoff(min(_INITIAL_BACKOFF_S, cap), cap, jitter="equal")


@dataclass(slots=True)
class _Item:
    record: KafkaRecord
    token: Any
    serial: int
    submitted: float
    attempts: int = 0


class KafkaSink:
    """Writes :class:`~gateway.bridge.KafkaRecord` objects; see the module docstring.

    ``producer_factory`` makes a new (unstarted) producer each time one is
    needed: at start and after a fatal error (default: :func:`make_producer`;
    tests pass fakes).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: KafkaTopics,
        metrics: Metrics,
        *,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._metrics = metrics
        self._new_producer = producer_factory or (lambda: make_producer(settings))
        self._on_written: OnWritten = _not_started
        self._producer: Any = None
        self._producer_gen = 0
        self._lock = asyncio.Lock()
        self._closed = False
        self._closing = asyncio.Event()  # set with _closed: ends retry waits at once
        self._healthy = False
        self._queue: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._outstanding: dict[int, float] = {}  # serial -> submit time (monotonic)
        self._serial = 0
        self._flusher: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._partition_cache: dict[tuple[str, int, bytes], int] = {}
        self._write_backoff = self._backoff()
        self._summary = RateLimitedLog(lines=1, per_s=_SUMMARY_EVERY_S)
        self._retired: dict[int, asyncio.Future[None]] = {}
        self._tp_tail: dict[tuple[str, int], asyncio.Task[None]] = {}

    # --- lifecycle ----------------------------------------------------------

    async def start(self, on_written: OnWritten) -> None:
        """Connect (retrying until Kafka answers), create missing topics, start flushing.

        ``on_written(token)`` is called for each submitted record once Kafka
        confirmed it. Returns early, without flushing, if :meth:`stop` is called
        meanwhile; raises :class:`KafkaSetupError` if Kafka refuses a topic.
        """
        self._on_written = on_written
        try:
            await self._ensure_producer()
        except _SinkClosedError:
            return
        if self._settings.create_topics and not await self._retry(
            "create_topics", self.ensure_topics
        ):
            return
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        """Stop flushing and close the producer (idempotent). Unwritten records are dropped
        here, which is safe: their MQTT messages were not acknowledged."""
        self._closed = True
        self._closing.set()
        tasks = [t for t in (self._flusher, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flusher = None
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)
        self._healthy = False

    # --- state --------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Connected, the last write succeeded and no write has been stuck for long."""
        if not self._healthy or self._producer is None:
            return False
        oldest = self.oldest_pending_s()
        return oldest is None or oldest < self._settings.stall_timeout_s

    @property
    def broken(self) -> str | None:
        """Why the flushing task died, if it did (a bug: the process should exit)."""
        task = self._flusher
        if task is None or not task.done() or task.cancelled():
            return None
        exc = task.exception()
        return f"Kafka flusher stopped: {exc!r}" if exc else "Kafka flusher stopped"

    def oldest_pending_s(self) -> float | None:
        """Age in seconds of the oldest record not yet confirmed, if any."""
        if not self._outstanding:
            return None
        return time.monotonic() - min(self._outstanding.values())

    # --- writing ------------------------------------------------------------

    def submit(self, record: KafkaRecord, token: Any) -> None:
        """Queue a record; ``on_written(token)`` is called once Kafka confirmed it."""
        self._serial += 1
        now = time.monotonic()
        self._outstanding[self._serial] = now
        self._queue.append(_Item(record, token, self._serial, now))
        self._wakeup.set()

    async def _flush_forever(self) -> None:
        linger = self._settings.linger_ms / 1000
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if linger and len(self._queue) < _EAGER_BATCH:
                await asyncio.sleep(linger)
            items, self._queue = self._queue, []
            if not items:
                continue
            try:
                producer, gen = await self._ensure_producer()
                await self._send_batches(producer, gen, items)
            except (asyncio.CancelledError, _SinkClosedError):
                raise
            except Exception as exc:
                self._failed(items, exc, self._producer_gen)

    async def _send_batches(self, producer: Any, gen: int, items: list[_Item]) -> None:
        by_tp: dict[tuple[str, int], list[_Item]] = {}
        partitions: dict[str, list[int]] = {}
        for item in items:
            topic, key = item.record.topic, item.record.key
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            by_tp.setdefault((topic, self._partition(topic, key, partitions[topic])), []).append(
                item
            )
        # One task per partition, chained behind that partition's previous one:
        # aiokafka accepts a partition's next batch only once the previous one
        # is drained, and waiting for that partition by partition here would
        # serialise the round trips of all of them.
        for tp, group in by_tp.items():
            task = asyncio.create_task(
                self._send_partition(producer, gen, tp, group, self._tp_tail.get(tp))
            )
            self._tp_tail[tp] = task
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send_partition(
        self,
        producer: Any,
        gen: int,
        tp: tuple[str, int],
        group: list[_Item],
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})  # keeps the partition's order
        topic, partition = tp
        sent = 0  # group[:sent] is handed to _send_one (which owns its failures)
        try:
            batch = producer.create_batch()
            members: list[_Item] = []
            for item in group:
                rec = item.record
                while (
                    batch.append(
                        key=rec.key, value=rec.value, timestamp=None, headers=list(rec.headers)
                    )
                    is None
                ):
                    if not members:  # cannot happen: a record is far below max_batch_size
                        raise RuntimeError(f"record of {len(rec.value)} bytes fits no batch")
                    sent += len(members)
                    await self._send_one(producer, gen, batch, topic, partition, members)
                    batch, members = producer.create_batch(), []
                members.append(item)
            if members:
                sent += len(members)
                await self._send_one(producer, gen, batch, topic, partition, members)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the producer was stopped under us: retry the rest
            self._failed(group[sent:], exc, gen)

    async def _send_one(
        self, producer: Any, gen: int, batch: Any, topic: str, partition: int, items: list[_Item]
    ) -> None:
        # A producer replaced after a fatal error (e.g. OutOfOrderSequenceNumber
        # when Kafka comes back) may never accept this batch: race it with the
        # retirement, or the partition's chain (and its records) would wait forever.
        send = asyncio.ensure_future(producer.send_batch(batch, topic, partition=partition))
        retired = self._retired_future(gen)
        try:
            await asyncio.wait({send, retired}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            send.cancel()
            raise
        if not send.done():
            send.add_done_callback(_discard_outcome)
            send.cancel()
            self._failed(items, _BatchCancelledError("producer replaced"), gen)
            return
        try:
            future = send.result()
        except asyncio.CancelledError:
            self._failed(items, _BatchCancelledError("batch cancelled"), gen)
            return
        except Exception as exc:
            self._failed(items, exc, gen)
            return
        task = asyncio.create_task(self._confirm(future, gen, items))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _confirm(self, future: Any, gen: int, items: list[_Item]) -> None:
        # Wait for the batch, or for its producer to be replaced: a producer that
        # is stopped after a fatal error may never resolve its pending batches.
        retired = self._retired_future(gen)
        done, _ = await asyncio.wait({future, retired}, return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            # The stopped producer fails the batch later; its records are sent
            # again here, so that outcome is nobody's: retrieve it, or asyncio
            # logs "Future exception was never retrieved".
            future.add_done_callback(_discard_outcome)
            self._failed(items, _BatchCancelledError("producer replaced"), gen)
            return
        if future.cancelled():
            # aiokafka cancelled the batch (its producer stopped): send it again.
            self._failed(items, _BatchCancelledError("batch cancelled"), gen)
            return
        exc = future.exception()
        if exc is not None:
            self._failed(items, exc, gen)
            return
        now = time.monotonic()
        observe = self._metrics.produce_seconds.observe
        if not self._healthy:
            log.info("event=kafka_write_ok_again topic=%s", items[0].record.topic)
        self._healthy = True
        self._write_backoff.reset()
        for item in items:
            observe(now - item.submitted)
            self._outstanding.pop(item.serial, None)
            self._on_written(item.token)

    def _failed(self, items: list[_Item], exc: BaseException, gen: int) -> None:
        """Retry the records after a backoff; replace the producer after a fatal error."""
        # One line when Kafka turns bad, then a summary a minute (held-back
        # failures as suppressed=N); each failure is a metric.
        was_healthy, self._healthy = self._healthy, False
        self._metrics.kafka_errors.labels(type(exc).__name__).inc()
        delay = self._write_backoff.next()
        self._log_retry("write", exc, delay, first=was_healthy)
        if self._closed:
            return
        task = asyncio.create_task(
            self._retry_later(items, delay, None if _retriable(exc) else gen)
        )
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _retry_later(self, items: list[_Item], delay: float, reset_gen: int | None) -> None:
        if reset_gen is not None:
            # The producer may be wedged (e.g. out-of-order sequence after an
            # expired batch): detach it now, stop it in the background, and let
            # the retry start a fresh one.
            self._detach_producer(reset_gen)
        await asyncio.sleep(delay)
        for item in items:
            item.attempts += 1
        self._queue[:0] = items  # ahead of newer records: keeps a device's order
        self._wakeup.set()

    def _partition(self, topic: str, key: bytes | None, partitions: list[int]) -> int:
        if key is None:
            return random.choice(partitions)  # noqa: S311 - load spreading, not security
        cache_key = (topic, len(partitions), key)
        cached = self._partition_cache.get(cache_key)
        if cached is not None and cached in partitions:
            return cached
        if len(self._partition_cache) > _PARTITION_CACHE_MAX:
            self._partition_cache.clear()
        partition = int(_PARTITIONER(key, partitions, partitions))
        self._partition_cache[cache_key] = partition
        return partition

    async def ensure_topics(self) -> None:
        """Create the gateway's topics that do not exist yet."""
        try:
            await create_topics(
                self._settings,
                self._topics.all(),
                partitions=self._settings.partitions,
                replication=self._settings.replication_factor,
                request_timeout_ms=self._settings.request_timeout_ms,
            )
        except TopicError as exc:
            raise KafkaSetupError(str(exc)) from exc

    # --- producer management ------------------------------------------------

    async def _ensure_producer(self) -> tuple[Any, int]:
        producer = self._producer
        if producer is not None:
            return producer, self._producer_gen
        async with self._lock:
            backoff = self._backoff()
            while self._producer is None:
                if self._closed:
                    raise _SinkClosedError("Kafka sink is closed")
                candidate = self._new_producer()
                try:
                    await candidate.start()
                except asyncio.CancelledError:
                    await _stop_quietly(candidate)
                    raise
                except Exception as exc:
                    await _stop_quietly(candidate)
                    self._metrics.kafka_errors.labels(type(exc).__name__).inc()
                    delay = backoff.next()
                    self._log_retry("connect", exc, delay, first=backoff.attempts == 1)
                    await sleep_or_stop(delay, self._closing)
                    continue
                self._producer = candidate
                self._producer_gen += 1
                self._healthy = True
                if self._producer_gen > 1:
                    self._metrics.reconnects.labels("kafka").inc()
                log.info(
                    "event=kafka_connected servers=%s producer_gen=%d",
                    ",".join(self._settings.servers),
                    self._producer_gen,
                )
            return self._producer, self._producer_gen

    def _retired_future(self, gen: int) -> asyncio.Future[None]:
        """Resolved when producer generation ``gen`` is replaced."""
        future = self._retired.get(gen)
        if future is None:
            future = self._retired[gen] = asyncio.get_running_loop().create_future()
            if gen != self._producer_gen:
                future.set_result(None)
        return future

    def _detach_producer(self, gen: int) -> None:
        if gen != self._producer_gen or self._producer is None:
            return  # already replaced
        producer, self._producer = self._producer, None
        retired = self._retired.pop(gen, None)
        if retired is not None and not retired.done():
            retired.set_result(None)
        log.warning("event=kafka_producer_reset producer_gen=%d", gen)
        task = asyncio.create_task(_stop_quietly(producer, limit_s=30.0))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _backoff(self) -> Backoff:
        return retry_backoff(self._settings)

    def _log_retry(self, what: str, exc: BaseException, delay: float, *, first: bool) -> None:
        """A warning when ``what`` starts failing, then a summary a minute (``suppressed=N``)."""
        msg = "event=kafka_%s_%s servers=%s records_pending=%d error=%r retry_in_s=%.1f"
        state = "failed" if first else "still_failing"
        args = (what, state, ",".join(self._settings.servers), len(self._outstanding), exc, delay)
        if first:
            self._summary.take(what)  # the summary's minute starts now
            log.warning(msg, *args)
        else:
            self._summary.log(log, logging.WARNING, msg, *args, key=what)

    async def _retry(self, what: str, action: Callable[[], Awaitable[None]]) -> bool:
        """Run ``action`` until it succeeds (True) or the sink is stopped (False)."""
        backoff = self._backoff()
        while not self._closed:
            try:
                await action()
                return True
            except (asyncio.CancelledError, KafkaSetupError):
                raise
            except Exception as exc:
                self._metrics.kafka_errors.labels(type(exc).__name__).inc()
                delay = backoff.next()
                self._log_retry(what, exc, delay, first=backoff.attempts == 1)
                await sleep_or_stop(delay, self._closing)
        return False


def _not_started(token: Any) -> None:
    raise RuntimeError(f"KafkaSink wrote {token!r} before start()")


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    """Done callback for a future nobody awaits any more: mark its exception seen."""
    if not future.cancelled():
        future.exception()


class _BatchCancelledError(RuntimeError):
    """aiokafka cancelled a batch (its producer was stopped); retried like an error."""

    retriable = True


class _SinkClosedError(RuntimeError):
    """The sink was stopped while a flush waited for a producer."""


def _retriable(exc: BaseException) -> bool:
    """Worth retrying with the same producer? Unknown errors get a fresh one."""
    # aiokafka does not flag its KafkaTimeoutError (metadata or buffer wait while
    # Kafka is away) as retriable, but a new producer would wait the same way.
    return bool(getattr(exc, "retriable", False)) or type(exc).__name__ == "KafkaTimeoutError"


async def _stop_quietly(producer: Any, limit_s: float | None = None) -> None:
    try:
        await asyncio.wait_for(producer.stop(), limit_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # includes TimeoutError: the old producer is abandoned
        log.debug("event=kafka_producer_stop_error error=%r", exc)
