"""``zscore``: a trailing-window change-point detector (level shifts caught, drift not)."""

from __future__ import annotations

import pickle
import random

import pytest

from edge_agent.detect import Detector, DetectorSpecError, SensorMonitor
from edge_agent.detectors import zscore
from edge_agent.detectors.zscore import MAX_POINTS, ZScoreModel

STEP = 0.0625  # one DS18B20 12-bit step


def quiet(t_s: int, rng: random.Random, level: float = 4.0) -> float:
    """A quiet probe at 1 Hz: noise of about one step, quantized like a DS18B20."""
    return round((level + rng.gauss(0, 0.03)) / STEP) * STEP


def feed(mon: SensorMonitor, temps: list[float], start_s: int = 0, every_s: float = 1.0) -> list:  # type: ignore[type-arg]
    return [mon.observe(x, int((start_s + i * every_s) * 1000)) for i, x in enumerate(temps)]


@pytest.mark.parametrize("shift", [0.4, -0.5, 1.0])
def test_a_level_shift_of_a_few_tenths_is_flagged_within_seconds(shift: float) -> None:
    rng = random.Random(7)
    mon = SensorMonitor("zscore")
    before = feed(mon, [quiet(t, rng) for t in range(600)])
    assert not any(v.is_anomaly for v in before)  # ten quiet minutes: no false alarm
    after = feed(mon, [quiet(t, rng, 4.0 + shift) for t in range(30)], start_s=600)
    first = next(i for i, v in enumerate(after) if v.is_anomaly)
    assert first <= 3, [v.score for v in after[:5]]


def test_a_slow_drift_is_not_flagged() -> None:
    # 2 °C per hour for three hours (a room warming up): 0.033 °C per window of 60 s.
    rng = random.Random(3)
    mon = SensorMonitor("zscore")
    temps = [quiet(t, rng, 4.0 + 2.0 * t / 3600) for t in range(3 * 3600)]
    assert not any(v.is_anomaly for v in feed(mon, temps))


def test_a_lasting_shift_is_flagged_for_a_window_then_learned() -> None:
    rng = random.Random(5)
    mon = SensorMonitor("zscore", {"window_s": 60.0})
    feed(mon, [quiet(t, rng) for t in range(300)])
    after = feed(mon, [quiet(t, rng, 6.0) for t in range(200)], start_s=300)
    flagged = [i for i, v in enumerate(after) if v.is_anomaly]
    assert flagged[0] == 0 and 55 <= len(flagged) <= 62  # a change point, not a stuck alarm
    assert not any(v.is_anomaly for v in after[70:])


def test_the_window_is_by_time_not_by_count() -> None:
    model = ZScoreModel(window_s=60.0, min_std=STEP)
    for t in range(0, 600, 10):  # a reading every 10 s: six in a window
        model.at(t * 1000)
        model.learn(4.0)
    model.at(600_000)
    assert len(model._values) == 6
    model.at(10_000_000)  # a long gap: nothing left to compare with, the reading is learned
    assert model.score(9.0) == 0.0


def test_memory_is_bounded_at_any_rate() -> None:
    det = Detector("zscore", {"window_s": 900.0})
    for i in range(5000):  # 10 readings a second
        det.observe("p", 4.0 + 0.01 * (i % 3), i * 100)
    model = det.monitors["p"]._model
    assert isinstance(model, ZScoreModel) and len(model._values) == MAX_POINTS
    assert det.state_bytes() < 40_000


def test_a_clock_stepping_back_starts_the_window_again() -> None:
    model = ZScoreModel(window_s=60.0, min_std=STEP)
    for t in range(60):
        model.at(1_000_000 + t * 1000)
        model.learn(4.0)
    model.at(5_000)
    assert model.score(9.0) == 0.0


def test_alpha_of_the_previous_version_is_refused_naming_the_key() -> None:
    with pytest.raises(DetectorSpecError) as err:
        SensorMonitor("zscore", {"alpha": 0.01})
    assert err.value.key == "params.alpha" and "window_s" in err.value.problem


@pytest.mark.parametrize(("key", "value"), [("window_s", 0.5), ("window_s", 1e4), ("min_std", 0)])
def test_bad_window_or_floor_names_the_key(key: str, value: float) -> None:
    with pytest.raises(DetectorSpecError) as err:
        SensorMonitor("zscore", {key: value})
    assert err.value.key == f"params.{key}"


def test_a_state_saved_by_the_previous_zscore_is_discarded_not_crashing() -> None:
    # Pickle stores a class by name and its attributes: the previous model's were
    # river's EW mean and variance and a squared floor.
    old = ZScoreModel.__new__(ZScoreModel)
    old.__dict__.update(_mean=4.0, _var=0.01, _min_var=0.01)
    mon = SensorMonitor("zscore")
    mon._model, mon.seen = old, 500
    old_params = {"threshold": 6.0, "warmup": 30, "alpha": 0.01, "min_std": 0.1}
    data = pickle.dumps(
        {"name": "zscore", "params": old_params, "profile": "generic", "monitors": {"p": mon}}
    )
    det = Detector.loads(data, "zscore", {})
    assert det.monitors == {} and det.discarded == "made with other parameters"
    assert det.observe("p", 4.0, 0).warm is False  # learning again, no crash
    assert zscore.DEFAULTS["window_s"] == 60.0


def test_a_state_of_another_detector_says_why_it_is_discarded() -> None:
    det = Detector("context", {})
    det.observe("p", 4.0)
    again = Detector.loads(det.dumps(), "zscore", {})
    assert again.monitors == {} and again.discarded == "made by context/generic"
