"""MQTT adapter: a paho 2.x MQTT v5 client with manual acknowledgement.

Delivery guarantee of this hop: QoS 1 messages arrive through a persistent
session (``clean_start=False``, a stable client id, a long session expiry),
and each is acknowledged only when the application calls :meth:`MqttSource.ack`
after Kafka confirmed it. ``Receive Maximum`` in CONNECT caps how many
unacknowledged messages the broker sends; the rest wait in the session.

paho runs on the asyncio event loop itself, with no thread of its own (paho's
"external event loop" API): the socket is watched with ``loop.add_reader`` /
``add_writer`` and drives ``loop_read`` / ``loop_write``, a timer calls
``loop_misc`` for keep-alive, and a supervisor task (re)connects with backoff.
So a message goes from the socket to the bridge and to Kafka without crossing
a thread, and the many PUBACKs queued in one loop iteration leave in one
writer callback. Only the blocking TCP/TLS connect runs in a worker thread.

An ack is tagged with the connection it came from; acks from an earlier
connection are skipped, because the broker re-sends those messages on the new
one (and when the session was lost, an old packet id could name a different
message).

Reconnect delays come from :class:`stagekit.backoff.Backoff`
(``mqtt.reconnect_min_s`` doubling up to ``mqtt.reconnect_max_s``, from the
start again after a connection that was accepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.ports import Incoming, OnConnected, OnMessage
from gateway.wire import GatewayClient, ProtocolError
from stagekit.backoff import Backoff, sleep_or_stop
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import mqtt_filter, printable

__all__ = ["Incoming", "MqttSource"]

log = logging.getLogger(__name__)

#: How often paho's keep-alive bookkeeping (``loop_misc``) runs.
_MISC_INTERVAL_S: Final = 1.0
#: Packets read per readable event before other work (Kafka) gets a turn.
_READ_BUDGET: Final = 256
_PUBACK: Final = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id (v5: success)
_PUBACK_TYPE: Final = 0x40
#: paho's packet-level methods used to read many packets per wake-up and to
#: send many PUBACKs in one write; without them (another paho version) the
#: adapter falls back to the public loop_read()/ack(), which is slower but the same.
_PAHO_FAST: Final = all(
    hasattr(paho.Client, name)
    for name in ("_packet_read", "_loop_rc_handle", "_packet_queue", "_sock_recv", "_sock_close")
)
#: Refusals that no retry can fix: bad user name or password, not authorised, banned.
_FATAL_CONNACK: Final = frozenset({0x86, 0x87, 0x8A, 0x8C})


class MqttSource:
    """Subscribes (shared) to the device topics and delivers messages to ``on_message``.

    Every callback (``on_message``, ``on_connected``) runs on the event loop
    that calls :meth:`start` (``loop``, if given, must be that loop). The
    gateway gives the callbacks to :meth:`start`; a standalone reader (the
    benchmark's) may give them to the constructor instead. With
    ``subscribe=False`` the client subscribes to nothing and only receives
    what its persistent session holds (used to drain a retired gateway's
    session).
    """

    def __init__(
        self,
        config: GatewayConfig,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop | None = None,
        on_message: OnMessage | None = None,
        on_connected: OnConnected | None = None,
        *,
        subscribe: bool = True,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._given_loop = loop
        self._on_message: OnMessage = on_message or _unstarted
        self._on_connected = on_connected
        self._subscribe = subscribe
        self._connection = 0
        self._live = False  # CONNACK accepted and the socket still open
        self._client: GatewayClient | None = None
        self._fatal: str | None = None
        self._sock: Any = None
        self._lost = asyncio.Event()
        self._closed = asyncio.Event()
        self._suback = asyncio.Event()
        self._unsuback = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._connection_was_good = False
        self._loop_thread: int | None = None
        self._connecting: asyncio.Future[Any] | None = None
        self._acks: list[int] = []
        self._paused = False
        self._acks_connection = 0
        self._rejects = RateLimitedLog(lines=1, per_s=10.0)  # per protocol error name
        #: The broker's "session present" flag of the last accepted connection.
        self.session_present: bool | None = None

    @property
    def connected(self) -> bool:
        """True while the client has a working connection."""
        return self._live

    @property
    def fatal(self) -> str | None:
        """Why the broker refused us for good (bad credentials, not authorised)."""
        return self._fatal

    @property
    def connection(self) -> int:
        """Number of the current (or last) accepted connection, from 1."""
        return self._connection

    @property
    def filters(self) -> list[str]:
        """The shared-subscription filters this gateway uses."""
        m = self._config.mqtt
        return [
            mqtt_filter(kind, share_group=m.share_group, root=m.topic_root)
            for kind in self._config.topic_kinds
        ]

    # --- lifecycle ----------------------------------------------------------

    def start(
        self, on_message: OnMessage | None = None, on_connected: OnConnected | None = None
    ) -> None:
        """Connect in the background, deliver to the callbacks; reconnects with backoff."""
        if on_message is not None:
            self._on_message = on_message
        if on_connected is not None:
            self._on_connected = on_connected
        if self._on_message is _unstarted:
            raise ValueError("MqttSource.start: no on_message callback")
        self._loop = self._given_loop or asyncio.get_running_loop()
        m = self._config.mqtt
        client = GatewayClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._config.mqtt_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            on_publish_fast=self._handle_fast_publish,
            on_protocol_error=self._handle_protocol_error,
            max_packet_size=m.max_packet_size,
        )
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls.enabled:
            client.tls_set_context(m.tls.context())
            client.tls_insecure_set(m.tls.insecure)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_unsubscribe = self._handle_unsubscribe
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        self._client = client
        self._loop_thread = threading.get_ident()  # start() runs on the loop
        self._supervisor = self._loop.create_task(self._supervise())
        self._misc = self._loop.create_task(self._keepalive())
        log.info(
            "event=mqtt_connecting host=%s port=%d client_id=%s receive_maximum=%d tls=%s",
            m.host,
            m.port,
            self._config.mqtt_client_id,
            m.receive_maximum,
            m.tls.enabled,
        )

    async def stop(self, *, end_session: bool = False, wait_s: float = 5.0) -> None:
        """Disconnect after the queued PUBACKs are written (idempotent).

        The session and its unacknowledged messages stay on the broker, unless
        ``end_session``: then DISCONNECT carries Session Expiry Interval 0 and
        the broker discards the session (MQTT v5 3.14.2.2.2).
        """
        self._stopping = True
        self._stop_requested.set()
        for task in (self._supervisor, self._misc):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._supervisor = self._misc = None
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            # A handshake is running in a worker thread: let it finish, so that
            # its socket is closed here rather than leaked.
            await asyncio.wait({connecting}, timeout=wait_s + 10.0)
            if connecting.done() and not connecting.cancelled():
                connecting.exception()  # retrieved: a failed handshake is not news here
            for _ in range(3):
                await asyncio.sleep(0)  # run the socket callbacks it scheduled
        client = self._client
        if client is None:
            return
        if self._acks:
            self._flush_acks()  # the PUBACKs go before the DISCONNECT
        if self._sock is not None:
            props = None
            if end_session:
                props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0
            client.disconnect(properties=props)  # queued after the PUBACKs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), wait_s)
        if self._sock is not None:  # the broker did not let us finish: just close
            self._forget_socket(self._sock)
        client._sock_close()  # idempotent; no public close without DISCONNECT
        self._client = None
        self._live = False
        self._metrics.connected.labels("mqtt").set(0)

    async def wait_connected(self, wait_s: float) -> bool:
        """Wait until a connection is accepted (and subscribed when subscribing)."""
        deadline = self._loop.time() + wait_s
        while self._loop.time() < deadline:
            if self._live and (not self._subscribe or self._suback.is_set()):
                return True
            if self._fatal:
                return False
            await asyncio.sleep(0.05)
        return False

    async def unsubscribe(self, wait_s: float = 30.0) -> bool:
        """Remove this client's subscriptions from its session; True once the broker confirmed."""
        client = self._client
        if client is None or not self._live:
            return False
        self._unsuback.clear()
        rc, _mid = client.unsubscribe(self.filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        try:
            await asyncio.wait_for(self._unsuback.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    def ack(self, message: Incoming) -> None:
        """Acknowledge a message. Skipped if it came on an older or a lost connection.

        The PUBACKs of one event-loop iteration leave together, in the order
        of the calls, in one write at the end of the iteration.
        """
        client = self._client
        if (
            client is None
            or not self._live
            or message.qos == 0
            or message.connection != self._connection
        ):
            return
        if not _PAHO_FAST:
            client.ack(message.mid, message.qos)
            return
        if not self._acks:
            self._acks_connection = message.connection
            self._loop.call_soon(self._flush_acks)
        self._acks.append(message.mid)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0, not retained (receipts); False when there is no connection.

        Nothing waits for a later connection: a device re-sends what no receipt covered.
        """
        client = self._client
        if client is None or not self._live:
            return False
        info = client.publish(topic, payload, qos=0, retain=False)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    @property
    def paused(self) -> bool:
        """True while reading is paused (see :meth:`pause_reading`)."""
        return self._paused

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker's messages wait in TCP and in the session.

        The gateway bounds its own in-flight window this way: Mosquitto 2.0
        configured with a large ``max_queued_messages`` sends a reconnecting
        session's whole queue after the first PUBACK, whatever Receive Maximum
        said. While paused, PINGREQs still go out so the broker keeps the
        connection; their PINGRESPs are read on resume.
        """
        if self._paused:
            return
        self._paused = True
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if not self._paused:
            return
        self._paused = False
        client, sock = self._client, self._sock
        if client is not None and sock is not None:
            self._loop.add_reader(sock, self._readable, client, sock)
            self._loop.call_soon(self._readable, client, sock)  # TLS-buffered data

    def _flush_acks(self) -> None:
        mids, self._acks = self._acks, []
        if not mids:
            return
        client = self._client
        if client is None or not self._live or self._acks_connection != self._connection:
            return  # the broker re-sends these on the new connection
        pack = _PUBACK.pack
        blob = b"".join([pack(_PUBACK_TYPE, 2, mid) for mid in mids])
        client._packet_queue(_PUBACK_TYPE, blob, 0, 0)  # one packet, N PUBACKs

    # --- connection supervision (event loop) --------------------------------

    async def _supervise(self) -> None:
        m = self._config.mqtt
        backoff = Backoff(m.reconnect_min_s, max(m.reconnect_min_s, m.reconnect_max_s))
        first = True
        while not self._stopping:
            client = self._client
            if client is None or self._fatal:
                return
            self._lost.clear()
            self._closed.clear()
            self._connection_was_good = False
            try:
                if first:
                    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                    props.SessionExpiryInterval = m.session_expiry_s
                    props.ReceiveMaximum = m.receive_maximum
                    props.MaximumPacketSize = m.max_packet_size
                    client.connect_async(
                        m.host,
                        m.port,
                        keepalive=m.keepalive_s,
                        clean_start=False,
                        properties=props,
                    )
                    first = False
                # The TCP (and TLS) handshake blocks: run it off the loop. The
                # socket callbacks it fires hop back onto the loop.
                self._connecting = self._loop.run_in_executor(None, client.reconnect)
                await asyncio.shield(self._connecting)
            except (OSError, ssl.SSLError, ValueError) as exc:
                delay = backoff.next()
                log.warning(
                    "event=mqtt_connect_failed host=%s port=%d error=%r retry_in_s=%.1f",
                    m.host,
                    m.port,
                    exc,
                    delay,
                )
                await sleep_or_stop(delay, self._stop_requested)
                continue
            await self._lost.wait()
            if self._finished():
                return
            if self._connection_was_good:
                backoff.reset()
            await sleep_or_stop(backoff.next(), self._stop_requested)

    def _finished(self) -> bool:
        return self._stopping or self._fatal is not None

    async def _keepalive(self) -> None:
        since_ping = 0.0
        while True:
            await asyncio.sleep(_MISC_INTERVAL_S)
            client = self._client
            if client is None or self._sock is None:
                continue
            if not self._paused or not _PAHO_FAST:
                since_ping = 0.0
                client.loop_misc()
                continue
            # Paused: paho would wait for a PINGRESP we do not read and drop the
            # connection; send bare PINGREQs instead (answered on resume).
            since_ping += _MISC_INTERVAL_S
            if since_ping >= self._config.mqtt.keepalive_s / 2:
                since_ping = 0.0
                client._packet_queue(0xC0, b"\xc0\x00", 0, 0)  # PINGREQ

    # --- socket callbacks (may come from the connect thread) ----------------

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch, client, sock)

    def _watch(self, client: paho.Client, sock: Any) -> None:
        if client is not self._client:
            sock.close()
            return
        self._sock = sock
        # A new connection: the gateway drops the old window, so read again
        # (the CONNACK must be read in any case).
        self._paused = False
        self._loop.add_reader(sock, self._readable, client, sock)
        if client.want_write():
            self._loop.add_writer(sock, self._writable, client, sock)

    def _socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._forget_socket, sock)

    def _forget_socket(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
            self._live = False
            self._lost.set()
            self._closed.set()

    def _register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, client, sock)

    def _add_writer(self, client: paho.Client, sock: Any) -> None:
        if sock is self._sock and client is self._client:
            self._loop.add_writer(sock, self._writable, client, sock)

    def _unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _readable(self, client: GatewayClient, sock: Any) -> None:
        if sock is not self._sock or self._paused:
            return
        if not _PAHO_FAST:
            client.loop_read()  # one packet per call
            pending = getattr(sock, "pending", None)
            if pending is not None and pending() > 0:  # TLS: already decrypted
                self._loop.call_soon(self._readable, client, sock)
            return
        for _ in range(_READ_BUDGET):
            rc = client._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                if client.buffered():  # paho stopped mid-way through a large packet
                    self._loop.call_soon(self._readable, client, sock)
                return  # socket (and TLS buffer) empty: wait for the next event
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                client._loop_rc_handle(rc)  # closes and reports the loss
                return
            if sock is not self._sock or self._paused:
                return
        # Budget used up: let the loop run Kafka's work, then read on (a TLS
        # buffer may hold data that does not make the socket readable).
        self._loop.call_soon(self._readable, client, sock)

    def _writable(self, client: paho.Client, sock: Any) -> None:
        if sock is not self._sock:
            return
        client.loop_write()

    # --- paho callbacks (on the event loop) ---------------------------------

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
                if reason_code.value in _FATAL_CONNACK:
                    self._fatal = f"MQTT broker refused the connection: {reason_code}"
                return
            self._connection += 1
            self._live = True
            self._connection_was_good = True
            self.session_present = bool(flags.session_present)
            if self._connection > 1:
                self._metrics.reconnects.labels("mqtt").inc()
            result: Any = "-"
            self._suback.clear()
            if self._subscribe:
                options = SubscribeOptions(qos=1)
                result, _mid = client.subscribe([(f, options) for f in self.filters])
            self._metrics.connected.labels("mqtt").set(1)
            if self._on_connected is not None:
                self._on_connected(self._connection)
            log.info(
                "event=mqtt_connected session_present=%s connection=%d filters=%s subscribe_rc=%s",
                flags.session_present,
                self._connection,
                ",".join(self.filters) if self._subscribe else "-",
                result,
            )
        except Exception:  # never let paho's read loop die half-way
            log.exception("event=mqtt_on_connect_error")

    def _handle_subscribe(self, *_args: Any) -> None:
        self._suback.set()

    def _handle_unsubscribe(self, *_args: Any) -> None:
        self._unsuback.set()

    def _handle_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        self._live = False
        self._metrics.connected.labels("mqtt").set(0)
        if self._stopping:
            log.info("event=mqtt_disconnected reason=%s", reason_code)
        else:
            log.warning("event=mqtt_disconnected reason=%s", reason_code)
        self._lost.set()

    def _handle_fast_publish(self, message: Any) -> None:
        topic, mid, qos, payload, user = message
        try:
            self._on_message(Incoming(topic, payload, mid, qos, self._connection, user))
        except Exception as exc:  # a bug: the gateway's handler never raises
            _log_handler_error(self._rejects, mid, exc)

    def _handle_protocol_error(self, error: ProtocolError) -> None:
        self._metrics.protocol_errors.labels(error.name).inc()
        self._rejects.log(
            log,
            logging.WARNING,
            "event=mqtt_protocol_error reason_code=0x%02x name=%s detail=%s",
            error.code,
            error.name,
            printable(error.detail, 200, quote=True),
            key=error.name,
        )

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = bytes(msg._topic).decode("utf-8", "replace")
            props = msg.properties
            user: Any = getattr(props, "UserProperty", None) if props is not None else None
            props_seen = tuple((str(k), str(v)) for k, v in user) if user else ()
            payload = bytes(msg.payload)
            self._on_message(
                Incoming(topic, payload, msg.mid, msg.qos, self._connection, props_seen)
            )
        except Exception as exc:  # a bug: the gateway's handler never raises
            _log_handler_error(self._rejects, getattr(msg, "mid", None), exc)


def _unstarted(_message: Incoming) -> None:
    """Placeholder callback until :meth:`MqttSource.start` is given the real one."""


def _log_handler_error(book: RateLimitedLog, mid: object, exc: Exception) -> None:
    """A bug: the gateway's handler never raises. One bounded line per 10 s, no traceback."""
    text = printable(f"{type(exc).__name__}: {exc}", 200, quote=True)
    book.log(
        log, logging.ERROR, "event=mqtt_on_message_error mid=%s error=%s", mid, text, key="handler"
    )
