"""Load generator of the end-to-end benchmark: simulated devices publishing QoS 1.

Each worker process owns some devices, one MQTT v5 connection per device
(username = device id, as the edge agent logs in), and publishes contract
:class:`~telemetry_contract.Reading` messages on
``thermowatch/<site>/<device>/telemetry`` with QoS 1, paced to its share of
the offered rate. Pacing is batched: every ``tick_s`` the worker publishes
as many readings as the rate says are due, so a short stall is caught up in
one burst rather than lost; the devices take turns (:class:`fleet.RoundRobin`),
so each publishes once per ``devices / rate`` seconds. The connections sit on
one selector per worker (:class:`fleet.Pump`; fleets of 10,000-100,000
devices: :mod:`benchmarks.e2e.fleet`). Event time is the wall clock at the moment the
reading is queued for sending (``ts`` = send time); seqs are contiguous per
device over the whole run (all steps).

Per step the worker reports what it really did: readings sent,
readings the broker acknowledged (PUBACK) inside the step window, how far it
fell behind its schedule, the anomalous readings it sent (device, seq, ts)
and, streamed while the step runs, a sample of (document id, ts) pairs for
the searchability probe.

>>> due(1000.0, 0.5, 0)
500
>>> due(1000.0, 0.5, 480)
20
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue

from benchmarks.e2e.fleet import Pump, RoundRobin, connect_from, connect_wait
from stagekit.mqttwire import frame

#: Temperature of a normal reading and of an anomalous one (above the
#: benchmark's threshold rule, which opens an alert on a single reading).
NORMAL_C = 20.0
ANOMALY_C = 60.0


#: TLS contexts of password logins, by CA file (one per worker process).
_CA_CONTEXTS: dict[str, ssl.SSLContext] = {}


def due(rate: float, elapsed_s: float, sent: int) -> int:
    """How many readings are due now: the schedule minus what was sent."""
    return max(0, int(rate * elapsed_s) - sent)


class RawPublisher:
    """A device's MQTT v5 connection that does nothing but publish at QoS 1.

    Hand-written instead of paho on purpose: the generator plays devices that
    in real life are other machines, so it must leave this machine's CPU to
    the pipeline under test. With one paho client (and network thread) per
    device it cost ~220 µs of CPU per reading (110 % of a core at 5,000/s,
    more than the gateway, processor and search server together); writing the
    packets directly costs a few µs. It honours the broker's Receive Maximum
    (excess publishes wait in a local queue), counts PUBACKs with a success
    code, and sends PINGREQs at half the keep-alive. Single-threaded: the
    worker calls :meth:`service` every tick.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        user: str,
        password: str,
        tls: tuple[str, str | None] | None = None,
        *,
        source: str | None = None,
        keepalive: int = 30,
    ) -> None:
        """``tls``: the stack endpoint's ``(ca_file, certs_dir)``; the connection is
        TLS with ``user``'s client certificate (the broker's certificate port), or
        with ``certs_dir`` None TLS with the CA only (the password port).
        ``source``: the local address to connect from (see :func:`source_address`)."""
        self.keepalive = keepalive
        raw = connect_from(host, port, source, timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = raw
        if tls is not None:
            if tls[1] is not None:
                from deploy.local.pki import client_tls

                ctx = ssl.create_default_context(cafile=tls[0])
                paths = client_tls({"ca_file": tls[0], "certs_dir": tls[1]}, user)
                ctx.load_cert_chain(paths.cert_file, paths.key_file)
            else:  # one context for every password login (~0.5 ms each to make)
                ctx = _CA_CONTEXTS.get(tls[0]) or _CA_CONTEXTS.setdefault(
                    tls[0], ssl.create_default_context(cafile=tls[0])
                )
            try:
                self.sock = ctx.wrap_socket(raw, server_hostname=host)
            except BaseException:
                raw.close()
                raise
        self.acked = 0
        self.failed = 0
        self._mid = 0
        self._inflight = 0
        self._receive_maximum = 65535
        self._waiting: collections.deque[bytes] = collections.deque()
        self._out = bytearray()
        self._in = bytearray()
        self._last_sent = time.monotonic()
        try:
            self._connect(client_id, user, password)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def _connect(self, client_id: str, user: str, password: str) -> None:
        body = b"\x00\x04MQTT\x05" + bytes([0xC2]) + self.keepalive.to_bytes(2, "big")
        body += b"\x00"  # no properties: a clean session that ends with the connection
        for text in (client_id, user, password):
            raw = text.encode()
            body += len(raw).to_bytes(2, "big") + raw
        self.sock.sendall(bytes([0x10]) + _varint(len(body)) + body)
        while True:
            whole = frame(self._in)
            if whole is not None:
                break
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("broker closed the connection before CONNACK")
            self._in += data
        first, start, end = whole
        connack = bytes(self._in[start:end])
        del self._in[:end]
        if first != 0x20 or len(connack) < 2 or connack[1] != 0:
            raise ConnectionError(f"connection refused: CONNACK {connack.hex()}")
        # Properties: pick Receive Maximum (0x21, two bytes) if the broker sent it.
        size, shift, i = 0, 0, 2
        while True:  # the properties' length (a variable byte integer)
            byte = connack[i]
            size |= (byte & 0x7F) << shift
            i += 1
            shift += 7
            if not byte & 0x80:
                break
        props = connack[i : i + size]
        i = 0
        while i < len(props):
            ident = props[i]
            if ident == 0x21:
                self._receive_maximum = int.from_bytes(props[i + 1 : i + 3], "big")
                break
            i += 1 + _property_size(ident, props, i + 1)

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Queue one QoS 1 PUBLISH (sent by :meth:`service` or now if there is room)."""
        self._mid = self._mid % 65535 + 1
        body = len(topic).to_bytes(2, "big") + topic + self._mid.to_bytes(2, "big") + b"\x00"
        packet = b"\x32" + _varint(len(body) + len(payload)) + body + payload
        if self._inflight < self._receive_maximum:
            self._inflight += 1
            self._out += packet
        else:
            self._waiting.append(packet)

    @property
    def pending(self) -> bool:
        """Bytes are waiting to be written (the socket was full)."""
        return bool(self._out)

    def read(self) -> None:
        """Read what the broker sent: count PUBACKs, release waiting publishes."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not data:
                raise ConnectionError("broker closed the connection")
            self._in += data
        while (whole := frame(self._in)) is not None:
            first, start, end = whole
            if first == 0x40:
                ok = end - start < 3 or self._in[start + 2] < 0x80
                self.acked += ok
                self.failed += not ok
                self._inflight -= 1
            elif first == 0xE0:
                raise ConnectionError(f"broker sent DISCONNECT {self._in[start:end].hex()}")
            del self._in[:end]
        while self._waiting and self._inflight < self._receive_maximum:
            self._inflight += 1
            self._out += self._waiting.popleft()

    def ping_if_idle(self, now: float) -> None:
        """Queue a PINGREQ when nothing was sent for half the keep-alive (any
        packet keeps the connection alive: a device that publishes more often
        than that never pings)."""
        if now - self._last_sent > self.keepalive / 2:
            self._last_sent = now
            self._out += b"\xc0\x00"

    def flush(self) -> bool:
        """Write what is pending, as far as the socket takes it; True if some is left."""
        if self._out:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                sent = 0
            if sent:
                self._last_sent = time.monotonic()
                del self._out[:sent]
        return bool(self._out)

    def service(self) -> None:
        """Read PUBACKs, release waiting publishes, ping if idle, write what is pending."""
        self.read()
        self.ping_if_idle(time.monotonic())
        self.flush()

    def close(self) -> None:
        self.sock.setblocking(True)
        with contextlib.suppress(OSError):
            self.sock.sendall(bytes(self._out) + b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _property_size(ident: int, props: bytes, at: int) -> int:
    """Size of a CONNACK property's value (MQTT v5 3.2.2.3)."""
    if ident in (0x24, 0x25, 0x28, 0x29, 0x2A, 0x01, 0x17, 0x19):
        return 1
    if ident in (0x21, 0x13, 0x22):
        return 2
    if ident in (0x11, 0x27, 0x02):
        return 4
    if ident == 0x26:
        first = 2 + int.from_bytes(props[at : at + 2], "big")
        return first + 2 + int.from_bytes(props[at + first : at + first + 2], "big")
    return 2 + int.from_bytes(props[at : at + 2], "big")  # strings and binary data


@dataclass
class Device:
    """One simulated device and its MQTT connection."""

    device_id: str
    site: str
    topic: str
    client: RawPublisher | None = None
    topic_bytes: bytes = b""
    seq: int = 0
    anomaly_pending: bool = False

    def __post_init__(self) -> None:
        self.topic_bytes = self.topic.encode()

    @property
    def acked(self) -> int:
        return self.client.acked if self.client is not None else 0


@dataclass(frozen=True)
class Login:
    """How a worker's devices connect: TLS ``(ca_file, certs_dir)`` (``certs_dir``
    None: password login on the password port), the devices' source addresses
    (None: the system's choice; else one per device, :func:`fleet.source_address`),
    connections opened per second (0: no limit), the keep-alive in seconds."""

    tls: tuple[str, str | None] | None = None
    sources: Sequence[str] | None = None
    connect_rate: float = 0.0
    keepalive: int = 30


def _connect_all(
    devs: list[Device], passwords: dict[str, str], host: str, port: int, login: Login
) -> str | None:
    """Connect every device at the login's pace; an error text, or None."""
    t0 = time.monotonic()
    for k, dev in enumerate(devs):
        time.sleep(connect_wait(k, login.connect_rate, time.monotonic() - t0))
        try:
            dev.client = RawPublisher(
                host,
                port,
                dev.device_id,
                dev.device_id,
                passwords[dev.device_id],
                login.tls,
                source=login.sources[k] if login.sources else None,
                keepalive=login.keepalive,
            )
        except OSError as exc:
            return f"{dev.device_id} could not connect ({k} of {len(devs)} connected): {exc!r}"
    return None


def worker_main(
    index: int,
    devices: Sequence[tuple[str, str]],
    passwords: dict[str, str],
    host: str,
    port: int,
    run_id: str,
    conn: Connection,
    samples: Queue[tuple[str, int]],
    login: Login,
) -> None:
    """Entry point of one worker process (driven by commands on ``conn``)."""
    from telemetry_contract import Reading, TopicKind, encode, mqtt_topic

    devs = [Device(d, s, mqtt_topic(s, d, TopicKind.TELEMETRY)) for d, s in devices]
    t_connect = time.monotonic()
    error = _connect_all(devs, passwords, host, port, login)
    if error is not None:
        conn.send({"error": error})
        return
    clients = [dev.client for dev in devs if dev.client is not None]
    pump = Pump(list(clients))
    conn.send({"ready": index, "connect_s": round(time.monotonic() - t_connect, 1)})
    ping_every = login.keepalive / 4
    next_ping = time.monotonic() + ping_every

    def keep_alive(now: float) -> None:
        nonlocal next_ping
        if now >= next_ping:  # a sweep every quarter keep-alive, not every tick
            next_ping = now + ping_every
            for client in clients:
                client.ping_if_idle(now)
                if client.pending:
                    pump.mark(client)

    rr = 0  # the device of the next reading, over the whole run
    while True:
        while not conn.poll(0.5):  # between steps: answer the broker, keep alive
            pump.run(0.0)
            keep_alive(time.monotonic())
        cmd = conn.recv()
        if cmd.get("stop"):
            break
        rate = float(cmd["rate"])
        seconds = float(cmd["seconds"])
        anomaly_every = float(cmd["anomaly_every_s"])
        sample_every = float(cmd["sample_every_s"])
        tick = float(cmd.get("tick_s", 0.005))
        start_at = float(cmd["start_at"])  # wall clock, shared by every worker
        acked0 = sum(d.acked for d in devs)
        anomalies: list[tuple[str, int, int]] = []
        robin = RoundRobin(len(devs), len(devs) / rate, start=rr) if rate > 0 else None
        max_behind = 0
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        # Stagger the workers' anomalies and samples across the interval.
        next_anomaly = t0 + anomaly_every * (0.5 + index / 16)
        next_sample = t0 + sample_every * (index + 1) / 8
        while True:
            now = time.monotonic()
            elapsed = now - t0
            if elapsed >= seconds:
                break
            due_now = robin.take(elapsed) if robin is not None else []
            max_behind = max(max_behind, len(due_now))
            for i in due_now:
                dev = devs[i]
                dev.seq += 1
                temp = NORMAL_C + (dev.seq % 7) * 0.1
                anomalous = False
                if dev.anomaly_pending:
                    dev.anomaly_pending = False  # this normal reading resolves the alert
                elif anomaly_every > 0 and now >= next_anomaly:
                    next_anomaly += anomaly_every
                    temp, anomalous = ANOMALY_C, True
                    dev.anomaly_pending = True
                ts = time.time_ns() // 1_000_000
                payload = encode(
                    Reading(
                        device_id=dev.device_id,
                        sensor_id="host",
                        site=dev.site,
                        seq=dev.seq,
                        ts=ts,
                        temp_c=temp,
                    )
                )
                client = dev.client
                assert client is not None
                client.publish(dev.topic_bytes, payload)
                pump.mark(client)
                if anomalous:
                    anomalies.append((dev.device_id, dev.seq, ts))
                elif sample_every > 0 and now >= next_sample:
                    next_sample += sample_every
                    samples.put((f"{dev.device_id}:{dev.seq}", ts))
            pump.run(tick)
            keep_alive(now)
        sent = robin.sent if robin is not None else 0
        if robin is not None:
            rr = robin.next
        window_s = time.monotonic() - t0
        acked_in_window = sum(d.acked for d in devs) - acked0
        # Let the broker acknowledge the tail before the next step (bounded).
        deadline = time.monotonic() + 15.0
        while sum(d.acked for d in devs) - acked0 < sent and time.monotonic() < deadline:
            until = time.monotonic() + 0.2
            while time.monotonic() < until:
                pump.run(0.01)
        conn.send(
            {
                "sent": sent,
                "acked_in_window": acked_in_window,
                "acked_total": sum(d.acked for d in devs) - acked0,
                "window_s": window_s,
                "max_behind": max_behind,
                "anomalies": anomalies,
            }
        )
    pump.close()
    for client in clients:
        client.close()
    conn.send({"stopped": index})


def storm_main(
    host: str,
    port: int,
    device: tuple[str, str],
    password: str,
    run_id: str,
    count: int,
    rate: float,
    start_at: float,
    conn: Connection,
    tls: tuple[str, str | None] | None = None,
) -> None:
    """One hostile device: ``count`` edge alerts of alternating severity at ``rate``/s.

    Every alert is raised (never cleared) with the other severity than the one
    before, so each one changes the device's ``edge_anomaly`` alert (opened,
    then updated). The text tries to ping a Slack channel. Reports what it sent.
    """
    from telemetry_contract import EdgeAlert, EdgeAlertKind, Severity, TopicKind, encode, mqtt_topic

    device_id, site = device
    client = RawPublisher(host, port, device_id, device_id, password, tls)
    topic = mqtt_topic(site, device_id, TopicKind.ALERT).encode()
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        n = min(count - sent, due(rate, time.monotonic() - t0, sent))
        for _ in range(n):
            alert = EdgeAlert(
                device_id=device_id,
                site=site,
                alert_id=f"storm{sent}",
                ts=time.time_ns() // 1_000_000,
                kind=EdgeAlertKind.ANOMALY,
                severity=Severity.CRITICAL if sent % 2 else Severity.WARNING,
                message=f"<!channel> storm {sent} <http://example.invalid|click>",
            )
            client.publish(topic, encode(alert))
            sent += 1
        client.service()
        time.sleep(0.005)
    deadline = time.monotonic() + 15.0
    while client.acked + client.failed < sent and time.monotonic() < deadline:
        client.service()
        time.sleep(0.01)
    conn.send({"storm_sent": sent, "storm_acked": client.acked, "storm_s": time.monotonic() - t0})
    client.close()
