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
    device_id: str
    rule: str
    severity: str
    opened_at: int
    message: str


class SearchWatch:
    """Counts and open alerts of the run, straight from the search server."""

    def __init__(self, url: str, readings_pattern: str, alerts_index: str, devices: Iterable[str]):
        import requests

        self.url = url
        self.readings_pattern = readings_pattern
        self.alerts_index = alerts_index
        self.devices = sorted(set(devices))
        self._http = requests.Session()

    def close(self) -> None:
        self._http.close()

    def _query(self) -> dict[str, Any]:
        return {"terms": {"device_id": self.devices}}

    def readings(self, *, refresh: bool = False) -> int:
        """Reading documents of the fleet's devices (searchable ones, unless ``refresh``)."""
        opts = "ignore_unavailable=true&allow_no_indices=true"
        if refresh:
            self._http.post(f"{self.url}/{self.readings_pattern}/_refresh?{opts}", timeout=30)
        r = self._http.post(
            f"{self.url}/{self.readings_pattern}/_count?{opts}",
            json={"query": self._query()},
            timeout=30,
        )
        r.raise_for_status()
        return int(r.json()["count"])

    def count_seq_at_least(self, seq: int) -> int:
        """Readings of the fleet with ``seq >= seq`` (the malformed burst uses huge seqs)."""
        opts = "ignore_unavailable=true&allow_no_indices=true"
        self._http.post(f"{self.url}/{self.readings_pattern}/_refresh?{opts}", timeout=30)
        body = {"query": {"bool": {"filter": [self._query(), {"range": {"seq": {"gte": seq}}}]}}}
        r = self._http.post(
            f"{self.url}/{self.readings_pattern}/_count?{opts}", json=body, timeout=30
        )
        r.raise_for_status()
        return int(r.json()["count"])

    def open_alerts(
        self, since_ms: int, until_ms: int | None = None, limit: int = 12
    ) -> list[OpenAlert]:
        """Open alerts of the fleet opened (event time) in ``since_ms..until_ms``, newest first."""
        opened: dict[str, int] = {"gte": since_ms}
        if until_ms is not None:
            opened["lt"] = until_ms
        body = {
            "size": limit,
            "sort": [{"opened_at": "desc"}],
            "query": {
                "bool": {
                    "filter": [
                        self._query(),
                        {"term": {"status": "open"}},
                        {"range": {"opened_at": opened}},
                    ]
                }
            },
        }
        r = self._http.post(f"{self.url}/{self.alerts_index}/_search", json=body, timeout=30)
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return [
            OpenAlert(
                device_id=h["_source"]["device_id"],
                rule=h["_source"]["rule"],
                severity=h["_source"]["severity"],
                opened_at=int(h["_source"]["opened_at"]),
                message=str(h["_source"].get("message", "")),
            )
            for h in r.json()["hits"]["hits"]
        ]


class KafkaLag:
    """Consumer lag of a group: end offsets minus committed offsets, summed.

    Create and use it inside the running event loop (aiokafka clients bind to it).
    """

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str]) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = list(topics)
        self._admin: Any = None
        self._consumer: Any = None
        self._tps: list[Any] = []

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False
        )
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def lag(self) -> int:
        """Records not yet committed by the group (a partition never committed counts whole)."""
        from thermowatch.accounting import topic_partitions

        if not self._tps:
            self._tps = topic_partitions(await self._admin.describe_topics(self.topics))
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
