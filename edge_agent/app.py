"""Wiring and the run loop of the edge agent.

One main thread owns the decisions; helper threads only report:

* sensor reads run on a thread pool (:class:`~edge_agent.sensor_pool.SensorPool`)
  and collect :class:`~edge_agent.sensors.Sample` objects in a deque, waking
  the loop once per round;
* paho has no thread of its own: the loop drives it (``MqttLink.service``),
  so its callbacks (connection, PUBACK, config) run here too; only opening a
  connection runs on a connector thread.

Per sample the loop: judges it with the detector (``ok`` readings only),
updates the local alarm (GPIO, works offline), allocates a seq and stores the
reading in the outbox (one fsync'd transaction per round), then hands stored
rows to MQTT within the in-flight window; a PUBACK deletes the row (deletes are
batched: losing one only re-sends a duplicate of the same seq). The loop pings the
systemd watchdog, saves the detector state periodically, and on stop flushes
the outbox, saves the model and publishes the offline status.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from edge_agent.alerts import AlertTracker, Transition
from edge_agent.config import EdgeConfig, apply_device_config
from edge_agent.detect import Detector, Verdict
from edge_agent.gpio import Outputs, StatusLight
from edge_agent.mqtt import Acked, ConfigReceived, Connected, Disconnected, MqttLink
from edge_agent.outbox import Outbox
from edge_agent.sensor_pool import SensorPool
from edge_agent.sensors import Sample
from stagekit import __version__
from stagekit.config import ConfigError
from telemetry_contract import (
    AlertState,
    ContractError,
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Reading,
    Severity,
    TopicKind,
    decode_as,
    encode,
    mqtt_topic,
)
from telemetry_contract.messages import MIN_TS_MS

__all__ = ["EdgeAgent", "atomic_write"]

log = logging.getLogger(__name__)

#: Wake-up event: the sensor pool finished a round (samples wait in a deque).
_ROUND_DONE = object()
#: Reads of a round run one after another on one thread while each takes less
#: than this; a slower one (a real 1-Wire conversion, a hung bus) makes the pool
#: give every waiting read its own thread (see SensorPool).
_SPREAD_AFTER_S = 0.02
#: Outbox state key of the stuck-check runs, and their codec.
_STUCK_KEY = "stuck_runs"
#: MQTT v5 PUBACK reason code: the broker accepted the message but had no subscriber.
_NO_MATCHING_SUBSCRIBERS = 16
_STUCK_CODEC = msgspec.json.Encoder()
_STUCK_DECODER = msgspec.json.Decoder(dict[str, tuple[int, int]])


class _WakeQueue(queue.Queue[Any]):
    """The main loop's event queue; once opened, ``put`` also makes :meth:`fileno` readable.

    The main loop waits in one ``select`` on this descriptor and the MQTT
    socket (paho runs on the main thread, see ``edge_agent.mqtt``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._r = self._w = -1
        # put() may run on an abandoned sensor thread after close(): never write to a
        # descriptor number that has been closed (and perhaps reused).
        self._fd_lock = threading.Lock()

    def open(self) -> None:
        with self._fd_lock:
            if self._r < 0:
                self._r, self._w = os.pipe()
                os.set_blocking(self._r, False)
                os.set_blocking(self._w, False)

    def close(self) -> None:
        with self._fd_lock:
            if self._r >= 0:
                os.close(self._r)
                os.close(self._w)
                self._r = self._w = -1

    def fileno(self) -> int:
        """The read end of the wake-up pipe (-1 until :meth:`open`)."""
        return self._r

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with self._fd_lock:
            if self._w >= 0:
                with contextlib.suppress(BlockingIOError):  # full pipe: already awake
                    os.write(self._w, b"\0")

    def clear_wakeups(self) -> None:
        """Empty the pipe (before draining the queue, so no wake-up is lost)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _Notifier:
    """systemd sd_notify (no-op without $NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._n: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._n = sdnotify.SystemdNotifier()

    def notify(self, state: str) -> None:
        if self._n is not None:
            self._n.notify(state)


class EdgeAgent:
    """The agent: ``start()``, ``run(stop_event)``, ``shutdown()`` (idempotent)."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        pin_factory: Any = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.config = config
        self.config_version = 0
        self._clock_ms = clock_ms
        #: Event time of the current MQTT connection (see _will_for_new_connection).
        self._connection_ts = MIN_TS_MS
        d = config.device
        root = config.mqtt.topic_root
        self.telemetry_topic = mqtt_topic(d.site, d.device_id, TopicKind.TELEMETRY, root=root)
        self.alert_topic = mqtt_topic(d.site, d.device_id, TopicKind.ALERT, root=root)
        self.status_topic = mqtt_topic(d.site, d.device_id, TopicKind.STATUS, root=root)
        self.config_topic = mqtt_topic(d.site, d.device_id, TopicKind.CONFIG, root=root)
        self.events = _WakeQueue()
        self._samples: collections.deque[Sample] = collections.deque()
        self.outbox = Outbox(
            config.outbox_path,
            device_id=d.device_id,
            site=d.site,
            telemetry_topic=self.telemetry_topic,
            max_rows=config.outbox.max_rows,
            max_age_s=config.outbox.max_age_s,
            synchronous=config.outbox.synchronous,
            clock_ms=clock_ms,
        )
        s = config.sensors
        self.pool = SensorPool(
            w1_root=s.w1_root if s.w1_enabled else None,
            host_file=s.host_file if s.host_enabled else None,
            # Samples collect in a deque; the pool wakes the loop once per round.
            on_sample=self._samples.append,
            on_round_done=lambda: self.events.put(_ROUND_DONE),
            read_timeout_s=s.read_timeout_s,
            retries=s.retries,
            retry_delay_s=s.retry_delay_s,
            min_c=s.min_plausible_c,
            max_c=s.max_plausible_c,
            stuck_after=s.stuck_after,
            clock_ms=clock_ms,
            spread_after_s=_SPREAD_AFTER_S,
        )
        self.detector = Detector(config.detector.name, config.detector.params)
        self.tracker = AlertTracker(clear_after=config.alarm.clear_after)
        self.outputs = Outputs(config.gpio, pin_factory=pin_factory)
        self.link: MqttLink | None = None
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        # A PUBACK with an error reason code (135 not authorized, 151 quota exceeded...):
        # the row stays stored; publishing pauses and resumes from the first refused
        # row after a backoff (seq order kept, nothing deleted that the broker lacks).
        self._resend_from: int | None = None  # lowest refused row id, not yet re-sent
        self._retry_at = 0.0  # monotonic time of the next attempt
        self._retry_s = 0.0  # current backoff (0: not refusing)
        self.publish_refusals = 0  # PUBACKs with an error reason code, since start
        self.publish_retries = 0  # times refused rows were sent again
        self._alert_ids: dict[tuple[str, EdgeAlertKind], str] = {}
        self._rejected: set[int] = set()
        self._notifier = _Notifier()
        self._interval = config.sampling.interval_s
        self._next_tick = 0.0
        self._sensors: list[str] = []
        self._started = False
        self._closed = False
        self._clock_warned = False
        self.readings_stored = 0
        # Stuck-check runs (probe -> raw value, repeats), stored with every batch of
        # readings: a restart continues a frozen probe's count instead of starting over.
        self._stuck_runs: dict[str, tuple[int, int]] = {}

    # Lifecycle ------------------------------------------------------------------
    def start(self, *, mqtt: bool = True) -> None:
        """Open the outbox, restore the model, claim pins, find sensors, connect."""
        self._started = True
        self.events.open()
        self.outbox.open()
        self._restore_stuck_runs()
        self._restore_detector()
        self.outputs.start()
        self.outputs.set_outputs_enabled(
            buzzer=self.config.alarm.buzzer_enabled, relay=self.config.alarm.relay_enabled
        )
        self.outputs.set_status(StatusLight.BUFFERING)
        if self.config.sensors.require_sensor:
            self._sensors = self.pool.start()
        else:
            try:
                self._sensors = self.pool.start()
            except Exception as exc:  # NoSensorError: wait for hot-plug
                log.warning("event=no_sensor_yet detail=%r", str(exc))
        if mqtt:
            self.link = MqttLink(
                self.config.mqtt,
                client_id=self.config.client_id,
                password=self.config.mqtt_password(),
                status_topic=self.status_topic,
                config_topic=self.config_topic,
                will_payload=self._will_for_new_connection,
                events=self.events,
            )
            self.link.set_online_payload(self._online_of_connection)
            self.link.start()
        stats = self.outbox.stats()
        log.info(
            "event=agent_started device=%s sensors=%s next_seq=%d backlog=%d",
            self.config.device.device_id,
            ",".join(self._sensors),
            stats.next_seq,
            stats.depth,
        )
        self._notifier.notify("READY=1")

    def run(self, stop: threading.Event) -> None:
        """The main loop, until ``stop`` is set."""
        last_save = last_ping = last_flush = time.monotonic()
        self._next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= self._next_tick:
                self.sample_round()
                self._next_tick += self._interval
                if self._next_tick < now:  # fell behind (suspend, overload): skip, do not burst
                    self._next_tick = now + self._interval
            # Sleep until the next round, a finished round, PUBACKs making room for a
            # backlog, or reads to spread over more threads (at most 1 s: the watchdog
            # ping). Every needless wake-up costs CPU.
            wait = min(self._next_tick - time.monotonic(), 1.0)
            spread_at = self.pool.spread_deadline()
            if spread_at is not None:
                wait = min(wait, spread_at - time.monotonic())
            self.process_events(max(0.0, wait))
            spread_at = self.pool.spread_deadline()
            if spread_at is not None and time.monotonic() >= spread_at:
                self.pool.spread()  # a slow or hung probe: the others do not wait for it
            self.pump()
            now = time.monotonic()
            if now - last_flush >= 60.0:
                # Deletes normally ride along with a reading transaction in batches
                # (Outbox.ack_batch); this bounds how long they wait without readings.
                self.outbox.flush_acks()
                last_flush = now
            if now - last_ping >= 1.0:
                self._notifier.notify("WATCHDOG=1")
                self._update_status_light()
                last_ping = now
            if now - last_save >= self.config.detector.save_interval_s:
                self.save_detector()
                last_save = now

    def shutdown(self) -> None:
        """Flush the outbox (bounded wait), save the model, go offline, release everything."""
        if self._closed or not self._started:
            return
        self._closed = True
        self._notifier.notify("STOPPING=1")
        self.pool.close()
        self.process_events(0.0)
        self.flush(self.config.outbox.flush_timeout_s)
        self.save_detector()
        if self.link is not None:
            self.link.stop(self._status(DeviceState.OFFLINE, "shutdown"))
        self.outputs.close()
        stats = self.outbox.stats()
        self.outbox.close()
        self.events.close()
        log.info("event=agent_stopped backlog=%d next_seq=%d", stats.depth, stats.next_seq)

    def flush(self, timeout_s: float) -> bool:
        """Publish the backlog and wait for its PUBACKs; True when the outbox is empty."""
        if self.link is None:
            return self.outbox.stats().depth == 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.link.connected:
                self.process_events(0.1)
                continue
            self.pump()
            if not self._inflight and self.outbox.pending_unsent() == 0:
                return True
            self.process_events(0.05)
        return False

    # Sampling -------------------------------------------------------------------
    def sample_round(self) -> None:
        """Start reading every sensor (results arrive as events)."""
        if self._clock_ms() < MIN_TS_MS:
            if not self._clock_warned:
                self._clock_warned = True
                log.warning("event=clock_not_set detail='waiting for NTP before sampling'")
            return
        if self._clock_warned:
            self._clock_warned = False
            log.info("event=clock_set")
        self.pool.round()
        ids = self.pool.sensor_ids()
        if ids != self._sensors:
            self._sensors = ids
            if self.link is not None:
                self.link.set_online_payload(self._online_of_connection)

    def process_events(self, timeout_s: float) -> None:
        """Handle everything that has arrived, waiting up to ``timeout_s`` for a wake-up.

        One ``select`` waits on the event queue's wake-up pipe and, when it
        matters (before CONNACK, a backlog waiting for room in the in-flight
        window, data to write), the MQTT socket. Samples and PUBACKs collect
        in deques; the sensor pool wakes this thread once per round, and in
        steady state PUBACKs are read at the next wake-up: each wake-up costs
        system calls and GIL hand-overs.
        """
        ev = self.events
        link = self.link
        batch: list[Any] = []
        fd = ev.fileno()
        if fd < 0:  # not started: a plain queue
            with contextlib.suppress(queue.Empty):
                batch.append(ev.get(timeout=timeout_s) if timeout_s > 0 else ev.get_nowait())
        else:
            if timeout_s > 0 and ev.empty():
                rd, wr = link.socket_fds() if link is not None else ([], [])
                select.select([fd, *rd], wr, [], timeout_s)
            ev.clear_wakeups()
        if link is not None:
            link.service()  # reads PUBACKs, CONNACK, config; writes; keepalive
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(ev.get_nowait())
        samples: list[Sample] = []
        acked: list[int] = []
        link_acks = link.acks if link is not None else None
        acks: list[Acked] = []
        while link_acks:
            acks.append(link_acks.popleft())
        for item in batch:
            if isinstance(item, Acked):
                acks.append(item)
            elif isinstance(item, Sample):
                samples.append(item)
            elif isinstance(item, Connected | Disconnected):
                self._update_status_light()
            elif isinstance(item, ConfigReceived):
                self.handle_config(item.payload)
        resend_unrouted = self.config.mqtt.resend_unrouted
        for ack in acks:
            row = self._inflight.pop(ack.mid, None)
            if row is None:
                continue  # a status message, not an outbox row
            if ack.ok and not (ack.code == _NO_MATCHING_SUBSCRIBERS and resend_unrouted):
                acked.append(row)
                if self._retry_s:
                    self._accepted()
            else:
                self._refused(row, ack)
        pending = self._samples
        while pending:
            samples.append(pending.popleft())
        # Deletes ride along with the next reading transaction (one fsync for both).
        self.outbox.ack(acked, defer=True)
        if samples:
            self.handle_samples(samples)

    def handle_samples(self, samples: list[Sample]) -> list[int]:
        """Judge, alarm, store: the per-reading pipeline. Returns the seqs allocated."""
        cfg = self.config
        judged: list[tuple[Sample, Verdict | None, list[Transition]]] = []
        for s in samples:
            verdict = None
            if s.ok and s.temp_c is not None:
                # Only an ok reading is a temperature: CRC errors, 85 °C resets and
                # unplugged probes never reach the model or the alarm.
                verdict = self.detector.observe(s.sensor_id, s.temp_c)
            transitions = self.tracker.update(
                s.sensor_id,
                s.quality,
                s.temp_c,
                verdict.is_anomaly if verdict else False,
                high_c=cfg.alarm.high_c,
                low_c=cfg.alarm.low_c,
            )
            if not s.ok:  # the fault alert logs the transition; each bad read is DEBUG
                log.debug(
                    "event=sensor_bad sensor=%s quality=%s attempts=%d detail=%r",
                    s.sensor_id,
                    s.quality.value,
                    s.attempts,
                    s.detail,
                )
            judged.append((s, verdict, transitions))
        # The local alarm first: it must not wait for the disk or the network.
        self.outputs.set_alarm(self.tracker.alarm_active)
        d = cfg.device
        det = self.detector.name

        def builder(s: Sample, v: Verdict | None) -> Callable[[int], tuple[str, bytes]]:
            def build(seq: int) -> tuple[str, bytes]:
                warm = v is not None and v.warm
                return self.telemetry_topic, encode(
                    Reading(
                        device_id=d.device_id,
                        sensor_id=s.sensor_id,
                        site=d.site,
                        seq=seq,
                        ts=s.ts_ms,
                        temp_c=s.temp_c,
                        quality=s.quality,
                        anomaly_score=v.score if v is not None and warm else None,
                        is_anomaly=bool(v and v.is_anomaly),
                        detector=det if warm else None,
                    )
                )

            return build

        runs = self._stuck_runs
        changed = False
        for s in samples:
            if s.raw is not None:
                runs[s.sensor_id] = (s.raw, s.repeats)
                changed = True
        seqs = self.outbox.append_readings(
            [builder(s, v) for s, v, _ in judged],
            now_ms=self._clock_ms(),
            state=(_STUCK_KEY, _STUCK_CODEC.encode(runs)) if changed else None,
        )
        self.readings_stored += len(seqs)
        for seq, (s, v, transitions) in zip(seqs, judged, strict=True):
            for t in transitions:
                self._store_alert(t, seq, s, v)
        return seqs

    def _store_alert(self, t: Transition, seq: int, s: Sample, v: Verdict | None) -> None:
        key = (t.sensor_id, t.kind)
        if t.state is AlertState.RAISED:
            alert_id = self._alert_ids[key] = f"{t.kind.value}:{t.sensor_id}:{seq}"
        else:
            alert_id = self._alert_ids.pop(key, f"{t.kind.value}:{t.sensor_id}")
        alert = EdgeAlert(
            device_id=self.config.device.device_id,
            site=self.config.device.site,
            sensor_id=t.sensor_id,
            alert_id=alert_id[:64],
            ts=s.ts_ms,
            kind=t.kind,
            state=t.state,
            severity=t.severity,
            message=t.message,
            reading_seq=seq,
            temp_c=s.temp_c,
            anomaly_score=v.score if v is not None else None,
        )
        log.info(
            "event=alert kind=%s state=%s sensor=%s seq=%d",
            t.kind.value,
            t.state.value,
            t.sensor_id,
            seq,
        )
        self.outbox.append("alert", self.alert_topic, encode(alert), now_ms=self._clock_ms())

    # Publishing -----------------------------------------------------------------
    def pump(self) -> int:
        """Hand stored rows to MQTT, oldest first, within the in-flight window."""
        if self.link is None or not self.link.connected:
            return 0
        if self._resend_from is not None:
            # Refused rows: wait out the backoff and the PUBACKs still due (so nothing
            # in flight is sent twice), then send again from the first refused row.
            if self._inflight or time.monotonic() < self._retry_at:
                return 0
            self.outbox.rewind(self._resend_from - 1)
            self._resend_from = None
            self.publish_retries += 1
        room = self.config.mqtt.max_inflight - len(self._inflight)
        rows = self.outbox.next_batch(room)
        for row in rows:
            mid = self.link.publish(row.topic, row.payload)
            self._inflight[mid] = row.id
        # Rows left behind a full window (a backlog): PUBACKs must wake the loop to
        # make room. Otherwise the next round collects them (one wake-up less).
        self.link.wake_on_ack = len(rows) >= room
        return len(rows)

    def _refused(self, row: int, ack: Acked) -> None:
        """The broker refused a row: keep it, back off, send it again later; log once."""
        self.publish_refusals += 1
        if self._resend_from is not None:
            # Another refusal of the same attempt (the rest of a window): same backoff.
            self._resend_from = min(self._resend_from, row)
            return
        self._resend_from = row
        first = self._retry_s == 0.0
        m = self.config.mqtt
        # Doubles per failed attempt (not per refused message), capped like reconnects.
        self._retry_s = m.reconnect_min_s if first else min(self._retry_s * 2, m.reconnect_max_s)
        self._retry_at = time.monotonic() + self._retry_s
        if first:  # one line per refusal episode, not per message
            log.warning(
                "event=%s code=%d reason=%r row=%d retry_in_s=%.1f",
                # "Accepted" but dropped: nobody subscribes (no gateway yet, or a
                # broker that lost the gateway's subscription).
                "publish_unrouted" if ack.code == _NO_MATCHING_SUBSCRIBERS else "publish_refused",
                ack.code,
                ack.reason,
                row,
                self._retry_s,
            )
        self._update_status_light()

    def _accepted(self) -> None:
        if self._retry_s and self._resend_from is None:
            log.info("event=publish_accepted_again refusals=%d", self.publish_refusals)
            self._retry_s = 0.0

    def _update_status_light(self) -> None:
        if self.tracker.fault_active:
            self.outputs.set_status(StatusLight.FAULT)
        elif (
            self.link is not None
            and self.link.connected
            and self._resend_from is None
            and len(self._inflight) < (self.config.mqtt.max_inflight)
        ):
            self.outputs.set_status(StatusLight.CONNECTED)
        else:
            self.outputs.set_status(StatusLight.BUFFERING)

    def _will_for_new_connection(self) -> bytes:
        """The last will of the connection about to be opened (the MQTT link calls it).

        A connection's will and its "online" status carry the same event time,
        the time the connection was opened: the processor orders a will after
        the "online" it ties with, and the next connection's "online" (newer)
        after both, so a reconnection always resolves the offline alert.
        """
        self._connection_ts = max(self._clock_ms(), MIN_TS_MS)
        return self._status(DeviceState.OFFLINE, "connection lost", ts=self._connection_ts)

    def _online_of_connection(self) -> bytes:
        """The retained "online" status of the current connection (see above)."""
        return self._status(DeviceState.ONLINE, ts=self._connection_ts)

    def _status(self, state: DeviceState, reason: str = "", ts: int | None = None) -> bytes:
        return encode(
            DeviceStatus(
                device_id=self.config.device.device_id,
                site=self.config.device.site,
                ts=max(self._clock_ms(), MIN_TS_MS) if ts is None else ts,
                state=state,
                agent_version=__version__,
                config_version=self.config_version,
                sensors=list(self._sensors),
                reason=reason,
            )
        )

    # Remote configuration -------------------------------------------------------------
    def handle_config(self, payload: bytes) -> bool:
        """Apply a retained DeviceConfig if valid and newer; reject it with an alert if not."""
        if not payload:
            return False  # retained config cleared: keep what we have
        try:
            remote = decode_as(payload, DeviceConfig, topic=self.config_topic)
        except ContractError as exc:
            self._reject(None, f"{exc}")
            return False
        if remote.version <= self.config_version or remote.version in self._rejected:
            return False
        try:
            new = apply_device_config(self.config, remote)
        except ConfigError as exc:
            self._reject(remote.version, str(exc))
            return False
        old = self.config
        self.config = new
        self.config_version = remote.version
        if (new.detector.name, new.detector.params) != (old.detector.name, old.detector.params):
            self.detector = Detector(new.detector.name, new.detector.params)
        if new.sampling.interval_s != self._interval:
            self._interval = new.sampling.interval_s
            # Takes effect within one (new) interval, not after the old one.
            self._next_tick = min(self._next_tick, time.monotonic() + self._interval)
        self.outputs.set_outputs_enabled(
            buzzer=new.alarm.buzzer_enabled, relay=new.alarm.relay_enabled
        )
        self.tracker.clear_after = new.alarm.clear_after
        if self.link is not None:
            self.link.set_online_payload(self._online_of_connection)
        log.info(
            "event=config_applied version=%d interval_s=%s detector=%s",
            remote.version,
            new.sampling.interval_s,
            new.detector.name,
        )
        return True

    def _reject(self, version: int | None, reason: str) -> None:
        if version is not None:
            self._rejected.add(version)
        log.warning("event=config_rejected version=%s reason=%r", version, reason)
        alert = EdgeAlert(
            device_id=self.config.device.device_id,
            site=self.config.device.site,
            alert_id=f"config:{version if version is not None else 'invalid'}",
            ts=max(self._clock_ms(), MIN_TS_MS),
            kind=EdgeAlertKind.CONFIG_REJECTED,
            state=AlertState.RAISED,
            severity=Severity.WARNING,
            message=f"config version {version} rejected: {reason}"[:1024],
        )
        self.outbox.append("alert", self.alert_topic, encode(alert), now_ms=self._clock_ms())

    # Detector state ----------------------------------------------------------------
    def save_detector(self) -> None:
        path = self.config.detector_state_path
        try:
            atomic_write(path, self.detector.dumps())
        except OSError as exc:
            log.error("event=detector_save_failed path=%s error=%r", path, str(exc))
            return
        log.info("event=detector_saved path=%s sensors=%d", path, len(self.detector.monitors))

    def _restore_stuck_runs(self) -> None:
        raw = self.outbox.load_state(_STUCK_KEY)
        if raw is None:
            return
        try:
            runs = _STUCK_DECODER.decode(raw)
        except msgspec.DecodeError as exc:  # costs a re-count, not the service
            log.warning("event=stuck_state_unreadable error=%r", str(exc))
            return
        self._stuck_runs = dict(runs)
        self.pool.restore_stuck(self._stuck_runs)

    def _restore_detector(self) -> None:
        path = self.config.detector_state_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self.detector = Detector.loads(
                data, self.config.detector.name, self.config.detector.params
            )
        except Exception as exc:  # a corrupt state file costs a warm-up, not the service
            log.warning("event=detector_restore_failed path=%s error=%r", path, str(exc))
            return
        log.info("event=detector_restored path=%s sensors=%d", path, len(self.detector.monitors))


def config_summary(config: EdgeConfig) -> dict[str, Any]:
    """The effective configuration as plain data (for ``print-config --json``)."""
    out: dict[str, Any] = msgspec.to_builtins(config)
    if out["mqtt"].get("password"):
        out["mqtt"]["password"] = "***"  # noqa: S105 - a mask, not a password
    return out
