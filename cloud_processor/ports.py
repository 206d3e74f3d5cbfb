"""The processor's ports: what :class:`~cloud_processor.app.Processor` takes in its constructor.

Each port is a small :class:`~typing.Protocol` with one real adapter, built
from the config by :mod:`cloud_processor.factory`, and a fake of a few lines
in the tests:

* :class:`Source` -- the Kafka consumer (group or replay) and its rebalances
  (:class:`cloud_processor.kafka.KafkaSource`);
* :class:`Producer` -- alert changes and dead letters out to Kafka
  (:class:`cloud_processor.kafka.KafkaProducer`);
* :class:`Store` -- the search server: schema, durable bulk writes, windows,
  alert state (:class:`cloud_processor.storage.Storage`);
* :class:`Notifier` -- where alert changes are published, called in order
  (:class:`cloud_processor.notifiers.AlertsTopicNotifier`; the webhook is fed
  back from that topic by :class:`cloud_processor.feed.AlertFeed`, a notifier
  only for its lifecycle).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from cloud_processor.aggregates import DirtyWindows, WindowAggregate
from cloud_processor.documents import BulkItem
from cloud_processor.storage import BulkTotals
from telemetry_contract import Alert, AlertChange, IncidentChange

__all__ = [
    "Batch",
    "Change",
    "ChangeNotifier",
    "Notifier",
    "Partition",
    "Producer",
    "Rebalanced",
    "Record",
    "Source",
    "Store",
]


class Partition(Protocol):
    """A topic partition (aiokafka's ``TopicPartition``); hashable."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


class Record(Protocol):
    """A consumed Kafka record: what the processor reads of it."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def offset(self) -> int: ...


#: One poll's records, per partition, in offset order.
Batch = Mapping[Partition, Sequence[Record]]
#: A rebalance callback: the partitions revoked or assigned.
Rebalanced = Callable[[set[Partition]], Awaitable[None]]


class Source(Protocol):
    """The records to process: a consumer group, or a replay from a point in time."""

    @property
    def replay_from_ms(self) -> int | None:
        """None for the consumer group; else replay the records from this Kafka time on."""
        ...

    @property
    def end_offsets(self) -> Mapping[Partition, int]:
        """Replay only, after :meth:`start`: per partition, the end offset to reach."""
        ...

    async def start(self, on_revoked: Rebalanced, on_assigned: Rebalanced) -> None:
        """Join the group (rebalances call back) or, for a replay, seek."""
        ...

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Batch:
        """The next records (empty after ``timeout_ms`` without any)."""
        ...

    def assignment(self) -> Collection[Partition]:
        """The partitions this member reads now."""
        ...

    def owner(self) -> Callable[[str], bool]:
        """Whether a device's records come to this member now (its partition
        is assigned here), as a test to apply to many devices."""
        ...

    def highwater(self, tp: Partition) -> int | None:
        """The partition's end offset as last seen, if known."""
        ...

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit ``offsets``; False when the group took them away meanwhile."""
        ...

    async def stop(self) -> None:
        """Leave the group and disconnect (idempotent)."""
        ...


class Producer(Protocol):
    """Kafka out: alert changes and dead letters (acks=all)."""

    async def start(self) -> None:
        """Create its topics if missing, then connect."""
        ...

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Queue one record; the awaitable resolves once Kafka has it."""
        ...

    async def stop(self) -> None:
        """Flush and disconnect (idempotent)."""
        ...


class Store(Protocol):
    """The search server as the processor uses it (see :mod:`cloud_processor.storage`)."""

    @property
    def available(self) -> bool | None:
        """None before the first request, then whether the server answered."""
        ...

    @property
    def lifecycle(self) -> str:
        """``ilm``, ``ism`` or ``none`` once the schema is ensured."""
        ...

    @property
    def policy(self) -> str | None:
        """The retention policy installed with the schema (None: none)."""
        ...

    @property
    def backend_name(self) -> str:
        """``opensearch`` or ``elasticsearch`` (for the logs)."""
        ...

    async def ensure_schema(self, *, stop: asyncio.Event | None = None) -> dict[str, Any]:
        """Templates, and the indices (alerts; this month's readings and aggregates);
        the server's ``GET /`` answer."""
        ...

    async def load_alerts(self, *, since_ms: int, stop: asyncio.Event | None = None) -> list[Alert]:
        """Open alerts and those changed since ``since_ms`` (processing time)."""
        ...

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        """Store every item, retrying for as long as it takes."""
        ...

    def alert_item(
        self,
        a: Alert,
        location: tuple[float, float] | None = None,
        *,
        processed_at: int | None = None,
    ) -> BulkItem:
        """The bulk upsert of an alert document."""
        ...

    async def compute_windows(self, dirty: DirtyWindows) -> list[WindowAggregate]:
        """Recompute the dirty one-minute windows from the stored readings."""
        ...

    async def load_last_heard(
        self, *, since_ms: int, stop: asyncio.Event | None = None
    ) -> list[tuple[str, str, int]]:
        """(device_id, site, last reading's event time) of the devices with a
        window since ``since_ms``."""
        ...

    async def load_windows(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], WindowAggregate | None]:
        """Stored window documents (None: none; left out: unknown)."""
        ...

    def aggregate_items(
        self,
        windows: Sequence[WindowAggregate],
        locations: dict[str, tuple[float, float]] | None = None,
    ) -> list[BulkItem]:
        """Bulk items of window documents."""
        ...

    async def close(self) -> None:
        """Release the connections (idempotent)."""
        ...


class Notifier(Protocol):
    """One place alert changes are published to (the Kafka topic, a webhook, ...).

    ``notify`` returns once the changes are delivered or given up on (each
    notifier decides its own retries and logs what it gives up). An exception
    fails the write of the batch: its alert documents are not stored, its
    offsets not committed, and the run loop raises it.
    """

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        """Publish ``changes`` in their order."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


#: What a webhook notifies: an alert change, or an incident change.
Change = AlertChange | IncidentChange


class ChangeNotifier(Protocol):
    """Where the webhook's dispatcher sends alert or incident changes."""

    async def notify(self, changes: Sequence[Change]) -> None:
        """Deliver ``changes`` in their order (what it gives up on is logged)."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...
