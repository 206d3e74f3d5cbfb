"""What the gateway's run loop needs from its MQTT source, its Kafka sink and a clock.

:class:`~gateway.app.Gateway` is written against these ports and takes the
adapters in its constructor: :func:`~gateway.app.build_gateway` hands it the
real ones (:class:`~gateway.mqtt.MqttSource`, :class:`~gateway.kafka.KafkaSink`),
tests hand it fakes. The adapters get the gateway's callbacks when they are
started, not when they are built, because the gateway and its adapters refer
to each other: a message goes source -> gateway -> sink, and its
acknowledgement sink -> gateway -> source.

>>> clock = Clock(wall_ms=lambda: 1_767_225_600_000, monotonic=lambda: 5.0)
>>> clock.wall_ms(), clock.monotonic()
(1767225600000, 5.0)
>>> 1_700_000_000_000 < SYSTEM_CLOCK.wall_ms()
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.bridge import KafkaRecord

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "Incoming",
    "MessageSource",
    "OnConnected",
    "OnMessage",
    "OnWritten",
    "RecordSink",
]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as received, plus what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: Number of the connection it came on: an ack is only valid on that one.
    connection: int
    user_properties: tuple[tuple[str, str], ...]


#: Called on the event loop for every message received.
OnMessage = Callable[[Incoming], None]
#: Called on the event loop when a connection is accepted, with its number (from 1).
OnConnected = Callable[[int], None]
#: Called on the event loop with the token of each record Kafka confirmed.
OnWritten = Callable[[Any], None]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the gateway reads the time.

    ``wall_ms`` stamps ``received_ts`` and bounds the event time of a
    message; ``monotonic`` (seconds) measures idleness and deadlines.
    """

    wall_ms: Callable[[], int] = _wall_ms
    monotonic: Callable[[], float] = time.monotonic


#: The real clock.
SYSTEM_CLOCK = Clock()


class MessageSource(Protocol):
    """Delivers MQTT messages, takes their acks (:class:`~gateway.mqtt.MqttSource`)."""

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        ...

    @property
    def paused(self) -> bool:
        """True while reading is paused."""
        ...

    @property
    def fatal(self) -> str | None:
        """Why the broker refused us for good, if it did (the gateway exits 1)."""
        ...

    @property
    def session_present(self) -> bool | None:
        """The broker's "session present" flag of the last accepted connection."""
        ...

    def start(self, on_message: OnMessage, on_connected: OnConnected) -> None:
        """Connect in the background (and reconnect) and deliver to the callbacks."""
        ...

    async def stop(self, *, end_session: bool = False) -> None:
        """Disconnect after the queued acknowledgements (idempotent)."""
        ...

    def ack(self, message: Incoming) -> None:
        """Acknowledge a message (skipped if it came on an earlier connection)."""
        ...

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0, not retained (a receipt); False when there is no connection."""
        ...

    def pause_reading(self) -> None:
        """Stop reading: the broker keeps the rest."""
        ...

    def resume_reading(self) -> None:
        """Read again."""
        ...

    async def wait_connected(self, wait_s: float) -> bool:
        """True once a connection is accepted (and subscribed), within ``wait_s``."""
        ...

    async def unsubscribe(self) -> bool:
        """Remove the subscriptions from the session; True once the broker confirmed."""
        ...


class RecordSink(Protocol):
    """Writes records and confirms each once written (:class:`~gateway.kafka.KafkaSink`)."""

    @property
    def healthy(self) -> bool:
        """Connected and writing."""
        ...

    @property
    def broken(self) -> str | None:
        """Why the sink stopped working for good, if it did (the gateway exits 1)."""
        ...

    async def start(self, on_written: OnWritten) -> None:
        """Connect (retrying until it can) and start writing."""
        ...

    async def stop(self) -> None:
        """Stop writing and disconnect (idempotent)."""
        ...

    def submit(self, record: KafkaRecord, token: Any) -> None:
        """Queue ``record``; ``on_written(token)`` once it is written."""
        ...
