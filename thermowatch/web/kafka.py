"""Kafka adapter of the web view: follow the alerts, status and telemetry topics.

A plain consumer without a group (it commits nothing and takes nothing from
the processor): the status topic is read from the beginning (the newest status
of each device wins), the alerts topic from ``alert_replay_s`` ago (changes are
versioned, so repeats are harmless) and telemetry from its end. Topics that do
not exist yet (processor not started) are looked for again every ``retry_s``;
a lost broker is retried the same way, while the page keeps showing what the
search server has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from stagekit.kafka import partitions_of
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import kafka_topics
from thermowatch.web.config import KafkaSettings

__all__ = ["DOWN_LOG_PER_S", "LiveFeed"]

#: While Kafka stays down, one line per this many seconds (the retries in between are
#: counted in the next line's ``suppressed=N``), never a traceback.
DOWN_LOG_PER_S = 300.0

log = logging.getLogger(__name__)


class LiveFeed:
    """Calls ``on_record(kind, payload)`` for every record; run with :meth:`run`."""

    def __init__(
        self, settings: KafkaSettings, on_record: Callable[[str, bytes | None], None]
    ) -> None:
        self._settings = settings
        self._on_record = on_record
        topics = kafka_topics(settings.topic_prefix)
        self._kinds = {topics.alerts: "alerts", topics.status: "status"}
        if settings.live_readings:
            self._kinds[topics.telemetry] = "telemetry"
        #: True while a consumer follows every wanted topic.
        self.connected = False
        self._told_missing = False
        #: Attempts that found Kafka down (every one; the log shows a few).
        self.failures = 0
        self.down_log = RateLimitedLog(lines=1, per_s=DOWN_LOG_PER_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topics until ``stop`` is set, reconnecting as needed."""
        from aiokafka.errors import KafkaError

        while not stop.is_set():
            try:
                await self._follow(stop)
            except (KafkaError, OSError) as exc:
                self.failures += 1
                self.down_log.log(
                    log,
                    logging.WARNING,
                    "event=kafka_unavailable servers=%s error=%s",
                    ",".join(self._settings.servers),
                    f"{type(exc).__name__}: {exc}",
                    key="down",
                )
            self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.retry_s)

    async def _follow(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self._settings
        consumer = AIOKafkaConsumer(
            **s.client_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
        )
        try:
            await consumer.start()
            tps = await self._partitions()
            if not tps:
                if not self._told_missing:
                    log.info("event=kafka_topics_missing topics=%s", ",".join(self._kinds))
                    self._told_missing = True
                return
            self._told_missing = False
            consumer.assign(tps)
            await self._seek(consumer, tps)
            topics = {tp.topic for tp in tps}
            self.connected = len(topics) == len(self._kinds)
            log.info(
                "event=kafka_following topics=%s partitions=%d", ",".join(sorted(topics)), len(tps)
            )
            checked = time.monotonic()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batch.items():
                    kind = self._kinds[tp.topic]
                    for rec in records:
                        self._on_record(kind, rec.value)
                if not self.connected and time.monotonic() - checked > s.retry_s:
                    checked = time.monotonic()
                    if len(await self._partitions()) > len(tps):
                        return  # a missing topic appeared: start over and follow it too
        finally:
            await consumer.stop()

    async def _partitions(self) -> list[Any]:
        """Partitions of the wanted topics that exist (asks the cluster each time)."""
        from aiokafka import TopicPartition

        found = await partitions_of(self._settings, self._kinds)
        return [TopicPartition(topic, p) for topic, parts in found.items() for p in parts]

    async def _seek(self, consumer: Any, tps: list[Any]) -> None:
        by_kind: dict[str, list[Any]] = {}
        for tp in tps:
            by_kind.setdefault(self._kinds[tp.topic], []).append(tp)
        if by_kind.get("status"):
            await consumer.seek_to_beginning(*by_kind["status"])
        if by_kind.get("telemetry"):
            await consumer.seek_to_end(*by_kind["telemetry"])
        alerts = by_kind.get("alerts", [])
        if alerts:
            since = int((time.time() - self._settings.alert_replay_s) * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(alerts, since))
            ends = await consumer.end_offsets(alerts)
            for tp in alerts:
                hit = found.get(tp)
                consumer.seek(tp, hit.offset if hit is not None else ends[tp])
