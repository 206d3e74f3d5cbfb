"""The NAB runner: every detector through the agent's own monitor, NAB's file layout,
and the score of the shipped ``context`` configuration on the corpus.

The detector itself is tested with the agent
(``tests/unit/test_edge_context_detector.py``).
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from benchmarks.nab import corpus as nab_corpus
from benchmarks.nab import run as nab_run
from benchmarks.nab.scorer import FileLabels
from edge_agent.detect import SensorMonitor
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
