"""Gateway configuration: typed, frozen, validated at start-up.

Load it with :func:`load_config` (TOML file plus ``THERMOWATCH_GATEWAY__*``
environment overrides). Every default is in the classes below and, as
commented lines, in ``gateway/sample.toml``.

>>> cfg = GatewayConfig()
>>> cfg.mqtt.share_group, cfg.kafka.topic_prefix, cfg.kafka.enable_idempotence
('gateways', 'thermowatch', True)
>>> from stagekit.config import loads
>>> loads(GatewayConfig, "[mqtt]\\nreceive_maximum = 0\\n")
Traceback (most recent call last):
...
stagekit.config.ConfigError: mqtt.receive_maximum: must be at least 1, got 0
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

import stagekit.settings
from gateway.receipts import DEFAULT_MAX_RANGES
from stagekit.address import host_problems
from stagekit.config import load
from stagekit.settings import NAME_PATTERN, Port, TlsSettings
from telemetry_contract import MAX_PAYLOAD_BYTES, TopicKind

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "ENV_PREFIX",
    "PACKET_HEADROOM",
    "BridgeSettings",
    "GatewayConfig",
    "GatewaySettings",
    "HttpSettings",
    "KafkaSettings",
    "MqttSettings",
    "ReceiptSettings",
    "TlsSettings",
    "load_config",
]

#: Environment overrides: ``THERMOWATCH_GATEWAY__MQTT__HOST=broker``.
ENV_PREFIX: Final = "THERMOWATCH_GATEWAY"
#: Default Maximum Packet Size announced to the broker: four times the contract's
#: payload limit (16 KiB), so a whole valid message (topic, properties, payload)
#: always fits and so does anything the shipped broker configs accept (their
#: ``max_packet_size`` is 32 KiB): an oversize payload reaches the bridge and
#: becomes a ``too_large`` dead letter instead of being dropped by the broker.
DEFAULT_MAX_PACKET_SIZE: Final = 4 * MAX_PAYLOAD_BYTES
#: Room for the fixed header, topic and properties around a payload.
PACKET_HEADROOM: Final = 2048

_NAME = NAME_PATTERN


class GatewaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Identity of this gateway instance."""

    #: Stable id of this instance (defaults to the host name). It names the MQTT
    #: client id, so a restarted gateway resumes its persistent session.
    id: str = ""
    #: On SIGTERM, how long to wait for in-flight writes so they can be
    #: acknowledged (unacknowledged ones are re-sent by the broker anyway).
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 10.0


class MqttSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where and how to read device messages."""

    host: str = "127.0.0.1"
    port: Port = 1883
    #: Defaults to ``<username>:<gateway.id>`` (``gateway:<id>`` without a user name):
    #: a broker that binds client ids to users accepts ``<user>:<suffix>`` for a
    #: service (docs/security.md). Must be stable per instance.
    client_id: str = ""
    username: str = ""
    password: str = ""
    tls: TlsSettings = TlsSettings()
    #: Shared-subscription group: every gateway in one group splits the load.
    #: "" subscribes without sharing: for a single gateway, and safer across a
    #: broker restart (Mosquitto 2.0.11 does not restore a persistent session's
    #: shared subscription, see gateway/README.md).
    share_group: str = "gateways"
    #: MQTT topic kinds forwarded to Kafka.
    kinds: tuple[Literal["telemetry", "alert", "status"], ...] = ("telemetry", "alert", "status")
    #: Topic root (first level of every topic).
    topic_root: str = "thermowatch"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    #: Receive Maximum sent at connect: how many unacknowledged QoS 1 messages the
    #: broker may have in flight to this gateway. The gateway also enforces it (it
    #: stops reading at this many), since a broker may not. The rest wait in the session.
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    #: Maximum Packet Size sent at connect (MQTT v5): the broker must not send a
    #: larger packet, and one that comes anyway ends the connection with reason
    #: 0x95 "Packet too large" before its body is read. Keep it at or above the
    #: broker's own ``max_packet_size``, or the broker drops what it accepted.
    max_packet_size: Annotated[int, msgspec.Meta(ge=1024, le=268_435_460)] = DEFAULT_MAX_PACKET_SIZE
    #: Session expiry after a disconnect (the broker queues messages meanwhile).
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=4294967295)] = 7 * 24 * 3600
    reconnect_min_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class KafkaSettings(stagekit.settings.KafkaSettings, frozen=True, forbid_unknown_fields=True):
    """Where and how to write records (connection, TLS and SASL: the shared block)."""

    #: Must stay true: retries then never duplicate or reorder within a partition.
    enable_idempotence: bool = True
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    #: Time a batch waits for more records. A few ms buys large batches at high
    #: rates and costs at most that much latency at low rates.
    linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    max_batch_size: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    request_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 30_000
    #: Create missing topics at start-up (auto creation is off on the brokers).
    create_topics: bool = True
    partitions: Annotated[int, msgspec.Meta(ge=1)] = 6
    replication_factor: Annotated[int, msgspec.Meta(ge=1)] = 1
    #: A record unconfirmed for longer than this makes the gateway not ready.
    stall_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    retry_backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0


class BridgeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Validation limits applied before anything reaches Kafka."""

    max_payload_bytes: Annotated[int, msgspec.Meta(ge=256, le=1_000_000)] = MAX_PAYLOAD_BYTES


class ReceiptSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Receipts to devices: which of their seqs Kafka confirmed (gateway/README.md)."""

    #: Publish receipts (QoS 0, not retained) on ``<root>/<site>/<device_id>/receipt``
    #: after Kafka confirmed the records. Off: the gateway behaves as before receipts.
    enabled: bool = True
    #: How long confirmed seqs are gathered per device before their receipt goes out:
    #: the edge's round trip grows by up to this much; shorter means more receipts.
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.2
    #: Most seq ranges held between two sends (all devices together); when reached,
    #: the receipts go out at once (nothing is dropped).
    max_pending_ranges: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = DEFAULT_MAX_RANGES


class HttpSettings(stagekit.settings.HttpSettings, frozen=True, forbid_unknown_fields=True):
    """``/metrics``, ``/healthz`` and ``/readyz``. Port 0 picks a free port."""

    #: Loopback by default: ``/metrics`` names devices and sites. The container
    #: image sets 0.0.0.0 (its port is published on the host's loopback only).
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9108


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole gateway configuration."""

    gateway: GatewaySettings = GatewaySettings()
    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    bridge: BridgeSettings = BridgeSettings()
    receipts: ReceiptSettings = ReceiptSettings()
    http: HttpSettings = HttpSettings()

    def validate(self) -> list[str]:
        """Cross-field problems as ``section.key: problem``."""
        problems: list[str] = []
        if self.gateway.id and not _NAME.fullmatch(self.gateway.id):
            problems.append(f"gateway.id: must match {_NAME.pattern}, got {self.gateway.id!r}")
        if self.mqtt.share_group and not _NAME.fullmatch(self.mqtt.share_group):
            problems.append(
                f"mqtt.share_group: must be empty or match {_NAME.pattern}, "
                f"got {self.mqtt.share_group!r}"
            )
        if not self.mqtt.kinds:
            problems.append("mqtt.kinds: must name at least one of telemetry, alert, status")
        need = self.bridge.max_payload_bytes + PACKET_HEADROOM
        if self.mqtt.max_packet_size < need:
            problems.append(
                f"mqtt.max_packet_size: must be at least bridge.max_payload_bytes + "
                f"{PACKET_HEADROOM} = {need}, got {self.mqtt.max_packet_size}"
            )
        if self.mqtt.reconnect_max_s < self.mqtt.reconnect_min_s:
            problems.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
        problems += host_problems("mqtt.host", self.mqtt.host) + self.http.problems("http")
        problems += self.kafka.problems("kafka")
        if not self.kafka.enable_idempotence:
            problems.append(
                "kafka.enable_idempotence: must be true (at-least-once without reordering)"
            )
        if self.kafka.compression in ("lz4", "zstd", "snappy") and not _has_cramjam():
            problems.append(
                f"kafka.compression: {self.kafka.compression} needs the cramjam package "
                f"(pip install cramjam), or use gzip or none"
            )
        problems.extend(self.mqtt.tls.problems("mqtt.tls"))
        return problems

    @property
    def gateway_id(self) -> str:
        """This instance's id: ``gateway.id`` or the host name."""
        return self.gateway.id or _hostname()

    @property
    def mqtt_client_id(self) -> str:
        """The MQTT client id (stable per instance: it names the persistent session)."""
        return self.mqtt.client_id or f"{self.mqtt.username or 'gateway'}:{self.gateway_id}"

    @property
    def topic_kinds(self) -> tuple[TopicKind, ...]:
        """The subscribed topic kinds as enum members."""
        return tuple(TopicKind(k) for k in self.mqtt.kinds)


def _has_cramjam() -> bool:
    # aiokafka compresses lz4, zstd and snappy with cramjam (an optional extra).
    return importlib.util.find_spec("cramjam") is not None


def _hostname() -> str:
    name = socket.gethostname().split(".")[0] or "gateway"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:64]
    return cleaned if _NAME.fullmatch(cleaned) else "gateway"


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load and validate the gateway config (``path`` None means defaults + env)."""
    return load(GatewayConfig, path, env=os.environ if env is None else env, env_prefix=ENV_PREFIX)
