"""The ``context`` detector (edge_agent/detectors/context.py) in the agent's ``SensorMonitor``.

Its score on the NAB corpus, and the NAB runner around it, are tested with the
benchmark (``benchmarks/nab/test_run.py``).
"""

from __future__ import annotations

import math
import pickle
import random

import pytest

from edge_agent.detect import SensorMonitor
from edge_agent.detectors import context


def _noisy(n: int, seed: int = 1, level: float = 20.0) -> list[float]:
    rng = random.Random(seed)
    return [level + math.sin(i / 12.0) + rng.gauss(0.0, 0.2) for i in range(n)]


def _scores(values: list[float], **params: float | int | str) -> list[float]:
    mon = SensorMonitor("context", params)
    return [s if (s := mon.observe(x).score) is not None else 0.0 for x in values]


def test_scores_are_finite_and_in_unit_interval() -> None:
    values = [*_noisy(3000), float("nan"), 1e12, -1e12, 0.0, *_noisy(500, seed=2)]
    scores = _scores(values)
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)


def test_a_level_shift_is_reported_once_then_learned() -> None:
    values = [*_noisy(2000), *_noisy(1500, seed=3, level=35.0)]
    scores = _scores(values)
    threshold = float(context.DEFAULTS["threshold"])
    flagged = [i for i, s in enumerate(scores) if s >= threshold]
    assert 2000 in flagged  # the onset, at once
    # Not an alarm on every reading of the new level: a report or two while it
    # is learned, then as quiet as before the shift (new extremes of the noise
    # are reported now and then: they are the only thing it has not seen).
    assert len([i for i in flagged if 2000 < i <= 2500]) <= 3, flagged
    assert len([i for i in flagged if i > 2500]) <= 3, flagged
    assert len([i for i in flagged if 1000 <= i < 2000]) <= 3, flagged


def test_causal_prefix_scores_do_not_depend_on_the_future() -> None:
    values = [*_noisy(1500), 40.0, *_noisy(500, seed=4)]
    full = _scores(values)
    assert _scores(values[:1200]) == full[:1200]


def test_state_pickles_and_resumes_identically() -> None:
    values = _noisy(2000, seed=5)
    mon = SensorMonitor("context", {})
    for x in values[:1000]:
        mon.observe(x)
    clone = pickle.loads(pickle.dumps(mon))
    for x in values[1000:]:
        assert clone.observe(x) == mon.observe(x)


def test_state_stays_under_one_megabyte() -> None:
    # White noise over a wide range fills the context memory up to its cap.
    rng = random.Random(6)
    model = context.build_model(context.check_params({}))
    for _ in range(20_000):
        x = rng.uniform(0.0, 100.0)
        model.score(x)
        model.learn(x)
    assert len(pickle.dumps(model)) < 1_000_000
    big = context.build_model(context.check_params({"cap": 40_000, "orders": "1,2,3,4,6,8"}))
    for _ in range(20_000):
        x = rng.uniform(0.0, 100.0)
        big.score(x)
        big.learn(x)
    assert len(big._seen) == 40_000  # full
    assert len(pickle.dumps(big)) < 1_000_000
    with pytest.raises(ValueError, match="cap"):
        context.check_params({"cap": 40_000, "orders": "1,2,12"})


def test_params_are_checked() -> None:
    assert context.check_params({"bins": 12})["bins"] == 12
    for bad in (
        {"decay": 1.0},
        {"bins": 1},
        {"orders": "a"},
        {"orders": "0,1"},
        {"nope": 1},
        {"cap": 10**7},
        {"bins": 2.5},
        {"min_excess": -0.1},
        {"context_weight": 0.0},
        {"release": 0},
        {"scale_weights": "1,1"},  # one weight per scale
        {"scale_weights": "1,0,1"},
        {"scale_weights": "1,x,1"},
        {"scales": "1,24"},  # the default weights are for three scales
    ):
        with pytest.raises(ValueError, match=r"detector\.params\."):
            context.check_params(bad)


def _learned(model: context.ContextModel) -> int:
    return sum(model._seen.values())


def test_a_flagged_reading_is_held_then_learned_once_the_alarm_clears() -> None:
    model = context.build_model(context.check_params({"release": 3}))
    for x in _noisy(500):
        model.score(x)
        model.learn(x)
    assert model.score(60.0) == 1.0  # far outside: flagged by the agent
    held = sum(len(c) for _, c in model._pending or [])
    assert held > 0
    model.hold()
    normal = _noisy(3, seed=9)
    for x in normal[:2]:  # two normal readings: the alarm has not cleared yet
        model.score(x)
        model.learn(x)
        assert model._held
    model.score(normal[2])
    before = _learned(model)
    own = sum(len(c) for _, c in model._pending or [])
    model.learn(normal[2])  # the third: released, the held reading is learned too
    assert not model._held
    assert _learned(model) == before + own + held


def test_a_pattern_that_keeps_alarming_is_never_learned() -> None:
    model = context.build_model(context.check_params({"release": 3}))
    for x in _noisy(500):
        model.score(x)
        model.learn(x)
    learned = _learned(model)
    for x in [60.0, 61.0, 62.0] * 30:  # every reading flagged, none learned
        model.score(x)
        model.hold()
    assert _learned(model) == learned
    assert len(model._held) <= 64  # bounded, whatever the alarm's length
    assert len(pickle.dumps(model)) < 1_000_000


def test_the_monitor_holds_flagged_readings() -> None:
    mon = SensorMonitor("context", {"warmup": 50})
    for x in _noisy(600):
        mon.observe(x)
    seen = mon.seen
    assert mon.observe(80.0).is_anomaly
    assert mon.seen == seen  # not learned
    assert len(mon._model._held) == 1


def test_a_tiny_new_record_is_judged_by_its_context() -> None:
    # A bounded noisy stream sets new records by a hair now and then; only a
    # jump by at least min_excess of the range is an out-of-range onset.
    model = context.build_model(context.check_params({"min_excess": 0.05}))
    for i in range(2000):
        x = 10.0 + (i % 10)  # range 10..19, every context known
        model.score(x)
        model.learn(x)
    assert model.score(19.1) < float(context.DEFAULTS["threshold"])  # 1 % beyond
    model.learn(19.1)
    assert model.score(25.0) == 1.0  # 65 % beyond
