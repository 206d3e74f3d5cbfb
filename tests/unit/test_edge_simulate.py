"""The simulator writes trees that the real reader reads with the right verdicts."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from edge_agent.__main__ import main
from edge_agent.detect import evaluate
from edge_agent.sensors import DS18B20, discover_w1
from edge_agent.simulate import EXPECTED_QUALITY, FleetSimulator, Scenario
from telemetry_contract import Quality

SCENARIOS = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"


def test_fleet_identities_are_deterministic() -> None:
    a = FleetSimulator(Scenario.load(SCENARIOS / "fleet_load.toml"))
    b = FleetSimulator(Scenario.load(SCENARIOS / "fleet_load.toml"))
    assert [d.sensor_ids for d in a.devices] == [d.sensor_ids for d in b.devices]
    assert len({d.device_id for d in a.devices}) == 100
    assert a.devices[0].device_id == "sim-load-001"


def test_same_seed_same_files(tmp_path: Path) -> None:
    sc = Scenario.load(SCENARIOS / "cold_room.toml")
    for out in ("a", "b"):
        FleetSimulator(sc).run(tmp_path / out, realtime=False, steps=50)
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b", ignore=["labels.jsonl"])
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_real_reader_sees_every_injected_fault(tmp_path: Path) -> None:
    """Step through the cold-room day; the real reader's verdict matches the labels."""
    sc = Scenario.load(SCENARIOS / "cold_room.toml")
    sim = FleetSimulator(sc)
    out = tmp_path / "tree"
    sim.run(out, realtime=False, steps=1)  # labels + tree at step 0
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert {lab["kind"] for lab in labels} == {
        "spike",
        "crc",
        "reset",
        "dropout",
        "stuck",
        "drift",
        "fire",
    }
    start = min(
        lab["start_ts"] - int(next(i.start_s for i in sc.incident if i.kind == lab["kind"]) * 1000)
        for lab in labels
    )
    probes = {
        (dev.device_id, sid): DS18B20(out / dev.device_id / sid, retries=0)
        for dev in sim.devices
        for sid in dev.sensor_ids
    }
    seen: dict[str, set[str]] = {}
    steps = int(sc.duration_s / sc.interval_s)
    for step in range(1, steps):
        sim.write_step(out, step)
        t_ms = start + int(step * sc.interval_s * 1000)
        for (device, sid), probe in probes.items():
            present = sid in discover_w1(out / device)
            q = probe.read().quality if present else Quality.DISCONNECTED
            expected = "ok"
            for lab in labels:
                if (
                    (lab["device_id"], lab["sensor_id"]) == (device, sid)
                    and lab["expected_quality"] != "ok"
                    and lab["start_ts"] <= t_ms < lab["end_ts"]
                ):
                    expected = lab["expected_quality"]
            assert q.value == expected, (device, sid, step)
            seen.setdefault(expected, set()).add(q.value)
    assert set(EXPECTED_QUALITY.values()) <= set(seen)


@pytest.mark.parametrize(
    ("scenario", "kind"), [("cold_room.toml", "fire"), ("freezer_door.toml", "door_open")]
)
def test_detector_is_measurable_on_simulated_incidents(scenario: str, kind: str) -> None:
    sc = Scenario.load(SCENARIOS / scenario)
    sim = FleetSimulator(sc)
    d, s = next((i.device, i.sensor) for i in sc.incident if i.kind == kind)
    inc = next(i for i in sc.incident if i.kind == kind)
    series = []
    for step in range(int(sc.duration_s / sc.interval_s)):
        state, value = sim.sample(d, s, step)
        if state == "ok" and value is not None:
            series.append((value, inc.labelled(step * sc.interval_s)))
    m = evaluate("zscore", {}, series)
    assert m.tp > 0, m  # the incident is caught
    assert m.precision > 0.5, m


def test_simulate_cli_writes_a_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "simulate",
            "--scenario",
            str(SCENARIOS / "freezer_door.toml"),
            "--out",
            str(tmp_path / "sim"),
            "--fast",
            "--steps",
            "5",
        ]
    )
    assert code == 0
    assert "readings=5" in capsys.readouterr().out
    (probe,) = discover_w1(tmp_path / "sim" / "sim-freezer-001")
    s = DS18B20(tmp_path / "sim" / "sim-freezer-001" / probe).read()
    assert s.quality is Quality.OK and s.temp_c is not None and -19.5 < s.temp_c < -16.5
