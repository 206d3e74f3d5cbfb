"""Kafka administration every stage and tool shares: create, delete and describe topics.

The one place that creates topics (auto creation is off on the brokers): the
gateway for the device topics, the processor for alerts and dead letters,
and the demo, tests and benchmarks for theirs. Each function takes the shared
:class:`~stagekit.settings.KafkaSettings` (so TLS and SASL apply), a cluster
endpoint mapping as the local stack describes it (``stack.endpoints()["kafka"]``:
``bootstrap``, ``security_protocol``, ``sasl_mechanism``, ``ca_file``,
``users``), or, for an explicitly plaintext cluster, a plain
``host:port[,host:port]`` string. :func:`settings_for` is the one place that
turns any of them into settings. aiokafka is imported inside the functions: an
edge device never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import msgspec

from stagekit.settings import KafkaSettings

__all__ = [
    "CONNECTION_KEYS",
    "KafkaTarget",
    "TopicError",
    "connection_keys",
    "create_topics",
    "delete_topics",
    "list_topics",
    "partitions_of",
    "settings_for",
    "warn_if_insecure",
]

log = logging.getLogger(__name__)

#: Kafka protocol error code TOPIC_ALREADY_EXISTS (a racing creator won).
_TOPIC_ALREADY_EXISTS: Final = 36


class TopicError(RuntimeError):
    """Kafka refused to create a topic (permissions, bad settings): trying again will not help."""


#: What the functions here accept: settings, a cluster endpoint mapping, or a
#: plaintext ``host:port[,...]`` string.
KafkaTarget: TypeAlias = KafkaSettings | str | Mapping[str, Any]


#: The connection keys of :class:`KafkaSettings` (what :func:`connection_keys` returns).
CONNECTION_KEYS: Final = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
)


def connection_keys(kafka: KafkaTarget, user: str = "admin") -> dict[str, Any]:
    """The ``[kafka]`` config keys that reach ``kafka`` as ``user`` (servers, TLS, SASL).

    For a cluster endpoint mapping as the local stack reports it (``bootstrap``,
    ``security_protocol``, ``sasl_mechanism``, ``ca_file``, ``users``): ``user``'s
    password; one without ``security_protocol`` (or ``PLAINTEXT``) gives only the
    servers, like a ``host:port`` string. Settings give their own connection keys.

    >>> ep = {"bootstrap": "k:9092", "security_protocol": "SASL_SSL",
    ...       "sasl_mechanism": "SCRAM-SHA-512", "ca_file": "/ca.pem", "users": {"web": "pw"}}
    >>> connection_keys(ep, "web")["sasl_username"], connection_keys({"bootstrap": "k:1"})
    ('web', {'bootstrap_servers': 'k:1'})
    >>> connection_keys(ep, "nobody")
    Traceback (most recent call last):
    ...
    KeyError: "kafka endpoint: no password for user 'nobody' (known: web)"
    """
    if isinstance(kafka, KafkaSettings):
        return {name: getattr(kafka, name) for name in CONNECTION_KEYS}
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    keys: dict[str, Any] = {"bootstrap_servers": str(kafka["bootstrap"])}
    protocol = str(kafka.get("security_protocol", "PLAINTEXT"))
    if protocol == "PLAINTEXT":
        return keys
    keys["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL") and kafka.get("ca_file"):
        keys["ssl_ca_file"] = str(kafka["ca_file"])
    if protocol.startswith("SASL"):
        users: Mapping[str, str] = kafka.get("users") or {}
        if user not in users:
            known = ", ".join(sorted(users)) or "none"
            raise KeyError(f"kafka endpoint: no password for user {user!r} (known: {known})")
        keys["sasl_mechanism"] = str(kafka.get("sasl_mechanism", "SCRAM-SHA-512"))
        keys["sasl_username"] = user
        keys["sasl_password"] = users[user]
    return keys


def settings_for(kafka: KafkaTarget, user: str = "admin", **extra: Any) -> KafkaSettings:
    """Client settings for ``kafka``: settings (returned as they are), a cluster
    endpoint mapping (with ``user``'s password, see :func:`connection_keys`), or a
    ``host:port[,...]`` string (plaintext, for a cluster that explicitly has no
    security). ``extra`` sets more keys (``topic_prefix``, ``client_id``).

    >>> settings_for("k1:9092,k2:9092").servers
    ('k1:9092', 'k2:9092')
    >>> ep = {"bootstrap": "k:9093", "security_protocol": "SASL_SSL", "users": {"admin": "pw"}}
    >>> settings_for(ep).client_options()["sasl_plain_username"]
    'admin'
    """
    if isinstance(kafka, KafkaSettings):
        return msgspec.structs.replace(kafka, **extra) if extra else kafka
    return msgspec.convert({**connection_keys(kafka, user), **extra}, KafkaSettings)


def warn_if_insecure(kafka: KafkaSettings, logger: logging.Logger) -> None:
    """At a stage's start: one warning when its Kafka connection lacks TLS or
    authentication (:attr:`KafkaSettings.insecure`), so plaintext is never silent."""
    if kafka.insecure:
        logger.warning(
            "event=kafka_insecure servers=%s security_protocol=%s detail='%s'",
            ",".join(kafka.servers),
            kafka.security_protocol,
            kafka.insecure,
        )


async def _admin(kafka: KafkaTarget, **extra: Any) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options(), **extra)
    await admin.start()
    return admin


async def create_topics(
    kafka: KafkaTarget,
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


async def delete_topics(kafka: KafkaTarget, names: Iterable[str]) -> list[str]:
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


async def list_topics(kafka: KafkaTarget) -> list[str]:
    """Names of every topic of the cluster, sorted (clean-up by name prefix)."""
    admin = await _admin(kafka)
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(kafka: KafkaTarget, names: Iterable[str]) -> dict[str, list[int]]:
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
