"""MQTT adapter: a paho 2.x MQTT v5 client with manual acknowledgement.

Delivery guarantee of this hop: QoS 1 messages arrive through a persistent
session (``clean_start=False``, a stable client id, a long session expiry),
and each is acknowledged only when the application calls :meth:`MqttSource.ack`
after Kafka confirmed it. ``Receive Maximum`` in CONNECT caps how many
unacknowledged messages the broker sends; the rest wait in the session.

paho runs its network loop and callbacks on its own thread: callbacks only
hand the message to the asyncio loop (an inbox list plus one
``call_soon_threadsafe`` per burst). An ack is
tagged with the connection it came from; acks from an earlier connection are
skipped, because the broker re-sends those messages on the new one (and when
the session was lost, an old packet id could name a different message).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from telemetry_contract import mqtt_filter

__all__ = ["Incoming", "MqttSource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as received, plus what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int
    user_properties: tuple[tuple[str, str], ...]


class MqttSource:
    """Subscribes (shared) to the device topics and delivers messages to ``on_message``.

    ``on_message`` runs on the asyncio loop given to the constructor.
    """

    def __init__(
        self,
        config: GatewayConfig,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Incoming], None],
        on_connected: Callable[[int], None] | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._loop = loop
        self._on_message = on_message
        self._on_connected = on_connected
        self._connection = 0
        self._connected = threading.Event()
        self._client: paho.Client | None = None
        self._fatal: str | None = None
        self._inbox: list[Incoming | int] = []
        self._inbox_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """True while the client has a working connection."""
        return self._connected.is_set()

    @property
    def fatal(self) -> str | None:
        """Why the broker refused us for good (bad credentials, not authorised)."""
        return self._fatal

    @property
    def filters(self) -> list[str]:
        """The shared-subscription filters this gateway uses."""
        m = self._config.mqtt
        return [
            mqtt_filter(kind, share_group=m.share_group, root=m.topic_root)
            for kind in self._config.topic_kinds
        ]

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself)."""
        m = self._config.mqtt
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._config.mqtt_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls.enabled:
            client.tls_set(
                ca_certs=m.tls.ca_file or None,
                certfile=m.tls.cert_file or None,
                keyfile=m.tls.key_file or None,
            )
            client.tls_insecure_set(m.tls.insecure)
        client.reconnect_delay_set(
            min_delay=max(1, round(m.reconnect_min_s)), max_delay=max(1, round(m.reconnect_max_s))
        )
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        props.ReceiveMaximum = m.receive_maximum
        client.connect_async(
            m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props
        )
        self._client = client
        client.loop_start()
        log.info(
            "event=mqtt_connecting host=%s port=%d client_id=%s receive_maximum=%d",
            m.host,
            m.port,
            self._config.mqtt_client_id,
            m.receive_maximum,
        )

    def stop(self) -> None:
        """Disconnect (the session and its unacknowledged messages stay on the broker)."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def ack(self, message: Incoming) -> None:
        """Acknowledge a message (thread-safe). Skipped if it came on an older connection."""
        client = self._client
        if client is None or message.qos == 0 or message.connection != self._connection:
            return
        client.ack(message.mid, message.qos)

    def _enqueue(self, item: Incoming | int) -> None:
        """From paho's thread: a message, or the number of a new connection."""
        with self._inbox_lock:
            self._inbox.append(item)
            first = len(self._inbox) == 1
        if first:  # one wake-up of the event loop per burst, not per message
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        """On the event loop: deliver what paho's thread received since the last call."""
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
        for item in batch:
            if isinstance(item, Incoming):
                self._on_message(item)
            elif self._on_connected is not None:
                self._on_connected(item)

    # --- paho callbacks (paho's thread) -------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        try:
            if reason_code.is_failure:
                log.error("event=mqtt_connect_refused reason=%s", reason_code)
                if reason_code.value in (0x86, 0x87, 0x8C):  # bad credentials / not authorised
                    self._fatal = f"MQTT broker refused the connection: {reason_code}"
                return
            self._connection += 1
            if self._connection > 1:
                self._metrics.reconnects.labels("mqtt").inc()
            options = SubscribeOptions(qos=1)
            result, _mid = client.subscribe([(f, options) for f in self.filters])
            self._connected.set()
            self._metrics.connected.labels("mqtt").set(1)
            self._enqueue(self._connection)  # in order with the messages around it
            log.info(
                "event=mqtt_connected session_present=%s connection=%d filters=%s subscribe_rc=%s",
                flags.session_present,
                self._connection,
                ",".join(self.filters),
                result,
            )
        except Exception:  # an exception here would kill paho's thread
            log.exception("event=mqtt_on_connect_error")

    def _handle_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        self._connected.clear()
        self._metrics.connected.labels("mqtt").set(0)
        log.warning("event=mqtt_disconnected reason=%s", reason_code)

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = bytes(msg._topic).decode("utf-8", "replace")
            props = getattr(msg, "properties", None)
            user = tuple(getattr(props, "UserProperty", None) or ()) if props else ()
            incoming = Incoming(
                topic=topic,
                payload=bytes(msg.payload),
                mid=msg.mid,
                qos=msg.qos,
                connection=self._connection,
                user_properties=tuple((str(k), str(v)) for k, v in user),
            )
            self._enqueue(incoming)
        except RuntimeError:
            pass  # the loop is closed: we are shutting down; the broker re-sends
        except Exception:
            log.exception("event=mqtt_on_message_error mid=%s", getattr(msg, "mid", None))
