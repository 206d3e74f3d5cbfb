"""The rig of a whole-pipeline chaos test: where its readings and alerts are, and its checks.

A chaos test on a private stack (``tests/chaos/test_chaos_pipeline.py`` on the
single-node profile, ``tests/chaos/test_chaos_cluster.py`` on the cluster
profile) runs a fleet of in-process edge agents through the whole pipeline,
holds one probe above its site's threshold (an incident) while it injects a
fault, and after each fault checks the same two things:

* :meth:`ChaosRig.check_readings` -- every seq the outboxes allocated so far is
  stored exactly once, with no Gap (waiting, bounded, for the pipeline to catch
  up), and the snapshot grew since the previous phase; when readings are lost,
  the failure says which hop has them;
* :meth:`ChaosRig.check_incident` -- the incident has exactly one
  ``threshold_high`` alert, opened and resolved once on the alerts topic, no two
  alerts of one (device, rule) are active at once and no change is published
  twice.

Once the fleet has stopped, :meth:`ChaosRig.check_accounted` accounts for every
reading of the run and :meth:`ChaosRig.check_alerted` for every alert (against
every published change, every incident alerted exactly once).

A test's rig subclasses :class:`ChaosRig`: it starts its stack, services and
fleet (:meth:`ChaosRig.up`), says which services must be alive
(:meth:`ChaosRig.alive`) and stops them (:meth:`ChaosRig.down`); its module
fixture is ``yield from running(Rig(stack_root(tmp_path_factory, name), ...))``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy.local.stack import STACK_DIR_ENV, LocalStack
from stagekit.search import SearchError, SearchSettings
from telemetry_contract import kafka_topics
from testsupport.search import admin_settings
from thermowatch import accounting as acc
from thermowatch.demo import DemoFleet, DemoRun, KafkaLag

__all__ = [
    "AFTER_KAFKA",
    "AT_EDGE",
    "BROKER_TO_KAFKA",
    "HOLD_S",
    "HOT_C",
    "MIN_NEW_READINGS",
    "ChaosRig",
    "Incident",
    "Progress",
    "now_ms",
    "running",
    "stack_root",
    "still_running",
    "wait_for",
]

T = TypeVar("T")
R = TypeVar("R", bound="ChaosRig")

#: Above each site's threshold_high in the demo's processor config
#: (freezers -15 °C, cold rooms 8 °C, elsewhere 35 °C); min_duration_s is 10 s.
HOT_C = {"s1": 0.0, "s2": 30.0, "s3": 60.0}
#: How long an incident holds its probe up (the alert opens after 10 s).
HOLD_S = 25.0
#: Each phase must add at least this many allocated seqs to the snapshot.
MIN_NEW_READINGS = 100
#: Where a lost reading is (:meth:`ChaosRig.where_are`).
AT_EDGE = "still in the edge outbox (never acknowledged by the broker)"
BROKER_TO_KAFKA = "acknowledged by the broker, never reached Kafka"
AFTER_KAFKA = "in Kafka, never stored by the processor"


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (the event times of readings and alerts)."""
    return time.time_ns() // 1_000_000


class Progress:
    """Progress lines ``<name> t=<seconds since created>s <what>``, shown with
    ``pytest -s`` and in the report of a failed test.

    >>> say = Progress("chaos")
    >>> say("stack up")  # doctest: +ELLIPSIS
    chaos t=   ...s stack up
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._t0 = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"{self.name} t={time.monotonic() - self._t0:6.1f}s {what}", flush=True)


def wait_for(what: str, check: Callable[[], T], timeout: float, every: float = 1.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``.

    >>> wait_for("an answer", lambda: [42], timeout=1.0)
    [42]
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Incident:
    """A probe held above its site's threshold from ``start_ms`` to ``end_ms`` (0: still)."""

    phase: str
    device: str
    start_ms: int
    end_ms: int = 0


def stack_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """Where a chaos test's private stack lives: ``$THERMOWATCH_STACK_DIR/<name>`` (CI),
    with what an interrupted run left there stopped and removed, else a pytest temp dir."""
    base = os.environ.get(STACK_DIR_ENV)
    if not base:
        return tmp_path_factory.mktemp(f"{name}-stack")
    root = Path(base) / name
    LocalStack(stack_dir=root).down()  # a leftover of an interrupted run
    shutil.rmtree(root, ignore_errors=True)
    return root


def still_running(status: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """``service`` (``service-node`` for a clustered one) -> pid, for what a stack's
    ``status()`` says still runs.

    >>> still_running({
    ...     "mosquitto": {"pid": None},
    ...     "kafka": {"pid": 7, "nodes": [{"id": 1, "pid": 7}, {"id": 2, "pid": None}]},
    ...     "search": {"pid": 9},
    ... })
    {'kafka-1': 7, 'search': 9}
    """
    out: dict[str, int] = {}
    for name, entry in status.items():
        for node in entry.get("nodes") or [{"id": None, "pid": entry["pid"]}]:
            if node["pid"] is not None:
                out[name if node["id"] is None else f"{name}-{node['id']}"] = node["pid"]
    return out


def running(rig: R) -> Iterator[R]:
    """A module fixture's body: ``rig`` up, yielded, and always down."""
    try:
        rig.up()
        yield rig
    finally:
        rig.down()


class ChaosRig:
    """A private stack, a demo run on it, its fleet, and what the checks learnt.

    ``settle_s`` bounds each wait for the pipeline to catch up; with ``stall_s``,
    :meth:`check_readings` gives up sooner when the same readings stay missing
    that long while plenty of newer ones are stored. With ``search_retry_s``, a
    read of the search server is tried again that long while its answer is
    retriable. An alert change published again in phase ``republish_phase`` (a
    processor killed there) is tolerated from then on.
    """

    def __init__(
        self,
        stack: LocalStack,
        run: DemoRun,
        say: Callable[[str], None],
        *,
        settle_s: float,
        republish_phase: str,
        stall_s: float | None = None,
        search_retry_s: float | None = None,
    ) -> None:
        self.stack = stack
        self.run = run
        self.say = say
        self.settle_s = settle_s
        self.republish_phase = republish_phase
        self.stall_s = stall_s
        self.search_retry_s = search_retry_s
        self.topics = kafka_topics(run.kafka_prefix)
        self.devices = run.devices
        self.incidents: list[Incident] = []
        self.last_sent = 0
        self.fleet: DemoFleet | None = None
        self.fleet_stopped = False
        #: Alert changes a killed processor may publish again (same id and version).
        self.tolerated_repeats: set[tuple[str, str, int]] = set()

    # -- what a test's rig does -----------------------------------------------------------

    def up(self) -> None:
        """Start the stack, the services and the fleet (:meth:`wait_flowing` at the end)."""
        raise NotImplementedError

    def down(self) -> None:
        """Stop all :meth:`up` started (:meth:`stop_fleet`, then :meth:`stack_down`)."""
        raise NotImplementedError

    def alive(self) -> None:
        """Fail when a service that should run has exited."""
        raise NotImplementedError

    def readable_devices(self) -> list[str]:
        """The devices whose readings can be stored by now (all of them)."""
        return self.devices

    # -- endpoints and lifecycle ----------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return self.stack.endpoints()

    @property
    def search(self) -> SearchSettings:
        return admin_settings(self.endpoints["search"])

    @property
    def kafka(self) -> dict[str, Any]:
        return dict(self.endpoints["kafka"])

    def wait_flowing(self, timeout: float = 180.0) -> None:
        """Until the first readings of every device are stored."""

        def every_device_stored() -> bool:
            stored = self.stored(self.devices)
            return all(sum(1 for d, _ in stored if d == dev) >= 5 for dev in self.devices)

        wait_for("the first readings of every device to be stored", every_device_stored, timeout)

    def stop_fleet(self) -> None:
        """Stop the fleet (each agent flushes its outbox), once."""
        if self.fleet is not None and not self.fleet_stopped:
            self.fleet.stop()
            self.fleet_stopped = True

    def stack_down(self) -> None:
        """The stack down, nothing of it left running, the fleet's sensor tree removed."""
        errors: list[str] = []
        try:
            self.stack.down()
        except Exception as exc:
            errors.append(repr(exc))
        leftover = still_running(self.stack.status())
        if leftover:
            errors.append(f"still running after down(): {leftover}")
        shutil.rmtree(self.run.w1_dir, ignore_errors=True)
        assert not errors, errors

    # -- what is where --------------------------------------------------------------------

    def _from_search(self, read: Callable[[], T]) -> T:
        """``read()``, tried again for ``search_retry_s`` while the search server's answer
        is retriable (503, 429, no connection): on a cluster an index just created, or a
        shard whose node was just killed, is unassigned for a moment ("all shards
        failed") before a replica takes over."""
        deadline = time.monotonic() + (self.search_retry_s or 0.0)
        while True:
            try:
                return read()
            except SearchError as exc:
                if self.search_retry_s is None or not exc.retriable:
                    raise
                if time.monotonic() > deadline:
                    raise
                self.say(f"search cluster busy ({exc.status or exc}): reading again")
                time.sleep(1.0)

    def allocated(self, devices: list[str] | None = None) -> dict[str, range]:
        """The seqs each device's outbox has allocated so far."""
        assert self.fleet is not None
        paths = self.fleet.outbox_paths()
        return acc.allocated_from_outboxes({d: paths[d] for d in devices or self.devices})

    def stored(self, devices: list[str]) -> dict[tuple[str, int], int]:
        """``(device, seq) -> how many times stored`` in the run's readings indices."""
        pattern = f"{self.run.index_prefix}readings-*"
        return self._from_search(lambda: acc.fetch_stored(self.search, pattern, devices))

    def alerts(self, devices: list[str] | None = None) -> list[acc.AlertDoc]:
        """The run's alert documents (of ``devices``, default all)."""
        index = f"{self.run.index_prefix}alerts"
        return self._from_search(
            lambda: acc.fetch_alerts(self.search, index, devices or self.devices)
        )

    def changes(self) -> list[acc.PublishedChange]:
        """Every alert change published on the run's alerts topic."""
        return asyncio.run(acc.fetch_alert_changes(self.kafka, self.topics.alerts))

    def lag(self) -> int:
        """The processors' consumer group lag, summed over its topics."""

        async def measure() -> int:
            watch = KafkaLag(
                self.kafka,
                self.run.group_id,
                [self.topics.telemetry, self.topics.edge_alerts, self.topics.status],
            )
            await watch.start()
            try:
                return await watch.lag()
            finally:
                await watch.close()

        return asyncio.run(measure())

    def where_are(
        self,
        snapshot: dict[str, range],
        stored: dict[tuple[str, int], int],
        gaps: list[acc.GapRange],
    ) -> dict[str, list[tuple[str, int]]]:
        """Which hop has the readings that are neither stored nor covered by a Gap."""
        assert self.fleet is not None
        covered = {(g.device_id, s) for g in gaps for s in range(g.first_seq, g.last_seq + 1)}
        lost = [
            (d, s)
            for d, seqs in snapshot.items()
            for s in seqs
            if (d, s) not in stored and (d, s) not in covered
        ]
        paths = self.fleet.outbox_paths()
        pending = acc.pending_in_outboxes({d: paths[d] for d in snapshot})
        in_kafka = asyncio.run(acc.fetch_reading_keys(self.kafka, self.topics.telemetry))
        at_edge = [k for k in lost if k[1] in pending[k[0]]]
        return {
            AT_EDGE: at_edge,
            BROKER_TO_KAFKA: [k for k in lost if k not in in_kafka and k not in at_edge],
            AFTER_KAFKA: [k for k in lost if k in in_kafka and k not in at_edge],
        }

    # -- incidents ------------------------------------------------------------------------

    def begin_incident(self, phase: str, device: str) -> Incident:
        """Force ``device``'s probe above its site's threshold_high."""
        assert self.fleet is not None
        inc = Incident(phase, device, now_ms())
        self.fleet.force(device, HOT_C[device.split("-")[0]])
        self.incidents.append(inc)
        return inc

    def end_incident(self, inc: Incident, not_before_s: float = HOLD_S) -> None:
        """Let ``inc``'s probe go back to normal, not before ``not_before_s`` after its start."""
        assert self.fleet is not None
        wait = inc.start_ms / 1000 + not_before_s - time.time()
        if wait > 0:
            time.sleep(wait)
        self.fleet.force(inc.device, None)
        inc.end_ms = now_ms()

    # -- the checks -----------------------------------------------------------------------

    def check_readings(
        self,
        phase: str,
        devices: list[str] | None = None,
        min_new: int = MIN_NEW_READINGS,
    ) -> acc.Accounting:
        """Exact accounting of a snapshot of the outboxes of ``devices`` (default
        :meth:`readable_devices`): each seq stored once, no Gap, ``min_new`` more
        than at the previous check."""
        devices = devices or self.readable_devices()
        snapshot = self.allocated(devices)

        def progress() -> tuple[set[tuple[str, int]], int]:
            stored = self.stored(devices)
            gone = {(d, s) for d, seqs in snapshot.items() for s in seqs if (d, s) not in stored}
            return gone, len(stored)

        # Wait until the snapshot is stored; with stall_s, give up early when the same
        # readings stay missing while plenty of newer ones get stored around them.
        deadline = time.monotonic() + self.settle_s
        left, count = progress()
        since, since_count = time.monotonic(), count
        while left and time.monotonic() < deadline:
            self.alive()
            time.sleep(1.0)
            now_left, count = progress()
            if now_left != left:
                left, since, since_count = now_left, time.monotonic(), count
            elif (
                self.stall_s is not None
                and time.monotonic() - since > self.stall_s
                and count - since_count > 100
            ):
                break
        stored = {
            k: n
            for k, n in self.stored(devices).items()
            if k[0] in snapshot and k[1] < snapshot[k[0]].stop
        }
        gaps = asyncio.run(acc.fetch_gaps(self.kafka, self.topics.telemetry, devices))
        result = acc.account(snapshot, stored, gaps)
        detail = (
            f"[{phase}] sent={result.sent} stored={result.stored} lost={result.lost} "
            f"duplicated={result.duplicated} covered_by_gap={result.covered} "
            f"gap_conflicts={result.gap_conflicts} lost e.g. {list(result.lost_examples)} "
            f"duplicated e.g. {list(result.duplicated_examples)}; "
            f"allocated per device { ({d: r.stop for d, r in snapshot.items()}) }"
        )
        assert result.sent >= self.last_sent + min_new, f"fleet stalled? {detail}"
        if result.lost:
            where = self.where_are(snapshot, stored, gaps)
            detail += "".join(f"\n  {hop}: {keys[:20]}" for hop, keys in where.items())
            raise AssertionError(f"readings LOST {detail}")
        assert result.duplicated == 0, f"readings stored TWICE {detail}"
        assert result.covered == 0 and result.gap_conflicts == 0, f"edge dropped data {detail}"
        self.last_sent = result.sent
        self.say(detail)
        return result

    def check_incident(self, inc: Incident) -> acc.AlertDoc:
        """Exactly one threshold_high alert for ``inc``, opened and resolved once."""

        def resolved() -> list[acc.AlertDoc]:
            self.alive()
            docs = [a for a in self.alerts([inc.device]) if a.rule == "threshold_high"]
            assert len(docs) <= 1, f"[{inc.phase}] DUPLICATE alerts for {inc}: {docs}"
            return docs if docs and docs[0].status == "resolved" else []

        (alert,) = wait_for(f"[{inc.phase}] the alert of {inc} to resolve", resolved, self.settle_s)
        assert inc.start_ms <= alert.opened_at <= inc.end_ms, (inc, alert)
        assert alert.resolved_at is not None and alert.resolved_at >= inc.end_ms - 1000, (
            inc,
            alert,
        )
        changes = self.changes()
        mine = [(c.change, c.version) for c in changes if c.alert_id == alert.alert_id]
        assert sorted(mine) == [("opened", 1), ("resolved", alert.version)], (
            f"[{inc.phase}] changes published for {alert.alert_id}: {mine}"
        )
        integrity = acc.alert_integrity(self.alerts(), changes)
        assert not integrity.overlapping, (
            f"[{inc.phase}] two alerts of one (device, rule) active at once: "
            f"{integrity.overlapping}"
        )
        repeats = set(integrity.repeated) - self.tolerated_repeats
        if inc.phase == self.republish_phase:
            # A processor killed between publishing a change and storing it publishes
            # it again (same alert_id and version; receivers drop it: documented).
            self.tolerated_repeats |= repeats
        else:
            assert not repeats, f"[{inc.phase}] alert changes published twice: {sorted(repeats)}"
        self.say(f"[{inc.phase}] one alert: {alert}")
        return alert

    def end_and_check(self, inc: Incident, not_before_s: float = HOLD_S) -> acc.AlertDoc:
        """The end of a fault's phase: :meth:`end_incident`, then :meth:`check_readings`
        of the phase and :meth:`check_incident`; the incident's alert."""
        self.end_incident(inc, not_before_s)
        self.check_readings(inc.phase)
        return self.check_incident(inc)

    def check_accounted(self, result: acc.Accounting) -> None:
        """Once the fleet stopped and ``result`` (the last :meth:`check_readings`) is in:
        the group commits everything, and every reading of the run is stored once."""
        wait_for(
            "the processors to commit everything (lag 0)", lambda: self.lag() == 0, self.settle_s
        )
        final = acc.account(self.allocated(), self.stored(self.devices), [])
        assert final.unexpected == 0, f"stored readings no outbox allocated: {final}"
        assert final.duplicated == final.covered == final.gap_conflicts == 0, final
        assert final.lost == 0 and final.sent == result.sent, final

    def check_alerted(self, phases: list[str], stopped_ms: int) -> list[acc.AlertDoc]:
        """Every alert document against every published change; the incidents were those of
        ``phases`` (sorted), each alerted exactly once, with no false alert from the run's
        start to ``stopped_ms`` (the fleet stopped). The alert documents."""
        docs = self.alerts()
        changes = self.changes()
        self.say(f"[z] {len(docs)} alert documents, {len(changes)} published changes")
        for a in sorted(docs, key=lambda a: (a.rule, a.device_id, a.opened_at)):
            self.say(f"[z]   {a}")
        integrity = acc.alert_integrity(docs, changes)
        detail = (
            f"{integrity} (tolerated repeats after the processor kill: {self.tolerated_repeats})"
        )
        assert not integrity.overlapping, detail
        assert not integrity.missing_documents, detail
        assert not integrity.unpublished, detail
        assert not integrity.stale_documents, detail
        assert set(integrity.repeated) <= self.tolerated_repeats, detail
        seen = sorted(inc.phase for inc in self.incidents)
        assert seen == phases, seen
        for inc in self.incidents:
            mine = [a for a in docs if a.device_id == inc.device and a.rule == "threshold_high"]
            assert len(mine) == 1, (inc, mine)
        score = acc.score_alerts(
            [acc.Incident("threshold", i.device, i.start_ms, i.end_ms) for i in self.incidents],
            [a for a in docs if a.rule == "threshold_high"],
            since_ms=self.run.started_ms,
            until_ms=stopped_ms,
        )
        assert score.alerted == score.injected == len(phases) and score.false_alerts == 0, score
        return docs
