"""Kafka adapter: the consumer group, the alerts producer, topic creation.

Offsets are never committed automatically: :class:`cloud_processor.app.Processor`
commits them after the documents of the records are stored, and again (for
what it has stored) when the group takes partitions away.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cloud_processor.config import KafkaSettings

__all__ = [
    "Revocations",
    "create_topics",
    "delete_topics",
    "make_consumer",
    "make_producer",
    "partitions_of",
]

log = logging.getLogger(__name__)


def make_consumer(settings: KafkaSettings, *, group_id: str | None = None) -> Any:
    """An ``AIOKafkaConsumer`` with manual commits (create inside the running loop)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id if group_id is not None else settings.group_id,
        client_id=settings.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_batch,
        session_timeout_ms=settings.session_timeout_ms,
        # Only what producers committed (the gateway may use transactions).
        isolation_level="read_committed",
    )


def make_producer(settings: KafkaSettings) -> Any:
    """An idempotent ``AIOKafkaProducer`` for alert changes (acks=all)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-alerts",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )


async def create_topics(
    bootstrap: str, names: Iterable[str], *, partitions: int = 6, replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet (auto creation is off); returns created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(n, num_partitions=partitions, replication_factor=replication)
                    for n in missing
                ]
            )
            log.info("event=topics_created topics=%s", ",".join(missing))
        return missing
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Delete the topics of ``names`` that exist (test and benchmark clean-up)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, names: list[str]) -> dict[str, list[int]]:
    """Partition numbers of existing topics (missing topics are left out)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d.get("error_code", 0) == 0
    }


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
