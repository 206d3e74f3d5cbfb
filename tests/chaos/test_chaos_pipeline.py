"""Chaos suite: kill and restart the pipeline's processes under a running fleet.

Nothing here touches the shared stack: the module starts a **private**
LocalStack (Mosquitto, Kafka, OpenSearch on free ports, rooted under
``$THERMOWATCH_STACK_DIR/chaos`` or a pytest tmp dir) and always brings it down.

The rig (module scope): 3 sites x 2 devices sampling at 2 Hz, real in-process
edge agents with SQLite outboxes -> Mosquitto -> gateway (subprocess) ->
Kafka -> processor (subprocess) -> OpenSearch, configured as ``thermowatch
demo`` configures them (thermowatch.demo).
``CUT_DEVICE`` reaches Mosquitto through a TCP proxy that can be cut.

Every fault test does the same: force one device's probe above its site's
``threshold_high`` (an incident, ``DemoFleet.force``), inject the fault while
the fleet keeps running, recover, let the probe go back to normal, then check:

* **readings, exactly**: a snapshot of the seqs every outbox has allocated so
  far (``CUT_DEVICE`` excluded until the cut healed) must all be stored in the
  search server, each exactly once, with no Gap (the edge never had to drop
  anything); the check waits (bounded) for the pipeline to catch up, and the
  snapshot must have grown since the previous phase;
* **alerts**: the incident has exactly one ``threshold_high`` alert document,
  opened after the incident started and resolved after it ended, published
  once as opened and once as resolved on the alerts topic; across the whole
  alerts index no two alerts of one (device, rule) are active at once (what a
  replay that re-opens a known alert under a new id would produce) and no
  change is published twice;
* **the fault really happened**, asserted before anything else: a killed
  process's exit status is -9 (SIGKILL: no shutdown hook ran); a server meant
  to be down refused every connection tried twice a second for the whole
  period (``testsupport.chaos.PortWatch``); a new pid afterwards; the
  process's own log where it says what it noticed.

Cases, in order (they share the rig, so run the module as a whole):

(e) ``CUT_DEVICE`` cut off the broker for 2 minutes: started by the fixture, so
    it overlaps (a)-(c); checked by ``test_e_agent_cut_off_broker_2min`` once
    healed: the proxy refused connections, the agent kept sampling, nothing it
    sampled during the cut reached Kafka before the heal (Kafka record times),
    everything did after it (outbox replay), and the cut raised exactly one
    ``device_offline`` alert (the last will), which the reconnection's
    "online" status resolves (``test_e_offline_alert_resolves_after_the_reconnect``).
(a) ``kill -9`` the gateway, restart it 5 s later (same persistent MQTT session).
(b) ``kill -9`` Kafka under the running fleet, down for 10 s, started again.
(c) ``kill -9`` the search server, down for 30 s, started again.
(d) restart Mosquitto (SIGTERM, persistence on, started again at once; its log
    shows the final save); the
    gateway subscribes without sharing, as one gateway should (Mosquitto
    2.0.11 drops a persistent session's shared subscription across a restart:
    gateway/README.md). Nothing may be lost, and
    ``test_d_devices_back_online_after_the_mosquitto_restart`` checks that the
    last wills the broker published on shutdown are resolved by the devices'
    reconnections.
(f) ``kill -9`` the processor as soon as the incident's alert is stored (so it
    dies around the commit of the alert's records) and restart it. It is
    killed at a moment when it has stored readings past its group's committed
    offsets (frozen with SIGSTOP while that is checked, so no commit moves
    meanwhile): the restarted processor must replay them, and they must
    still be stored once each.
(z) stop the fleet, drain, and account for everything: all readings of the
    run (nothing lost), every alert document
    against every published change, every incident alerted exactly once.

When a reading is missing, the failure says which hop has it: still in the
edge outbox, acknowledged by the broker but never in Kafka, or in Kafka but
never stored. Progress lines (``chaos t=...``) show with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloud_processor.testing import TcpProxy
from deploy.local.stack import LocalStack, free_port
from testsupport.chaos import (
    PortWatch,
    chaos_run,
    committed_offsets,
    kill9,
    port_refuses,
    readings_after,
)
from testsupport.chaos_rig import (
    HOLD_S,
    ChaosRig,
    Progress,
    now_ms,
    running,
    stack_root,
    wait_for,
)
from thermowatch import accounting as acc
from thermowatch.demo import DemoFleet, Service, pipeline_services, steady_plan, wait_topics

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

T = TypeVar("T")

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01", "s2-d02"], "s3": ["s3-d01", "s3-d02"]}
INTERVAL_S = 0.5
CUT_DEVICE = "s2-d02"
CUT_S = 120.0
SETTLE_S = 150.0
#: Missing readings that stay missing this long while newer ones are stored are lost.
STALL_S = 20.0

say = Progress("chaos")


class LoopThread:
    """An asyncio loop in a thread, for the proxy (it must outlive each test)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-loop")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Cut:
    """(e): CUT_DEVICE's proxy refuses connections for CUT_S seconds, in a thread."""

    rig: Rig
    cut_ms: int = 0
    healed_ms: int = 0
    allocated_at_cut: int = 0
    allocated_at_heal: int = 0
    #: Just before the proxy listens again: nothing of the cut can be in Kafka earlier.
    restoring_ms: int = 0
    refused: list[bool] = field(default_factory=list)
    _heal_now: threading.Event = field(default_factory=threading.Event)
    _healed: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        rig = self.rig
        rig.loop.run(rig.proxy.cut())
        self.cut_ms = now_ms()
        self.allocated_at_cut = rig.allocated([CUT_DEVICE])[CUT_DEVICE].stop
        self.refused.append(port_refuses("127.0.0.1", rig.proxy.port))
        self._thread = threading.Thread(target=self._run, name="chaos-cut", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rig = self.rig
        try:
            self._heal_now.wait(CUT_S)
            self.refused.append(port_refuses("127.0.0.1", rig.proxy.port))
            self.allocated_at_heal = rig.allocated([CUT_DEVICE])[CUT_DEVICE].stop
        except BaseException as exc:  # reported by the test, never lost in the thread
            self.error = exc
        finally:
            self.restoring_ms = now_ms()
            with contextlib.suppress(Exception):
                rig.loop.run(rig.proxy.restore())
            self.healed_ms = now_ms()
            self._healed.set()

    def heal_now(self) -> None:
        self._heal_now.set()
        if self._thread is not None:
            self._thread.join(60)

    @property
    def healed(self) -> bool:
        return self._healed.is_set()

    def wait_healed(self, timeout: float) -> None:
        assert self._healed.wait(timeout), "the cut did not heal"


class Rig(ChaosRig):
    """The private stack, the pipeline services, the fleet, and what the tests learnt."""

    def __init__(self, root: Path, work: Path) -> None:
        stack = LocalStack(
            stack_dir=root,
            mqtt_port=free_port(span=2),
            kafka_port=free_port(1),
            search_port=free_port(100),
        )
        run = chaos_run(work, "chaos", SITES)
        super().__init__(stack, run, say, settle_s=SETTLE_S, republish_phase="f", stall_s=STALL_S)
        self.cut_alert_id = ""
        self.phases_done: set[str] = set()
        self.loop = LoopThread()
        self.proxy: TcpProxy = TcpProxy("127.0.0.1", self.stack.port("mosquitto"))
        self.cut = Cut(self)
        self.gateway: Service | None = None
        self.processor: Service | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def up(self) -> None:
        say(f"private stack up in {self.stack.root}")
        self.stack.up(timeout=240.0)
        say("stack healthy; starting gateway and processor")
        self.gateway, self.processor = pipeline_services(
            self.run,
            self.endpoints,
            # A killed processor's group membership expires sooner (default 30 s).
            processor_overrides={"kafka": {"session_timeout_ms": 10_000}},
        )
        self.gateway.start()
        asyncio.run(wait_topics(self.kafka, self.topics.all(), self.gateway, 120.0))
        self.processor.start()
        self.loop.run(self.proxy.start())
        self.fleet = DemoFleet(
            steady_plan(SITES),
            run_dir=self.run.run_dir,
            w1_dir=self.run.w1_dir,
            mqtt=self.endpoints["mosquitto"],
            run_id=self.run.run_id,
            interval_s=INTERVAL_S,
            mqtt_ports={CUT_DEVICE: self.proxy.port},
            # Reconnect within seconds after a broker restart or the cut healing.
            mqtt_options={"reconnect_max_s": 4.0},
        )
        self.run.started_ms = now_ms()
        say("starting the fleet")
        self.fleet.start()
        self.wait_flowing()
        self.cut.start()
        say(f"pipeline flowing; {CUT_DEVICE} cut off the broker for {CUT_S:.0f} s")

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.cut.heal_now()
        self.stop_fleet()
        for svc in (self.processor, self.gateway):
            if svc is not None:
                svc.stop()
        with contextlib.suppress(Exception):
            self.loop.run(self.proxy.close())
        self.loop.close()
        self.stack_down()

    def alive(self) -> None:
        assert self.gateway is not None and self.processor is not None
        for svc in (self.gateway, self.processor):
            assert svc.alive, f"{svc.name} exited:\n{svc.tail(40)}"

    def readable_devices(self) -> list[str]:
        # CUT_DEVICE's readings cannot be stored while it is cut: it joins once healed.
        return [d for d in self.devices if d != CUT_DEVICE or self.cut.healed]

    # -- the processor's replay -----------------------------------------------------------

    def freeze_with_uncommitted(self, pid: int, tries: int = 20) -> set[tuple[str, int]]:
        """SIGSTOP the processor at a moment it has stored readings past its committed
        offsets (what a restart must replay); those readings. Left stopped, to be killed.

        Stopped, it can commit nothing while this looks; when nothing is to replay
        yet, it runs on for a moment and is stopped again.
        """
        for _ in range(tries):
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(0.5)  # a commit already on the wire lands
                committed = asyncio.run(
                    committed_offsets(self.kafka, self.run.group_id, self.topics.telemetry)
                )
                past = asyncio.run(readings_after(self.kafka, self.topics.telemetry, committed))
                replay = past & set(self.stored(self.devices))
            except BaseException:
                os.kill(pid, signal.SIGCONT)
                raise
            if replay:
                return replay
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.3)
        pytest.fail(f"the processor never had stored readings past its commits ({tries} tries)")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from running(
        Rig(stack_root(tmp_path_factory, "chaos"), tmp_path_factory.mktemp("chaos-run"))
    )


# -- the faults --------------------------------------------------------------------------


def test_a_gateway_kill9(rig: Rig) -> None:
    rig.alive()
    assert rig.gateway is not None
    inc = rig.begin_incident("a", "s3-d01")
    time.sleep(4)
    old_pid = rig.gateway.pid
    assert rig.gateway.kill(signal.SIGKILL) == -signal.SIGKILL
    say(f"[a] gateway pid {old_pid} killed with SIGKILL")
    time.sleep(5)  # the fleet keeps publishing; the broker keeps the gateway's session
    rig.gateway.start()
    assert rig.gateway.pid != old_pid
    say(f"[a] gateway restarted, pid {rig.gateway.pid}")
    rig.end_and_check(inc)


def test_b_kafka_kill9(rig: Rig) -> None:
    rig.alive()
    inc = rig.begin_incident("b", "s3-d02")
    time.sleep(3)
    before = sum(r.stop for r in rig.allocated().values())
    killed = kill9(rig.stack, "kafka")
    assert killed.by_sigkill, f"Kafka was not killed by SIGKILL: {killed}"
    say(f"[b] Kafka pid {killed.pid} killed with SIGKILL")
    with PortWatch("127.0.0.1", rig.stack.port("kafka")) as down:
        time.sleep(10)
    assert down.always_refused, f"Kafka answered while it was down: {down}"
    during = sum(r.stop for r in rig.allocated().values()) - before
    assert during >= 50, f"the fleet published only {during} readings while Kafka was down"
    rig.stack.start("kafka", timeout=180.0)
    assert rig.stack.service_pid("kafka") not in (None, killed.pid)
    say(f"[b] Kafka started again and healthy, pid {rig.stack.service_pid('kafka')}")
    rig.end_and_check(inc)


def test_c_search_kill9_down_30s(rig: Rig) -> None:
    rig.alive()
    assert rig.processor is not None
    mark = rig.processor.log_size()
    inc = rig.begin_incident("c", "s1-d01")
    time.sleep(3)
    killed = kill9(rig.stack, "search")
    assert killed.by_sigkill, f"the search server was not killed by SIGKILL: {killed}"
    say(f"[c] search server pid {killed.pid} killed with SIGKILL")
    with PortWatch("127.0.0.1", rig.stack.port("search")) as down:
        for _ in range(30):
            rig.alive()  # the processor waits for the server, it does not give up
            time.sleep(1)
    assert down.always_refused, f"the search server answered while it was down: {down}"
    rig.stack.start("search", timeout=180.0)
    assert rig.stack.service_pid("search") not in (None, killed.pid)
    say(f"[c] search server started again and healthy, pid {rig.stack.service_pid('search')}")
    rig.end_and_check(inc)
    logged = rig.processor.log_since(mark)
    assert "event=search_unavailable" in logged, "the processor never noticed the outage"


def test_d_mosquitto_restart(rig: Rig) -> None:
    """Restart Mosquitto; one alert for the incident, and nothing lost.

    The demo's gateway config subscribes without sharing (``share_group = ""``):
    Mosquitto 2.0.11 drops a persistent session's *shared* subscription across a
    restart, and with it the readings in that window (gateway/README.md).
    """
    rig.alive()
    inc = rig.begin_incident("d", "s1-d02")
    time.sleep(3)
    old_pid = rig.stack.service_pid("mosquitto")
    log_mark = rig.stack.log_file("mosquitto").stat().st_size
    rig.stack.stop("mosquitto")
    assert port_refuses("127.0.0.1", rig.stack.port("mosquitto")), "Mosquitto still listening"
    with open(rig.stack.log_file("mosquitto"), "rb") as fh:
        fh.seek(log_mark)
        assert b"Saving in-memory database" in fh.read(), "Mosquitto stopped without its save"
    rig.stack.start("mosquitto", timeout=120.0)
    assert rig.stack.service_pid("mosquitto") not in (None, old_pid)
    say(f"[d] Mosquitto restarted, pid {old_pid} -> {rig.stack.service_pid('mosquitto')}")
    rig.end_incident(inc)
    rig.check_incident(inc)
    rig.check_readings("d")
    rig.phases_done.add("d")


def test_d_devices_back_online_after_the_mosquitto_restart(rig: Rig) -> None:
    if "d" not in rig.phases_done:
        pytest.skip("needs test_d_mosquitto_restart")

    def still_offline() -> list[acc.AlertDoc]:
        return [
            a
            for a in rig.alerts()
            if a.rule == "device_offline" and a.status == "open" and a.device_id != CUT_DEVICE
        ]

    deadline = time.monotonic() + 10.0
    while still_offline() and time.monotonic() < deadline:
        time.sleep(1.0)
    assert not still_offline(), f"device_offline alerts left open: {still_offline()}"


def test_f_processor_kill9_while_alert_opens(rig: Rig) -> None:
    rig.alive()
    assert rig.processor is not None
    inc = rig.begin_incident("f", "s2-d01")

    def alert_stored() -> bool:
        return any(a.rule == "threshold_high" for a in rig.alerts([inc.device]))

    wait_for("the incident's alert to be stored", alert_stored, 60.0, every=0.2)
    old_pid = rig.processor.pid
    assert old_pid is not None
    replay = rig.freeze_with_uncommitted(old_pid)
    assert rig.processor.kill(signal.SIGKILL) == -signal.SIGKILL
    say(
        f"[f] alert stored; processor pid {old_pid} killed with SIGKILL; {len(replay)} "
        f"readings stored past its committed offsets, to replay, e.g. {sorted(replay)[:3]}"
    )
    time.sleep(2)
    rig.processor.start()
    assert rig.processor.pid != old_pid
    say(f"[f] processor restarted, pid {rig.processor.pid}")
    # Let go only once the new processor runs: it resolves what the old one opened.
    rig.end_and_check(inc, not_before_s=max(HOLD_S, time.time() - inc.start_ms / 1000 + 5))


def test_e_agent_cut_off_broker_2min(rig: Rig) -> None:
    cut = rig.cut
    cut.wait_healed(CUT_S + 90)
    assert cut.error is None, cut.error
    assert cut.healed_ms - cut.cut_ms >= CUT_S * 1000 - 1000
    assert cut.refused == [True, True], "the proxy accepted connections during the cut"
    during = cut.allocated_at_heal - cut.allocated_at_cut
    assert during >= CUT_S / INTERVAL_S / 2, f"the agent sampled only {during} readings while cut"
    result = rig.check_readings("e", rig.devices, min_new=0)
    assert result.sent >= cut.allocated_at_heal
    # What the agent sampled while cut reached Kafka only after the heal (record times).
    produced: dict[int, int] = {}
    for value, ts in asyncio.run(acc.read_records(rig.kafka, rig.topics.telemetry)):
        msg = json.loads(value)
        if msg.get("device_id") == CUT_DEVICE and msg.get("type") == "reading":
            seq = int(msg["seq"])
            if cut.allocated_at_cut <= seq < cut.allocated_at_heal:
                produced[seq] = min(ts, produced.get(seq, ts))
    assert len(produced) == during
    early = sorted(seq for seq, ts in produced.items() if ts < cut.restoring_ms)
    assert not early, f"readings sampled during the cut reached Kafka before the heal: {early}"
    # The cut was one outage: one device_offline alert, from the last will the broker
    # published when the proxy reset the agent's connection.

    def cut_alerts() -> list[acc.AlertDoc]:
        published = {
            c.alert_id
            for c in rig.changes()
            if c.change == "opened"
            and c.rule == "device_offline"
            and c.device_id == CUT_DEVICE
            and cut.cut_ms <= c.published_ms <= cut.restoring_ms
        }
        return [a for a in rig.alerts([CUT_DEVICE]) if a.alert_id in published]

    docs = wait_for("the cut's device_offline alert", cut_alerts, 30.0)
    assert len(docs) == 1, f"the cut raised {len(docs)} device_offline alerts: {docs}"
    rig.cut_alert_id = docs[0].alert_id


def test_e_offline_alert_resolves_after_the_reconnect(rig: Rig) -> None:
    if not rig.cut_alert_id:
        pytest.skip("needs test_e_agent_cut_off_broker_2min")
    cut = rig.cut

    def resolved() -> list[acc.AlertDoc]:
        docs = [a for a in rig.alerts([CUT_DEVICE]) if a.alert_id == rig.cut_alert_id]
        return [a for a in docs if a.status == "resolved"]

    # Every reading of the cut device is stored by now: its "online" went first.
    (alert,) = wait_for("the cut's device_offline alert to resolve", resolved, 10.0)
    # Resolved by the "online" of the reconnection after the heal (its event time).
    assert alert.resolved_at is not None and alert.resolved_at >= cut.restoring_ms, alert


def test_z_everything_accounted_after_the_fleet_stops(rig: Rig) -> None:
    assert rig.fleet is not None
    rig.cut.heal_now()
    rig.alive()
    stopped_ms = now_ms()
    say("[z] stopping the fleet (each agent flushes its outbox)")
    rig.stop_fleet()
    say("[z] fleet stopped")
    result = rig.check_readings("z", rig.devices, min_new=0)  # the fleet just stopped
    rig.check_accounted(result)
    assert result.sent >= len(rig.devices) * 200, result
    # Alerts: every incident alerted once; index and alerts topic agree.
    docs = rig.check_alerted(["a", "b", "c", "d", "f"], stopped_ms)
    assert len({a.alert_id for a in docs}) == len(docs)
    assert not [a for a in docs if a.device_id == CUT_DEVICE and a.rule == "threshold_high"]
