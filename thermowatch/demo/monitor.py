"""What the demo watches while it runs: stored readings, consumer lag, open alerts.

Every number comes from the service that holds the data: the reading count
from the search server (``_count`` over the run's readings indices), the lag
from Kafka (end offsets minus the processor group's committed offsets), the
open alerts from the alerts index. :func:`rate` is the pure part.

>>> rate([(0.0, 0), (1.0, 30), (2.0, 60)])
30.0
>>> rate([(5.0, 10)])
0.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stagekit.kafka import KafkaTarget, partitions_of, settings_for
from stagekit.search import IndexNames, SearchSettings, make_backend
from stagekit.search import api as search
from stagekit.search.alerts import alert_from_doc
from stagekit.search.queries import open_alerts_query, readings_count_query

__all__ = ["KafkaLag", "OpenAlert", "SearchWatch", "rate"]


def rate(samples: Sequence[tuple[float, int]], window_s: float = 10.0) -> float:
    """Per-second increase over the last ``window_s`` of ``(monotonic time, count)`` samples."""
    if len(samples) < 2:
        return 0.0
    t1, c1 = samples[-1]
    older = [s for s in samples if t1 - s[0] <= window_s]
    t0, c0 = older[0] if len(older) >= 2 else samples[-2]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open alert as the live view lists it."""

    device_id: str
    rule: str
    severity: str
    opened_at: int
    message: str


class SearchWatch:
    """Counts and open alerts of the fleet, straight from the search server.

    Reads the indices under ``settings.index_prefix``; :meth:`close` when done.
    """

    def __init__(self, settings: SearchSettings, devices: Iterable[str]) -> None:
        self.names = IndexNames(settings.index_prefix)
        self.devices = sorted(set(devices))
        self._backend = make_backend(settings)

    def close(self) -> None:
        """Release the connections (idempotent)."""
        self._backend.close_sync()

    def _count(self, body: dict[str, Any], *, refresh: bool) -> int:
        pattern = self.names.readings_pattern
        if refresh:
            self._backend.perform_sync(search.refresh(pattern))
        return int(self._backend.perform_sync(search.count(pattern, body))["count"])

    def readings(self, *, refresh: bool = False) -> int:
        """Reading documents of the fleet's devices (searchable ones, unless ``refresh``)."""
        return self._count(readings_count_query(self.devices), refresh=refresh)

    def count_seq_at_least(self, seq: int) -> int:
        """Readings of the fleet with ``seq >= seq`` (the malformed burst uses huge seqs)."""
        return self._count(readings_count_query(self.devices, min_seq=seq), refresh=True)

    def open_alerts(
        self, since_ms: int, until_ms: int | None = None, limit: int = 12
    ) -> list[OpenAlert]:
        """Open alerts of the fleet opened (event time) in ``since_ms..until_ms``, newest first."""
        body = open_alerts_query(self.devices, since_ms=since_ms, until_ms=until_ms, limit=limit)
        answer = self._backend.perform_sync(search.search(self.names.alerts, body))
        alerts = [alert_from_doc(h["_source"]) for h in answer.get("hits", {}).get("hits", [])]
        return [
            OpenAlert(a.device_id, a.rule, a.severity.value, a.opened_at, a.message) for a in alerts
        ]


class KafkaLag:
    """Consumer lag of a group: end offsets minus committed offsets, summed.

    ``kafka`` is the shared settings block or a ``host:port`` string. Create
    and use it inside the running event loop (aiokafka clients bind to it).
    """

    def __init__(self, kafka: KafkaTarget, group_id: str, topics: Sequence[str]) -> None:
        self.kafka = settings_for(kafka)
        self.group_id = group_id
        self.topics = list(topics)
        self._admin: Any = None
        self._consumer: Any = None
        self._tps: list[Any] = []

    async def start(self) -> None:
        """Connect (an admin client for the group's offsets, a consumer for the ends)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        options = self.kafka.client_options()
        self._admin = AIOKafkaAdminClient(**options)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await self._consumer.start()

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def lag(self) -> int:
        """Records not yet committed by the group (a partition never committed counts whole)."""
        from aiokafka import TopicPartition

        if not self._tps:
            found = await partitions_of(self.kafka, self.topics)
            self._tps = [TopicPartition(t, p) for t, parts in found.items() for p in parts]
        tps = self._tps
        if not tps:
            return 0
        ends = await self._consumer.end_offsets(tps)
        committed = await self._admin.list_consumer_group_offsets(self.group_id)
        total = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += max(0, ends[tp] - done)
        return total
