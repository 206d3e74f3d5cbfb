"""Judge, alarm, store: what happens to every sample the sensors deliver.

Per sample: the detector judges it (``ok`` readings only: a CRC error, an
85 °C reset or an unplugged probe is not a temperature), the alert tracker
turns verdicts, quality and thresholds into alert transitions, and the local
alarm (GPIO) follows at once, before any disk or network. Then the round's
readings get their seqs and are stored in the outbox in **one** transaction
(one fsync), with the stuck-probe runs they reflect; each alert transition
becomes an ``EdgeAlert`` row.

The detector's learned state outlives the process in a file written
atomically (:func:`atomic_write`); the stuck-probe runs live in the outbox
(see ``edge_agent/README.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from edge_agent.alerts import AlertTracker, Transition
from edge_agent.config import EdgeConfig
from edge_agent.detect import Detector, Verdict
from edge_agent.errors import StorageFullError
from edge_agent.gpio import Outputs
from edge_agent.judge import SampleJudge
from edge_agent.outbox import Outbox
from edge_agent.sensors import Sample
from telemetry_contract import AlertState, EdgeAlert, EdgeAlertKind, Reading, TopicKind, encode

__all__ = ["ReadingPipeline", "atomic_write"]

log = logging.getLogger(__name__)

#: Outbox state key of the stuck-check runs, and their codec.
_STUCK_KEY = "stuck_runs"
_STUCK_CODEC = msgspec.json.Encoder()
_STUCK_DECODER = msgspec.json.Decoder(dict[str, tuple[int, int]])


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        # A half-written file on a full disk would keep the space the outbox needs.
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ReadingPipeline:
    """The per-reading path: detector, alert tracker, local alarm, outbox."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        outbox: Outbox,
        outputs: Outputs,
        clock_ms: Callable[[], int],
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._outputs = outputs
        self._clock_ms = clock_ms
        self._telemetry_topic = config.topic(TopicKind.TELEMETRY)
        self._alert_topic = config.topic(TopicKind.ALERT)
        self.judge = SampleJudge(config)
        #: Readings stored since start.
        self.readings_stored = 0
        self._alert_ids: dict[tuple[str, EdgeAlertKind], str] = {}
        # Stuck-check runs (probe -> raw value, repeats), stored with every batch of
        # readings: a restart continues a frozen probe's count instead of starting over.
        self._stuck_runs: dict[str, tuple[int, int]] = {}

    def reconfigure(self, new: EdgeConfig) -> None:
        """Use a new configuration (remote config): thresholds now, a new detector warms up."""
        self.judge.reconfigure(new)
        self._config = new

    @property
    def detector(self) -> Detector:
        """The per-sensor models (their state is saved and restored)."""
        return self.judge.detector

    @property
    def tracker(self) -> AlertTracker:
        """The alert transitions and the local alarm state."""
        return self.judge.tracker

    def handle(self, samples: list[Sample]) -> list[int]:
        """Judge, alarm, store one batch of samples; returns the seqs allocated."""
        judged: list[tuple[Sample, Verdict | None, list[Transition]]] = []
        for s in samples:
            verdict, transitions = self.judge.judge(s)
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
        self._outputs.set_alarm(self.tracker.alarm_active)
        runs = self._stuck_runs
        changed = False
        for s in samples:
            if s.raw is not None:
                runs[s.sensor_id] = (s.raw, s.repeats)
                changed = True
        try:
            seqs = self._outbox.append_readings(
                [self._builder(s, v) for s, v, _ in judged],
                now_ms=self._clock_ms(),
                state=(_STUCK_KEY, _STUCK_CODEC.encode(runs)) if changed else None,
            )
        except StorageFullError:
            # Counted by the outbox, announced by its disk_full Gap once space
            # returns. The alarm above has already sounded; these alert
            # transitions are not stored (the local alarm is what matters now).
            return []
        self.readings_stored += len(seqs)
        for seq, (s, v, transitions) in zip(seqs, judged, strict=True):
            for t in transitions:
                self._store_transition(t, seq, s, v)
        return seqs

    def _builder(self, s: Sample, v: Verdict | None) -> Callable[[int], tuple[str, bytes]]:
        """The reading of ``s`` once the outbox has given it its seq."""
        d = self._config.device
        det = self.detector.name
        warm = v is not None and v.warm

        def build(seq: int) -> tuple[str, bytes]:
            return self._telemetry_topic, encode(
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

    def _store_transition(self, t: Transition, seq: int, s: Sample, v: Verdict | None) -> None:
        key = (t.sensor_id, t.kind)
        if t.state is AlertState.RAISED:
            alert_id = self._alert_ids[key] = f"{t.kind.value}:{t.sensor_id}:{seq}"
        else:
            alert_id = self._alert_ids.pop(key, f"{t.kind.value}:{t.sensor_id}")
        d = self._config.device
        log.info(
            "event=alert kind=%s state=%s sensor=%s seq=%d",
            t.kind.value,
            t.state.value,
            t.sensor_id,
            seq,
        )
        self.store_alert(
            EdgeAlert(
                device_id=d.device_id,
                site=d.site,
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
        )

    def store_alert(self, alert: EdgeAlert) -> bool:
        """Store an alert for publishing (it carries no seq); False if the disk had no room."""
        return self._outbox.append(
            "alert", self._alert_topic, encode(alert), now_ms=self._clock_ms()
        )

    # State that outlives the process ------------------------------------------------
    def restore_stuck_runs(self) -> dict[str, tuple[int, int]]:
        """The stuck-check runs stored with the last readings (for the sensor pool)."""
        raw = self._outbox.load_state(_STUCK_KEY)
        if raw is None:
            return {}
        try:
            runs = _STUCK_DECODER.decode(raw)
        except msgspec.DecodeError as exc:  # costs a re-count, not the service
            log.warning("event=stuck_state_unreadable error=%r", str(exc))
            return {}
        self._stuck_runs = dict(runs)
        return dict(runs)

    def restore_detector(self) -> None:
        """Load the saved models if they were made by the configured detector."""
        path = self._config.detector_state_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        spec = self._config.detector
        try:
            self.judge.detector = Detector.loads(data, spec.name, spec.params, spec.profile)
        except Exception as exc:  # a corrupt state file costs a warm-up, not the service
            log.warning("event=detector_restore_failed path=%s error=%r", path, str(exc))
            return
        if self.detector.discarded:  # learning starts again
            log.warning(
                "event=detector_state_discarded path=%s reason=%r", path, self.detector.discarded
            )
            return
        log.info("event=detector_restored path=%s sensors=%d", path, len(self.detector.monitors))

    def save_detector(self) -> None:
        """Save the models atomically (a failure is logged: it costs a warm-up later)."""
        path = self._config.detector_state_path
        try:
            atomic_write(path, self.detector.dumps())
        except OSError as exc:
            log.error("event=detector_save_failed path=%s error=%r", path, str(exc))
            return
        log.info("event=detector_saved path=%s sensors=%d", path, len(self.detector.monitors))
