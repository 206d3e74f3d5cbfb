"""Kafka adapter: the source (consumer group or replay) and the producer of alerts.

Offsets are never committed automatically: :class:`cloud_processor.app.Processor`
commits them after the documents of the records are stored, and again (for
what it has stored) when the group takes partitions away. aiokafka clients
are created in ``start()``, inside the running loop, and imported there.
Topics are created with :mod:`stagekit.kafka`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from cloud_processor.config import KafkaSettings
from cloud_processor.ports import Batch, Partition, Rebalanced
from telemetry_contract import kafka_key

__all__ = [
    "AlertsSource",
    "GroupProtocolError",
    "KafkaProducer",
    "KafkaSource",
    "Revocations",
    "kafka_retriable",
    "make_consumer",
    "make_producer",
]

log = logging.getLogger(__name__)


class GroupProtocolError(RuntimeError):
    """The consumer group's members have no partition assignor in common."""


def kafka_retriable(exc: BaseException) -> bool:
    """True when starting a client again later can succeed (Kafka unreachable, busy).

    >>> from aiokafka.errors import KafkaConnectionError, UnsupportedVersionError
    >>> kafka_retriable(KafkaConnectionError("down")), kafka_retriable(UnsupportedVersionError())
    (True, False)
    """
    from aiokafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError | TimeoutError)


def make_consumer(settings: KafkaSettings, *, group_id: str | None = None) -> Any:
    """An ``AIOKafkaConsumer`` with manual commits (create inside the running loop)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    return AIOKafkaConsumer(
        **settings.client_options(),
        group_id=group_id if group_id is not None else settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_batch,
        session_timeout_ms=settings.session_timeout_ms,
        # The range assignor: a device's telemetry, status and edge alerts are
        # keyed alike into topics of one partition count, and range gives a
        # member the same partition numbers of every such topic (the
        # co-partitioning Kafka Streams relies on), so one processor sees all
        # of a device. aiokafka's default, round robin, may split them.
        # Only one: aiokafka 0.14 sends one JoinGroup per listed assignor
        # (aio-libs/aiokafka#1168, unreleased), each with different metadata,
        # and members joining at once then rebalance each other for minutes.
        partition_assignment_strategy=(RangePartitionAssignor,),
        # Only what producers committed (the gateway may use transactions).
        isolation_level="read_committed",
    )


def make_producer(settings: KafkaSettings) -> Any:
    """An idempotent ``AIOKafkaProducer`` for alert changes (acks=all)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        **{**settings.client_options(), "client_id": f"{settings.client_id}-alerts"},
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )


class Revocations:
    """Rebalance listener calling back into the processor (an aiokafka listener)."""

    def __init__(
        self,
        on_revoked: Callable[[set[Any]], Awaitable[None]],
        on_assigned: Callable[[set[Any]], Awaitable[None]],
    ) -> None:
        from aiokafka.abc import ConsumerRebalanceListener

        outer = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await outer._on_revoked(set(revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await outer._on_assigned(set(assigned))

        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self.listener: Any = _Listener()


class KafkaSource:
    """The processor's :class:`~cloud_processor.ports.Source` on aiokafka.

    Without ``replay_from_ms``: a member of the consumer group, subscribed to
    ``topics`` (the first is the one whose partitions say which devices are
    this member's: :meth:`owner`). With it: a consumer outside any group, assigned every
    partition of ``topics`` and positioned at the first record produced at
    or after ``replay_from_ms``; :attr:`end_offsets` says where to stop.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str],
        *,
        replay_from_ms: int | None = None,
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self.replay_from_ms = replay_from_ms
        self.end_offsets: dict[Partition, int] = {}
        self._consumer: Any = None

    async def start(self, on_revoked: Rebalanced, on_assigned: Rebalanced) -> None:
        """Join the group (rebalances call back), or seek for the replay."""
        if self.replay_from_ms is not None:
            await self._start_replay(self.replay_from_ms)
            return
        self._consumer = make_consumer(self._settings)
        listener = Revocations(on_revoked, on_assigned)
        self._consumer.subscribe(self._topics, listener=listener.listener)
        with self._group_errors_explained():
            await self._consumer.start()

    async def _start_replay(self, from_ms: int) -> None:
        from aiokafka import TopicPartition

        from stagekit.kafka import partitions_of

        self._consumer = make_consumer(self._settings, group_id=None)
        await self._consumer.start()
        parts = await partitions_of(self._settings, self._topics)
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        self._consumer.assign(tps)
        starts = await self._consumer.offsets_for_times(dict.fromkeys(tps, from_ms))
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            self._consumer.seek(tp, start)
            if start < ends[tp]:
                self.end_offsets[tp] = ends[tp]
        log.info("event=replay_started from_ms=%d partitions=%d", from_ms, len(tps))

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Batch:
        """The next records, per partition (empty after ``timeout_ms`` without any)."""
        with self._group_errors_explained():
            batch: Batch = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
        return batch

    @contextlib.contextmanager
    def _group_errors_explained(self) -> Iterator[None]:
        """Say what to do when the group's members share no assignor: members of
        a release before the range assignor (round robin only) still hold it."""
        from aiokafka.errors import InconsistentGroupProtocolError

        try:
            yield
        except InconsistentGroupProtocolError as exc:
            group = self._settings.group_id
            raise GroupProtocolError(
                f"consumer group {group!r} has members that assign partitions by round "
                "robin (processors of an earlier release); this release assigns them by "
                "range, and Kafka lets a group use one: stop every processor of the "
                "group, then start the upgraded ones (docs/upgrade-notes.md)"
            ) from exc

    def assignment(self) -> Collection[Partition]:
        """The partitions read now (none before :meth:`start`)."""
        if self._consumer is None:
            return set()
        assigned: Collection[Partition] = self._consumer.assignment()
        return assigned

    def owner(self) -> Callable[[str], bool]:
        """Whether a device's telemetry partition -- where the gateway's
        partitioner (the Java client's murmur2 of :func:`kafka_key`) puts its
        records -- is assigned here. Everything is, in a replay or before the
        topic's partitions are known."""
        consumer, topic = self._consumer, self._topics[0]
        parts = None if consumer is None else consumer.partitions_for_topic(topic)
        if self.replay_from_ms is not None or not parts:
            return lambda device_id: True
        from aiokafka.partitioner import DefaultPartitioner

        every = sorted(parts)
        mine = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
        choose = DefaultPartitioner()
        return lambda device_id: choose(kafka_key(device_id), every, every) in mine

    def highwater(self, tp: Partition) -> int | None:
        """The partition's end offset as of the last fetch."""
        end: int | None = self._consumer.highwater(tp)
        return end

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit; False (logged) when the group rebalanced and took them away."""
        from aiokafka.errors import CommitFailedError

        try:
            await self._consumer.commit(dict(offsets))
        except CommitFailedError as exc:
            log.warning("event=commit_failed error=%s", exc)
            return False
        return True

    async def stop(self) -> None:
        """Leave the group and disconnect (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class AlertsSource(KafkaSource):
    """The webhook feed's source: its own consumer group on the alerts topic.

    A partition the group has never committed starts at the first record
    produced since :meth:`start` (a new group would otherwise notify the whole
    history again), and that position is committed at once: a crash before the
    feed's first commit re-reads from there. The processor starts the feed
    before it consumes anything, so no change of this run is before it.
    """

    async def start(self, on_revoked: Rebalanced, on_assigned: Rebalanced) -> None:
        """Join the group; new partitions are pinned to the start time."""
        since_ms = int(time.time() * 1000)

        async def assigned(partitions: set[Partition]) -> None:
            await self._pin(partitions, since_ms)
            await on_assigned(partitions)

        await super().start(on_revoked, assigned)

    async def _pin(self, partitions: set[Partition], since_ms: int) -> None:
        consumer = self._consumer
        fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
        if not fresh:
            return
        # The ends first: a record appended after them has an offset >= its end,
        # so falling back to the end never skips one that came in meanwhile.
        ends = await consumer.end_offsets(fresh)
        found = await consumer.offsets_for_times(dict.fromkeys(fresh, since_ms))
        start = {}
        for tp in fresh:
            hit = found.get(tp)
            start[tp] = hit.offset if hit is not None else ends[tp]
            consumer.seek(tp, start[tp])
        await consumer.commit(start)
        log.info("event=notify_group_started since_ms=%d partitions=%d", since_ms, len(fresh))


class KafkaProducer:
    """The processor's :class:`~cloud_processor.ports.Producer`: one idempotent
    aiokafka producer (acks=all) for alert changes and dead letters.

    :meth:`start` first creates ``topics`` where missing (the alerts and
    dead-letter topics: auto creation is off on the brokers).
    """

    def __init__(self, settings: KafkaSettings, topics: Sequence[str]) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._producer: Any = None

    async def start(self) -> None:
        """Create the topics, then connect."""
        from stagekit.kafka import create_topics

        await create_topics(
            self._settings,
            self._topics,
            partitions=self._settings.partitions,
            replication=self._settings.replication_factor,
        )
        self._producer = make_producer(self._settings)
        await self._producer.start()

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Queue one record; the awaitable resolves once Kafka has it."""
        if self._producer is None:
            raise RuntimeError("KafkaProducer.send before start()")
        delivered: Awaitable[Any] = await self._producer.send(topic, value=value, key=key)
        return delivered

    async def stop(self) -> None:
        """Flush and disconnect (idempotent)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
