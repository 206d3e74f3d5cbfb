"""Edge agent on fake w1 sysfs + gpiozero mock pins + a private Mosquitto."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.gpio import StatusLight
from telemetry_contract import Quality

pytestmark = pytest.mark.hil

PROBE = "28-0316a2791aff"
OTHER = "28-0416b3a1c2ff"
STATUS_LED, ALARM_LED, BUZZER, RELAY, BUTTON = 17, 27, 22, 23, 24
GOOD = (
    Path(__file__).resolve().parents[1] / "fixtures" / "w1" / "ok" / PROBE / "w1_slave"
).read_text()


def w1(millic: int, crc: str = "YES") -> str:
    return f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {crc}\n72 01 4b 46 7f ff 0e 10 57 t={millic}\n"


def write(root: Path, text: str, probe: str = PROBE) -> None:
    d = root / probe
    d.mkdir(exist_ok=True)
    tmp = d / ".tmp"
    tmp.write_text(text)
    tmp.replace(d / "w1_slave")


def final_stats(agent: Any) -> Any:
    """Outbox stats after the agent closed it (reopened read-only-ish)."""
    from edge_agent.outbox import Outbox

    ob = Outbox(agent.outbox.path, device_id="hil-d1", site="hil")
    ob.open()
    try:
        return ob.stats()
    finally:
        ob.close()


def check_no_reuse(readings: list[tuple[Any, bytes]]) -> dict[int, bytes]:
    """Seq -> payload; a seq seen twice must be the same message (a QoS 1 redelivery)."""
    by_seq: dict[int, bytes] = {}
    for r, raw in readings:
        assert by_seq.setdefault(r.seq, raw) == raw, f"seq {r.seq} reused for another reading"
    return by_seq


def test_bad_readings_get_their_flag_and_never_reach_detector_or_alarm(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    try:
        ra = run_agent(
            hil.config(
                w1_root=root,
                state_dir=tmp_path / "state",
                port=broker.port,
                detector='[detector]\nname = "zscore"\nparams = {warmup = 5, threshold = 6.0}',
                # A sensor fault clears once 2 x fault_after_s pass without a bad read:
                # 2 s here, so that each bad spell below is its own fault.
                extra="[alarm]\nfault_after_s = 1.0",
            )
        )

        def count(quality: Quality) -> int:
            return sum(
                1 for r, _ in sub.readings() if r.sensor_id == PROBE and r.quality is quality
            )

        def fault_changes(state: str) -> list[Any]:
            return [
                m
                for m, _ in sub.of_kind("alert")
                if m.sensor_id == PROBE and (m.kind.value, m.state.value) == ("sensor_fault", state)
            ]

        cleared: list[Any] = []
        assert hil.wait_for(lambda: count(Quality.OK) >= 8)  # detector warm
        for text, quality in (
            (w1(23125, "NO"), Quality.CRC_ERROR),
            (w1(85000), Quality.POWER_ON_RESET),
            (w1(127937), Quality.OUT_OF_RANGE),
            (None, Quality.DISCONNECTED),
        ):
            if text is None:
                import shutil

                shutil.rmtree(root / PROBE)
            else:
                write(root, text)
            assert hil.wait_for(lambda q=quality: count(q) >= 3), quality
            write(root, GOOD)
            n = count(Quality.OK)
            assert hil.wait_for(lambda n=n: count(Quality.OK) >= n + 2)
            spell = len(cleared) + 1
            assert hil.wait_for(lambda s=spell: len(fault_changes("cleared")) >= s), quality
            cleared = fault_changes("cleared")
        ra.stop()
        readings = sub.readings()
        seqs = [r.seq for r, _ in readings]
        # In seq order, none missing (no broker restart here, so no redelivery either).
        assert seqs == list(range(len(seqs)))
        ok_probe = 0
        for r, _ in readings:
            assert not r.is_anomaly
            if r.quality is Quality.OK:
                ok_probe += r.sensor_id == PROBE
                assert r.temp_c == (23.125 if r.sensor_id == PROBE else -18.5)
            else:
                assert (r.temp_c, r.anomaly_score, r.detector) == (None, None, None)
        # The model of the probe learned exactly its ok readings, nothing else.
        assert ra.agent.detector.monitors[PROBE].seen == ok_probe
        # The alarm never went on; sensor-fault alerts were raised and cleared.
        assert all(not s.state for s in ra.pin(ALARM_LED).states)
        assert all(not s.state for s in ra.pin(BUZZER).states)
        faults = [
            (m.kind.value, m.state.value) for m, _ in sub.of_kind("alert") if m.sensor_id == PROBE
        ]
        assert faults.count(("sensor_fault", "raised")) == 4
        assert faults.count(("sensor_fault", "cleared")) == 4
        assert ("anomaly", "raised") not in faults
    finally:
        sub.close()


def test_alarm_led_and_buzzer_on_for_local_anomaly_while_broker_is_down(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    try:
        ra = run_agent(
            hil.config(
                w1_root=root,
                state_dir=tmp_path / "state",
                port=broker.port,
                detector='[detector]\nname = "zscore"\nparams = {warmup = 5, threshold = 6.0}',
            )
        )
        agent = ra.agent
        assert hil.wait_for(lambda: agent.link.connected and len(sub.readings()) >= 12)
        assert hil.wait_for(lambda: ra.pin(STATUS_LED).state == 1)  # connected: steady on
        broker.stop()
        assert hil.wait_for(lambda: not agent.link.connected)
        write(root, w1(60000))  # 23 -> 60 °C: fire
        assert hil.wait_for(lambda: ra.pin(ALARM_LED).state == 1, timeout=10)
        assert ra.pin(BUZZER).state == 1
        assert ra.pin(RELAY).state == 0  # relay_enabled is false by default
        # Silence button: buzzer off, alarm LED stays on.
        ra.pin(BUTTON).drive_low()
        assert hil.wait_for(lambda: ra.pin(BUZZER).state == 0, timeout=5)
        assert ra.pin(ALARM_LED).state == 1
        ra.pin(BUTTON).drive_high()
        # Back to normal: cleared after clear_after normal readings.
        write(root, GOOD)
        assert hil.wait_for(lambda: ra.pin(ALARM_LED).state == 0, timeout=10)
        assert ra.pin(BUZZER).state == 0
        broker.start()
        assert hil.wait_for(hil.backlog_drained(agent.outbox.path), timeout=60)
        assert hil.wait_for(
            lambda: (
                [(m.kind.value, m.state.value) for m, _ in sub.of_kind("alert")]
                == [("anomaly", "raised"), ("anomaly", "cleared")]
            ),
            timeout=30,
        )
        flagged = [r for r, _ in sub.readings() if r.is_anomaly]
        assert flagged and all(r.temp_c == 60.0 and r.sensor_id == PROBE for r in flagged)
    finally:
        sub.close()


@pytest.mark.slow
def test_broker_down_60s_every_seq_arrives(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/telemetry")
    try:
        ra = run_agent(hil.config(w1_root=root, state_dir=tmp_path / "state", port=broker.port))
        agent = ra.agent
        assert hil.wait_for(lambda: len(sub.readings()) >= 10)
        broker.stop()
        t0 = time.monotonic()
        before = agent.outbox.stats().next_seq
        while time.monotonic() - t0 < 60:
            time.sleep(1)
        during = agent.outbox.stats()
        assert during.next_seq - before >= 100  # readings continued: 2 probes at 5 Hz
        assert during.depth > 0 and during.dropped == 0
        # Buffering: the status LED blinks (its pin toggles), the alarm stays off.
        assert agent.outputs.status is StatusLight.BUFFERING
        ra.pin(STATUS_LED).clear_states()
        time.sleep(2.5)
        assert {st.state for st in ra.pin(STATUS_LED).states} >= {True, False}
        assert ra.pin(ALARM_LED).state == 0
        broker.start()
        assert hil.wait_for(hil.backlog_drained(agent.outbox.path), timeout=120)
        ra.stop()  # graceful: flushes what is left
        final = final_stats(agent)
        assert final.depth == 0 and final.dropped == 0
        assert hil.wait_for(
            lambda: {r.seq for r, _ in sub.readings()} >= set(range(final.next_seq)), timeout=60
        )
        by_seq = check_no_reuse(sub.readings())
        # Every seq the agent ever allocated arrived, none beyond.
        assert sorted(by_seq) == list(range(final.next_seq))
    finally:
        sub.close()


def test_outbox_overflow_sends_a_gap_with_the_exact_range(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/telemetry")
    try:
        ra = run_agent(
            hil.config(
                w1_root=root,
                state_dir=tmp_path / "state",
                port=broker.port,
                interval_s=0.1,
                extra="",
            )
            .replace("[outbox]\n", "[outbox]\nmax_rows = 30\n")
            .replace("[mqtt]\n", "[mqtt]\nmax_inflight = 5\n")
        )
        agent = ra.agent
        assert hil.wait_for(lambda: len(sub.readings()) >= 4)
        broker.stop()
        assert hil.wait_for(lambda: agent.outbox.stats().dropped >= 20, timeout=60)
        broker.start()
        assert hil.wait_for(hil.backlog_drained(agent.outbox.path), timeout=60)
        ra.stop()
        final = final_stats(agent)

        def gaps_seen() -> list[Any]:
            return [m for m, _ in sub.of_kind("telemetry") if type(m).__name__ == "Gap"]

        def all_seqs_seen() -> bool:
            covered = {s for g in gaps_seen() for s in range(g.first_seq, g.last_seq + 1)}
            got = {r.seq for r, _ in sub.readings()}
            return got | covered >= set(range(final.next_seq))

        # The subscriber's persistent session queued what the agent sent while the
        # subscriber was still reconnecting to the restarted broker: let it arrive.
        hil.wait_for(all_seqs_seen, timeout=30)
        gaps = gaps_seen()
        assert gaps and all(g.reason.value == "outbox_full" for g in gaps)
        got = {r.seq for r, _ in sub.readings()}
        lost: set[int] = set()
        for g in gaps:
            rng = set(range(g.first_seq, g.last_seq + 1))
            assert not rng & lost, "two gaps cover the same seq"
            lost |= rng
        assert not got & lost, "a seq both delivered and reported lost"
        assert got | lost == set(range(final.next_seq)), "a seq neither delivered nor in a gap"
        assert sum(g.count for g in gaps) == len(lost) == final.dropped
    finally:
        sub.close()


def test_remote_config_applied_within_one_interval_and_bad_one_rejected(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    import paho.mqtt.publish as publish

    from deploy.local.config_keys import write_key_pair
    from telemetry_contract import DeviceConfig, SignedConfig, encode
    from telemetry_contract.signing import key_id, load_private_key, sign_config, signed_bytes

    write_key_pair(tmp_path / "signing.key", tmp_path / "signing.pub")
    key = load_private_key((tmp_path / "signing.key").read_bytes())

    def signed(raw: bytes) -> bytes:
        """Any bytes signed as a config (the publisher would refuse to sign bad ones)."""
        kid = key_id(key.public_key())
        env = SignedConfig(
            device_id="hil-d1",
            site="hil",
            key_id=kid,
            config=raw,
            signature=key.sign(signed_bytes(kid, raw)),
        )
        return encode(env)

    def send(payload: bytes) -> None:
        publish.single(
            "thermowatch/hil/hil-d1/config",
            payload,
            qos=1,
            retain=True,
            hostname="127.0.0.1",
            port=broker.port,
        )

    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    try:
        # This site lets the cloud silence the buzzer (allow_safety_changes).
        remote = (
            f'[remote_config]\npublic_key_file = "{tmp_path / "signing.pub"}"\n'
            "allow_safety_changes = true\n"
        )
        ra = run_agent(
            hil.config(
                w1_root=root,
                state_dir=tmp_path / "state",
                port=broker.port,
                interval_s=2.0,
                extra=remote,
            )
        )
        agent = ra.agent
        assert hil.wait_for(lambda: agent.link.connected and len(sub.readings()) >= 2)
        cfg = DeviceConfig(
            device_id="hil-d1",
            site="hil",
            version=3,
            ts=int(time.time() * 1000),
            sampling_interval_s=0.2,
            alarm_high_c=20.0,
            buzzer_enabled=False,
        )
        sent = time.monotonic()
        send(encode(sign_config(key, cfg)))
        assert hil.wait_for(lambda: agent.config_version == 3, timeout=10)
        # Within one (old) interval the new interval is in force: readings every 0.2 s.
        n = len(sub.readings())
        assert hil.wait_for(lambda: len(sub.readings()) >= n + 10, timeout=2.0 + 3.0)
        assert time.monotonic() - sent < 2.0 + 5.0
        assert agent.config.alarm.high_c == 20.0
        # 23.125 °C is above the new 20 °C limit: threshold alarm, LED on, buzzer disabled.
        assert hil.wait_for(lambda: ra.pin(ALARM_LED).state == 1, timeout=5)
        assert ra.pin(BUZZER).state == 0
        assert hil.wait_for(
            lambda: any(m.config_version == 3 for m, _ in sub.of_kind("status")), timeout=10
        )
        # A bad one: low above high. Rejected, reported, previous config kept.
        bad = (
            b'{"type":"device_config","device_id":"hil-d1","site":"hil","version":4,'
            b'"ts":%d,"sampling_interval_s":0.01}' % int(time.time() * 1000)
        )
        send(signed(bad))
        assert hil.wait_for(
            lambda: any(m.kind.value == "config_rejected" for m, _ in sub.of_kind("alert")),
            timeout=10,
        )
        rejected = next(m for m, _ in sub.of_kind("alert") if m.kind.value == "config_rejected")
        assert "sampling_interval_s" in rejected.message
        assert agent.config_version == 3 and agent.config.sampling.interval_s == 0.2
        # A semantically bad one (unknown detector) is rejected too, with the key named.
        bad2 = DeviceConfig(
            device_id="hil-d1",
            site="hil",
            version=5,
            ts=int(time.time() * 1000),
            detector="magic",
        )
        send(signed(encode(bad2)))
        assert hil.wait_for(
            lambda: any("detector.name" in m.message for m, _ in sub.of_kind("alert")),
            timeout=10,
        )
        assert agent.config_version == 3 and agent.config.detector.name == "thermal"
        # An unsigned one, however valid, is rejected: the signature is named.
        unsigned = DeviceConfig(
            device_id="hil-d1", site="hil", version=6, ts=int(time.time() * 1000)
        )
        send(encode(unsigned))
        assert hil.wait_for(
            lambda: any("unsigned config refused" in m.message for m, _ in sub.of_kind("alert")),
            timeout=10,
        )
        assert agent.config_version == 3
    finally:
        sub.close()


def test_one_process_simulates_a_fleet_of_agents(hil: Any, broker: Any, tmp_path: Path) -> None:
    from edge_agent.__main__ import main

    scenario = tmp_path / "fleet.toml"
    scenario.write_text(
        "seed = 5\ninterval_s = 0.5\nduration_s = 3\n"
        '[fleet]\ndevices = 4\nsensors_per_device = 2\ndevice_prefix = "fleet-"\nsite = "hil"\n'
    )
    template = tmp_path / "agent.toml"
    template.write_text(
        f'[device]\nstate_dir = "{tmp_path / "state"}"\n[sampling]\ninterval_s = 0.5\n'
        f"[mqtt]\nport = {broker.port}\n"
    )
    sub = hil.Subscriber(broker.port, "thermowatch/hil/+/telemetry")
    try:
        code = main(
            [
                "simulate",
                "--scenario",
                str(scenario),
                "--out",
                str(tmp_path / "w1"),
                "--agents",
                str(template),
            ]
        )
        assert code == 0
        assert hil.wait_for(
            lambda: (
                {r.device_id for r, _ in sub.readings()}
                == {"fleet-001", "fleet-002", "fleet-003", "fleet-004"}
            ),
            timeout=20,
        )
        for dev in ("fleet-001", "fleet-004"):
            seqs = sorted({r.seq for r, _ in sub.readings() if r.device_id == dev})
            assert seqs == list(range(len(seqs))) and len(seqs) >= 4  # each its own seq
    finally:
        sub.close()


def test_reconnection_status_is_newer_than_the_last_will(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    """The will and the "online" status are composed at every connection.

    The processor orders a device's statuses by their event time; were the
    reconnection's "online" as old as the will the broker published when the
    connection before it was lost, the device would stay offline for good.
    """
    from telemetry_contract import DeviceState, DeviceStatus

    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/status")

    def statuses() -> list[DeviceStatus]:
        return [m for m, _ in sub.of_kind("status") if isinstance(m, DeviceStatus)]

    try:
        ra = run_agent(hil.config(w1_root=root, state_dir=tmp_path / "state", port=broker.port))
        assert hil.wait_for(lambda: any(s.state is DeviceState.ONLINE for s in statuses()))
        first_online = max(s.ts for s in statuses() if s.state is DeviceState.ONLINE)
        time.sleep(0.05)  # event times are in ms
        broker.stop()  # Mosquitto publishes the connected clients' wills as it stops
        time.sleep(1.0)
        broker.start()
        assert hil.wait_for(lambda: ra.agent.link.connected, timeout=30)

        def reconnected() -> bool:
            return any(s.state is DeviceState.ONLINE and s.ts > first_online for s in statuses())

        assert hil.wait_for(reconnected, timeout=20), [(s.state, s.ts) for s in statuses()]
        newest_online = max(s.ts for s in statuses() if s.state is DeviceState.ONLINE)
        wills = [s.ts for s in statuses() if s.state is DeviceState.OFFLINE]
        assert all(ts < newest_online for ts in wills), (wills, newest_online)
    finally:
        sub.close()
