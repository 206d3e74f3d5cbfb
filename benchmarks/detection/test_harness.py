"""The detection harness counts what a judge raises, and times detections, correctly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from benchmarks.detection import run as runner
from benchmarks.detection import shifts
from benchmarks.detection.configs import edge_config_for
from benchmarks.detection.harness import (
    FaultRun,
    NormalRun,
    WeekJob,
    run_device_week,
    run_faults,
    run_normal,
)
from benchmarks.detection.report import markdown, summarize
from edge_agent.alerts import Transition
from edge_agent.config import EdgeConfig
from edge_agent.equipment import FaultLabel, Trace
from edge_agent.sensors import Sample
from telemetry_contract import AlertState, EdgeAlertKind, Quality, Severity

CONFIG = edge_config_for("fridge")


def _trace(
    n: int, interval_s: float = 60.0, faults: tuple[FaultLabel, ...] = (), **over: Any
) -> Trace:
    temps: list[float | None] = [4.0] * n
    quals: list[Quality | None] = [Quality.OK] * n
    for i, (t, q) in over.get("at", {}).items():
        temps[i], quals[i] = t, q
    return Trace("fridge", 1, 0, interval_s, temps, quals, (), faults)


class DailyJudge:
    """Raises one temperature alarm per simulated day, and clears it at once."""

    def __init__(self, config: EdgeConfig) -> None:
        self.day = -1
        self.active = False

    @property
    def alarm_active(self) -> bool:
        return self.active

    def judge(self, s: Sample) -> tuple[None, list[Transition]]:
        day = s.ts_ms // 86_400_000
        if day == self.day:
            return None, []
        self.day = day
        raised = Transition(
            s.sensor_id, EdgeAlertKind.ANOMALY, AlertState.RAISED, Severity.WARNING, "x"
        )
        cleared = Transition(
            s.sensor_id, EdgeAlertKind.ANOMALY, AlertState.CLEARED, Severity.INFO, "y"
        )
        return None, [raised, cleared]


def test_a_judge_raising_once_a_day_scores_seven_per_device_week() -> None:
    week = _trace(7 * 24 * 60)  # a week at one sample per minute
    run, _, _ = run_normal(week, DailyJudge(CONFIG), CONFIG, DailyJudge)
    assert (run.temperature_alarms, run.sensor_alarms, run.temperature_alarms_24h) == (7, 0, 1)
    assert run.causes == {"first_24h": 1, "other": 6}
    summary = summarize([run], [])
    assert summary["fridge"]["temperature_per_week"] == pytest.approx(7.0)
    assert summary["fridge"]["device_weeks"] == pytest.approx(1.0)


def test_threshold_and_sensor_raises_are_counted_apart() -> None:
    cfg = CONFIG.__class__(alarm=CONFIG.alarm.__class__(high_c=8.0))
    # a threshold alarm at minute 10 (cleared at 11), CRC errors from minute 30 (day 2:
    # 1500); a sensor fault is two bad readings in a row at one a minute (alarm.fault_after_s)
    at: dict[int, tuple[float | None, Quality | None]] = {10: (9.0, Quality.OK)}
    at |= {i: (None, Quality.CRC_ERROR) for i in (30, 31)}
    at |= {i: (None, Quality.POWER_ON_RESET) for i in (1500, 1501)}
    tr = _trace(3000, at=at)
    from edge_agent.judge import SampleJudge

    judge = SampleJudge(cfg)
    run, _, snap = run_normal(tr, judge, cfg, snapshot_at=20)
    assert (run.temperature_alarms, run.sensor_alarms) == (1, 2)
    assert (run.temperature_alarms_24h, run.sensor_alarms_24h) == (1, 1)
    assert run.alarm_times_s == [600.0]
    assert snap is not None and not pickle.loads(snap).alarm_active  # cleared at minute 11


def test_time_to_detect_is_from_the_first_visible_moment_to_the_first_raise_of_its_class() -> None:
    cfg = CONFIG.__class__(alarm=CONFIG.alarm.__class__(high_c=8.0))
    labels = (
        FaultLabel("door_left_open", "temperature", 600.0, 1200.0, 600.0),
        FaultLabel("crc_error", "sensor", 1800.0, 2400.0, 1800.0),
    )
    # door: too warm from minute 13 on (3 min after it opened); CRC errors at minute 31..
    at: dict[int, tuple[float | None, Quality]] = {i: (12.0, Quality.OK) for i in range(13, 20)}
    at |= {i: (None, Quality.CRC_ERROR) for i in range(31, 40)}
    from edge_agent.judge import SampleJudge

    runs = run_faults(_trace(60, faults=labels, at=at), SampleJudge(cfg), cfg)
    door, crc = runs
    assert (door.ttd_s, door.temperature_alarms, door.sensor_alarms) == (180.0, 1, 0)
    # One failed read is no fault: the second in a row (a minute later) raises it.
    assert (crc.ttd_s, crc.sensor_as_temperature) == (120.0, False)


def test_a_sensor_fault_raising_a_temperature_alarm_is_reported() -> None:
    labels = (FaultLabel("probe_in_air", "sensor", 0.0, 600.0, 0.0),)
    runs = run_faults(_trace(20, faults=labels), DailyJudge(CONFIG), CONFIG, DailyJudge)
    assert runs[0].sensor_as_temperature and not runs[0].detected


def test_a_power_cut_restarts_the_agent_with_its_saved_detector() -> None:
    from edge_agent.judge import SampleJudge

    n = 400
    at: dict[int, tuple[float | None, Quality | None]] = {i: (None, None) for i in range(200, 260)}
    at[260] = at[261] = (None, Quality.POWER_ON_RESET)
    run, judge, _ = run_normal(_trace(n, at=at), SampleJudge(CONFIG), CONFIG)
    assert run.samples == n - 60
    assert isinstance(judge, SampleJudge)
    assert judge.detector.monitors["28-000000000001"].seen > 300  # learning went on
    assert run.sensor_alarms == 1


def test_one_device_week_with_faults_runs_end_to_end() -> None:
    job = WeekJob("fridge", 3, 60.0, ("crc_error", "door_left_open"), duration_s=4 * 86400.0)
    normal, faults = run_device_week(job)
    assert normal.samples == 4 * 1440
    assert [f.kind for f in faults] == ["crc_error", "door_left_open"]
    crc = faults[0]
    # At one reading a minute the second bad reading in a row reports it (one is no fault).
    assert crc.detected and crc.ttd_s is not None and crc.ttd_s < 2 * 60.0
    assert not crc.sensor_as_temperature


def test_report_tables_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    normal = [
        NormalRun(
            "freezer",
            1,
            samples=10,
            hours=84.0,
            temperature_alarms=1,
            cpu_s=1e-4,
            causes={"door_open": 1},
        )
    ]
    faults = [FaultRun("freezer", 1, "stuck", "sensor", 0.0, None, temperature_alarms=2)]
    text = markdown(summarize(normal, faults))
    assert "| freezer | 0.5 | 2.00 | 0.00 | 0 / 0 | 0 / 1 / 0 / 0 | 10.0 | 0 |" in text
    assert "| freezer | stuck | sensor | 0/1 | – | – | 60 | no | 1 |" in text
    out = tmp_path / "r.json"
    args = ["--profiles", "fridge", "--weeks", "1", "--interval-s", "600", "--workers", "1"]
    assert runner.main([*args, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["profiles"]["fridge"]["device_weeks"] == pytest.approx(1.0)
    assert "door_left_open" in doc["profiles"]["fridge"]["faults"]
    assert "| fridge |" in capsys.readouterr().out


def test_bad_options_name_the_problem(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        runner.main(["--profiles", "attic"])
    assert "unknown profile 'attic'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--interval-s", "0"])
    assert "must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--faults", "meltdown"])
    assert "unknown fault 'meltdown'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--detector", "zscore", "--param", "alpha=0.01"])
    assert "detector.params.alpha: was removed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--param", "window_s=30"])
    assert "--param needs --detector" in capsys.readouterr().err


def test_another_detector_runs_in_each_device_week(tmp_path: Path) -> None:
    out = tmp_path / "zs.json"
    args = ["--profiles", "fridge", "--weeks", "1", "--interval-s", "600", "--workers", "1"]
    assert (
        runner.main([*args, "--detector", "zscore", "--param", "window_s=30", "--json", str(out)])
        == 0
    )
    cfg = json.loads(out.read_text())["configs"]["fridge"]
    assert cfg["detector"] == "zscore" and cfg["params"]["window_s"] == 30.0
    job = WeekJob("fridge", 1, 600.0, detector="zscore", params=(("window_s", 30.0),))
    _Spy.seen.clear()
    run_device_week(job, factory=_Spy)
    assert _Spy.seen and all(s == ("zscore", 30.0) for s in _Spy.seen)


class _Spy(DailyJudge):
    """A judge that notes the detector it was configured with."""

    seen: list[tuple[str, Any]] = []  # noqa: RUF012 - shared on purpose: the judge is pickled

    def __init__(self, config: EdgeConfig) -> None:
        super().__init__(config)
        _Spy.seen.append((config.detector.name, config.detector.params.get("window_s")))


def test_only_the_asked_faults_are_injected() -> None:
    summary = runner.evaluate(["fridge"], 1, interval_s=600.0, faults=["crc_error", "hvac_failure"])
    assert list(summary["fridge"]["faults"]) == ["crc_error"]
    assert runner.evaluate(["fridge"], 1, interval_s=600.0, faults=False)["fridge"]["faults"] == {}


def test_the_shift_benchmark_counts_caught_shifts_and_false_onsets() -> None:
    temps, at = shifts.stream(0)
    assert len(at) == shifts.SHIFTS and all(a < len(temps) for a in at)
    caught, onsets, hours = shifts.measure("zscore", {}, 0)
    assert caught >= 17 and onsets == 0 and hours > 2
    # A threshold no score reaches catches nothing.
    assert shifts.measure("zscore", {"threshold": 1e6}, 0)[0] == 0
