"""Kafka adapter: the consumer group and the alerts producer (topics: :mod:`stagekit.kafka`).

Offsets are never committed automatically: :class:`cloud_processor.app.Processor`
commits them after the documents of the records are stored, and again (for
what it has stored) when the group takes partitions away.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cloud_processor.config import KafkaSettings

__all__ = ["Revocations", "make_consumer", "make_producer"]

log = logging.getLogger(__name__)


def make_consumer(settings: KafkaSettings, *, group_id: str | None = None) -> Any:
    """An ``AIOKafkaConsumer`` with manual commits (create inside the running loop)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        **settings.client_options(),
        group_id=group_id if group_id is not None else settings.group_id,
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
