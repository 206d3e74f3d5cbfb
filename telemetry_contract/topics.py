"""MQTT topic scheme and Kafka topic names and keys, as functions.

MQTT: ``thermowatch/{site}/{device_id}/{kind}`` where kind is one of
``telemetry`` (readings and gaps), ``alert`` (edge alerts), ``status``
(retained device status, also the last will), ``config`` (retained,
cloud to device) and ``receipt`` (gateway to device: what Kafka has).

>>> mqtt_topic("s1", "s1-d01", TopicKind.TELEMETRY)
'thermowatch/s1/s1-d01/telemetry'
>>> parse_mqtt_topic("thermowatch/s1/s1-d01/status")
MqttTopic(site='s1', device_id='s1-d01', kind=<TopicKind.STATUS: 'status'>)
>>> mqtt_filter(TopicKind.TELEMETRY, share_group="gateways")
'$share/gateways/thermowatch/+/+/telemetry'
>>> kafka_topics().telemetry, kafka_key("s1-d01")
('thermowatch.telemetry', b's1-d01')
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Final

from telemetry_contract.errors import ContractError, Reason
from telemetry_contract.messages import (
    DEVICE_ID_PATTERN,
    DeviceConfig,
    DeviceStatus,
    EdgeAlert,
    Gap,
    Message,
    Reading,
    Receipt,
    SignedConfig,
)

__all__ = [
    "TOPIC_ROOT",
    "KafkaTopics",
    "MqttTopic",
    "TopicKind",
    "kafka_key",
    "kafka_topic_for",
    "kafka_topics",
    "message_types_for",
    "mqtt_filter",
    "mqtt_topic",
    "parse_mqtt_topic",
]

TOPIC_ROOT: Final = "thermowatch"
_ID = re.compile(DEVICE_ID_PATTERN)


class TopicKind(enum.StrEnum):
    """Last level of an MQTT topic: what the messages on it are."""

    TELEMETRY = "telemetry"
    ALERT = "alert"
    STATUS = "status"
    CONFIG = "config"
    RECEIPT = "receipt"


_TYPES_BY_KIND: Final[dict[TopicKind, tuple[type[Message], ...]]] = {
    TopicKind.TELEMETRY: (Reading, Gap),
    TopicKind.ALERT: (EdgeAlert,),
    TopicKind.STATUS: (DeviceStatus,),
    TopicKind.CONFIG: (DeviceConfig, SignedConfig),
    TopicKind.RECEIPT: (Receipt,),
}


def message_types_for(kind: TopicKind) -> tuple[type[Message], ...]:
    """Message classes allowed on an MQTT topic of this kind.

    >>> [t.__name__ for t in message_types_for(TopicKind.TELEMETRY)]
    ['Reading', 'Gap']
    """
    return _TYPES_BY_KIND[kind]


@dataclass(frozen=True, slots=True)
class MqttTopic:
    """A parsed MQTT topic."""

    site: str
    device_id: str
    kind: TopicKind
    #: Message classes allowed on this topic (see :func:`message_types_for`).
    allowed: tuple[type[Message], ...] = field(default=(), repr=False, compare=False)


def _check_level(name: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise ContractError(
            Reason.BAD_TOPIC,
            f"must match {DEVICE_ID_PATTERN} to be an MQTT topic level, got {value!r}",
            field=name,
        )


def mqtt_topic(site: str, device_id: str, kind: TopicKind, *, root: str = TOPIC_ROOT) -> str:
    """The topic a device publishes (or receives, for ``config``) messages on."""
    _check_level("site", site)
    _check_level("device_id", device_id)
    return f"{root}/{site}/{device_id}/{TopicKind(kind).value}"


def parse_mqtt_topic(topic: str, *, root: str = TOPIC_ROOT) -> MqttTopic:
    """Split a concrete topic into site, device and kind (cached: topics repeat).

    >>> parse_mqtt_topic("thermowatch/s1/d/nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    telemetry_contract.errors.ContractError: topic: unknown kind 'nope' in ... (expected one of ...)
    """
    return _parse(topic, root)


@functools.lru_cache(maxsize=65_536)
def _parse(topic: str, root: str) -> MqttTopic:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != root:
        raise ContractError(
            Reason.BAD_TOPIC,
            f"expected {root}/<site>/<device_id>/<kind>, got {topic!r}",
            field="topic",
        )
    _, site, device_id, kind = parts
    try:
        topic_kind = TopicKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in TopicKind)
        raise ContractError(
            Reason.BAD_TOPIC,
            f"unknown kind {kind!r} in {topic!r} (expected one of {choices})",
            field="topic",
        ) from None
    _check_level("site", site)
    _check_level("device_id", device_id)
    return MqttTopic(site, device_id, topic_kind, _TYPES_BY_KIND[topic_kind])


def mqtt_filter(
    kind: TopicKind,
    *,
    site: str = "+",
    device_id: str = "+",
    share_group: str | None = None,
    root: str = TOPIC_ROOT,
) -> str:
    """A subscription filter, optionally an MQTT v5 shared subscription."""
    base = f"{root}/{site}/{device_id}/{TopicKind(kind).value}"
    return f"$share/{share_group}/{base}" if share_group else base


@dataclass(frozen=True, slots=True)
class KafkaTopics:
    """Kafka topic names. All records are keyed by device id (see :func:`kafka_key`)."""

    telemetry: str
    edge_alerts: str
    status: str
    alerts: str
    deadletter: str

    def all(self) -> tuple[str, ...]:
        """Every topic name, for creation at start."""
        return (self.telemetry, self.edge_alerts, self.status, self.alerts, self.deadletter)


def kafka_topics(prefix: str = TOPIC_ROOT) -> KafkaTopics:
    """Topic names under a prefix (tests use their own prefix to stay isolated).

    >>> kafka_topics("t1").deadletter
    't1.deadletter'
    """
    return KafkaTopics(
        telemetry=f"{prefix}.telemetry",
        edge_alerts=f"{prefix}.edge-alerts",
        status=f"{prefix}.status",
        alerts=f"{prefix}.alerts",
        deadletter=f"{prefix}.deadletter",
    )


def kafka_topic_for(kind: TopicKind, topics: KafkaTopics | None = None) -> str:
    """The Kafka topic that carries messages from an MQTT topic of this kind.

    >>> kafka_topic_for(TopicKind.ALERT)
    'thermowatch.edge-alerts'
    """
    names = topics or kafka_topics()
    if kind is TopicKind.TELEMETRY:
        return names.telemetry
    if kind is TopicKind.ALERT:
        return names.edge_alerts
    if kind is TopicKind.STATUS:
        return names.status
    raise ContractError(
        Reason.BAD_TOPIC,
        f"{kind.value!r} messages flow cloud to device, not to Kafka",
        field="topic",
    )


def kafka_key(device_id: str) -> bytes:
    """Record key: the device id, so one device's records stay ordered in one partition."""
    return device_id.encode()
