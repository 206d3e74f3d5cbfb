"""The NAB runner: every detector through the agent's own monitor, NAB's file layout,
and the score of the shipped ``context`` configuration on the corpus.

The detector itself is tested with the agent
(``tests/unit/test_edge_context_detector.py``).
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

from benchmarks.nab import corpus as nab_corpus
from benchmarks.nab import run as nab_run
from benchmarks.nab.scorer import FileLabels
from edge_agent.detect import DETECTORS, SensorMonitor, Verdict
from edge_agent.detectors import context


def _noisy(n: int, seed: int = 1, level: float = 20.0) -> list[float]:
    rng = random.Random(seed)
    return [level + math.sin(i / 12.0) + rng.gauss(0.0, 0.2) for i in range(n)]


def test_runner_uses_the_agents_monitor() -> None:
    mon = nab_run.make_monitor("context", {"warmup": 7})
    assert isinstance(mon, SensorMonitor)
    assert [mon.observe(1.0).warm for _ in range(8)] == [False] * 7 + [True]
    z = nab_run.make_monitor("zscore", {})
    assert isinstance(z, SensorMonitor) and z.name == "zscore"
    with pytest.raises(SystemExit):
        nab_run.make_monitor("nope", {})


def test_runner_writes_nab_layout(tmp_path: Path) -> None:
    values = _noisy(1200, seed=7)
    values[900] = 60.0
    ts = [f"2014-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(1200)]
    key = "realKnownCause/fake.csv"
    series = nab_corpus.Series(key, tuple(ts), tuple(values), FileLabels(1200, ((880, 940),)))
    corpus = nab_corpus.Corpus(tmp_path, {key: series})
    runs = nab_run.run_corpus(corpus, "context", context.check_params({}), workers=1)
    results = nab_run.score_runs(corpus, {**runs})
    assert results["standard"]["tp"] == 1
    nab_run.write_csvs(corpus, runs, "context", tmp_path / "out")
    path = tmp_path / "out" / "context" / "realKnownCause" / "context_fake.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == 1201
    assert rows[901][0] == ts[900] and float(rows[901][1]) == 60.0
    assert float(rows[901][2]) >= float(context.DEFAULTS["threshold"])


def test_the_shipped_configuration_scores_what_the_docs_say() -> None:
    # The whole corpus through the agent's monitor at the configured threshold
    # (10-60 s): a regression guard for docs/benchmarks.md, not a speed test.
    # Without the corpus: a skip, a failure under CI=true.
    corpus = nab_corpus.load_corpus(nab_corpus.require_corpus())
    params = context.check_params({})
    runs = nab_run.run_corpus(corpus, "context", params, workers=2)
    at = nab_run.fixed_threshold_score(corpus, runs, float(params["threshold"]))
    assert at["standard"] == pytest.approx(71.69, abs=0.01)
    assert at["reward_low_FP_rate"] == pytest.approx(67.79, abs=0.01)
    assert at["reward_low_FN_rate"] == pytest.approx(74.80, abs=0.01)


class _PlainMonitor:
    """Today's API: ``observe(temp_c)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int | None]] = []

    def observe(self, temp_c: float) -> Verdict:
        self.seen.append((temp_c, None))
        return Verdict(None if len(self.seen) < 2 else temp_c, temp_c > 5.0, len(self.seen) >= 2)


class _TimedMonitor(_PlainMonitor):
    """A monitor whose ``observe`` also takes the reading's time."""

    def observe(self, temp_c: float, ts_ms: int | None = None) -> Verdict:  # type: ignore[override]
        self.seen.append((temp_c, ts_ms))
        return Verdict(temp_c, temp_c > 5.0, True)


STAMPS = ("2014-01-01 00:00:00", "2014-01-01 00:05:00", "2013-12-31 23:59:59")


def test_feed_gives_each_rows_time_to_a_monitor_that_takes_one() -> None:
    timed = _TimedMonitor()
    scores, flags, _ = nab_run.feed(timed, [1.0, 9.0, 2.0], STAMPS)
    # Epoch ms, UTC, in row order (a backward jump stays as it is in the file).
    assert timed.seen == [(1.0, 1388534400000), (9.0, 1388534700000), (2.0, 1388534399000)]
    assert scores == [1.0, 9.0, 2.0] and flags == [0.0, 1.0, 0.0]


def test_feed_keeps_todays_observe_working() -> None:
    plain = _PlainMonitor()
    scores, flags, _ = nab_run.feed(plain, [1.0, 9.0, 2.0], STAMPS)
    assert plain.seen == [(1.0, None), (9.0, None), (2.0, None)]
    assert scores == [0.0, 9.0, 2.0]  # no score while warming up: 0
    assert flags == [0.0, 1.0, 0.0]


def _fake_corpus(tmp_path: Path, n: int = 600) -> nab_corpus.Corpus:
    values = _noisy(n, seed=3)
    for i in range(450, 470):
        values[i] += 8.0
    ts = [f"2014-01-{1 + i // 288:02d} {i % 288 // 12:02d}:{i % 12 * 5:02d}:00" for i in range(n)]
    key = "realKnownCause/fake.csv"
    series = nab_corpus.Series(key, tuple(ts), tuple(values), FileLabels(n, ((440, 480),)))
    return nab_corpus.Corpus(tmp_path, {key: series})


def test_flagged_rows_are_scored_as_detections(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    n = 600
    flags = [0.0] * n
    flags[440] = 1.0  # the window's first row: a perfect detection
    runs = {
        "realKnownCause/fake.csv": nab_run.FileRun(
            "realKnownCause/fake.csv", [0.0] * n, 0, 0, flags
        )
    }
    assert nab_run.flagged_score(corpus, runs) == pytest.approx(
        {"standard": 100.0, "reward_low_FP_rate": 100.0, "reward_low_FN_rate": 100.0}
    )
    flags[300] = 1.0  # plus one false alarm before the window
    assert nab_run.flagged_score(corpus, runs)["standard"] == pytest.approx(100 * 1.89 / 2)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_registered_detector_is_scored(tmp_path: Path, name: str) -> None:
    # Whatever edge_agent.detect registers runs through the agent's monitor
    # with its defaults and gets every figure of the summary.
    summary = nab_run.evaluate(_fake_corpus(tmp_path), name, {}, workers=1, closed_loop=False)
    assert summary["detector"] == name and summary["params"] == DETECTORS[name] | summary["params"]
    run = summary["runs"]["realKnownCause/fake.csv"]
    assert len(run.scores) == len(run.flags or []) == 600
    for figures in (summary["as_flagged"], summary["at_configured_threshold"] or {}):
        assert all(math.isfinite(v) for v in figures.values())
    assert set(summary["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert summary["max_state_bytes"] > 0


def test_json_summary_for_another_report(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    root = tmp_path / "nab"
    series = corpus.series["realKnownCause/fake.csv"]
    (root / "data" / "realKnownCause").mkdir(parents=True)
    rows = "".join(f"{t},{v!r}\n" for t, v in zip(series.timestamps, series.values, strict=True))
    (root / "data" / "realKnownCause" / "fake.csv").write_text("timestamp,value\n" + rows)
    (root / "labels").mkdir()
    window = [series.timestamps[440] + ".000000", series.timestamps[480] + ".000000"]
    (root / "labels" / "combined_windows.json").write_text(
        json.dumps({"realKnownCause/fake.csv": [window]})
    )
    out = tmp_path / "report" / "nab-context.json"
    argv = ["--detector", "context", "--data", str(root), "--out", str(tmp_path / "res")]
    assert nab_run.main([*argv, "--workers", "1", "--no-closed-loop", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary == json.loads((tmp_path / "res" / "context" / "summary.json").read_text())
    assert summary["detector"] == "context" and summary["rows"] == 600
    assert "runs" not in summary
    assert summary["profiles"]["standard"]["tp"] == 1
    assert summary["as_flagged"]["standard"] == pytest.approx(
        summary["at_configured_threshold"]["standard"]
    )


def test_a_bad_parameter_is_an_error_not_a_hung_pool() -> None:
    # make_monitor exits (the CLI's error); in a pool worker that would kill the
    # worker and leave pool.map waiting forever, so run_file raises instead.
    with pytest.raises(ValueError, match=r"detector\.params\.threshold: must be"):
        nab_run.run_file(("realKnownCause/fake.csv", [1.0], "zscore", {"threshold": 4.3e9}, None))


def test_a_swept_threshold_the_agent_rejects_skips_the_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The z-score sweeps to 4.3e9 on NAB, above the agent's bound of 1e6.
    real = nab_run.score_runs

    def swept_too_high(
        corpus: nab_corpus.Corpus, runs: dict[str, nab_run.FileRun]
    ) -> dict[str, dict[str, object]]:
        out = real(corpus, runs)
        out["standard"]["threshold"] = 4.3e9
        return out

    monkeypatch.setattr(nab_run, "score_runs", swept_too_high)
    summary = nab_run.evaluate(_fake_corpus(tmp_path), "zscore", {}, workers=1)
    closed = summary["closed_loop"]
    assert closed["scores"] is None and closed["threshold"] == 4.3e9
    assert "detector.params.threshold: must be > 0 and <= 1e+06" in closed["skipped"]
