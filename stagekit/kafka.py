"""Kafka administration every stage and tool shares: create, delete and describe topics.

The one place that creates topics (auto creation is off on the brokers): the
gateway for the device topics, the processor for alerts and dead letters,
and the demo, tests and benchmarks for theirs. Each function takes the shared
:class:`~stagekit.settings.KafkaSettings` (so TLS and SASL apply) or, for
tools and tests, a plain ``host:port[,host:port]`` string. aiokafka is
imported inside the functions: an edge device never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from stagekit.settings import KafkaSettings

__all__ = [
    "TopicError",
    "create_topics",
    "delete_topics",
    "list_topics",
    "partitions_of",
    "settings_for",
]

log = logging.getLogger(__name__)

#: Kafka protocol error code TOPIC_ALREADY_EXISTS (a racing creator won).
_TOPIC_ALREADY_EXISTS: Final = 36


class TopicError(RuntimeError):
    """Kafka refused to create a topic (permissions, bad settings): trying again will not help."""


def settings_for(kafka: KafkaSettings | str) -> KafkaSettings:
    """``kafka`` itself, or plain-text settings for a ``host:port[,...]`` string.

    >>> settings_for("k1:9092,k2:9092").servers
    ('k1:9092', 'k2:9092')
    """
    return KafkaSettings(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


async def _admin(kafka: KafkaSettings | str, **extra: Any) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options(), **extra)
    await admin.start()
    return admin


async def create_topics(
    kafka: KafkaSettings | str,
    names: Iterable[str],
    *,
    partitions: int = 6,
    replication: int = 1,
    configs: Mapping[str, str] | None = None,
    **admin_options: Any,
) -> list[str]:
    """Create the topics of ``names`` that do not exist yet; the ones created.

    ``configs`` are topic settings, e.g. ``{"message.timestamp.type":
    "LogAppendTime"}`` (a record's time is then when the broker appended it).
    Raises :class:`TopicError` when Kafka refuses one for another reason than
    "already exists".
    """
    from aiokafka.admin import NewTopic

    admin = await _admin(kafka, **admin_options)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=partitions,
                    replication_factor=replication,
                    topic_configs=dict(configs or {}),
                )
                for n in missing
            ]
        )
        created = []
        for entry in getattr(response, "topic_errors", ()):
            name, code = entry[0], entry[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                message = entry[2] if len(entry) > 2 else ""
                raise TopicError(
                    f"cannot create Kafka topic {name!r}: error code {code} ({message})"
                )
            if code == 0:
                created.append(name)
                log.info(
                    "event=kafka_topic_created topic=%s partitions=%d replication=%d",
                    name,
                    partitions,
                    replication,
                )
        return created
    finally:
        await admin.close()


async def delete_topics(kafka: KafkaSettings | str, names: Iterable[str]) -> list[str]:
    """Delete the topics of ``names`` that exist (clean-up of tests, benchmarks, demo runs)."""
    admin = await _admin(kafka)
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in dict.fromkeys(names) if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def list_topics(kafka: KafkaSettings | str) -> list[str]:
    """Names of every topic of the cluster, sorted (clean-up by name prefix)."""
    admin = await _admin(kafka)
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(kafka: KafkaSettings | str, names: Iterable[str]) -> dict[str, list[int]]:
    """Partition numbers of the existing topics among ``names`` (missing ones left out)."""
    admin = await _admin(kafka)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d.get("error_code", 0) == 0
    }
