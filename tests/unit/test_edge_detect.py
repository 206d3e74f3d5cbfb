"""Detectors: conformance over every implementation, no-learn-on-flag, state round trip."""

from __future__ import annotations

import math
import random
import sys
import types
from pathlib import Path

import pytest

from edge_agent.detect import DETECTORS, Detector, DetectorSpecError, SensorMonitor, evaluate
from edge_agent.detectors.context import ContextModel
from edge_agent.detectors.zscore import ZScoreModel
from edge_agent.pipeline import atomic_write


def series(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [4.0 + 0.5 * math.sin(i / 50) + rng.gauss(0, 0.05) for i in range(n)]


def warmup(name: str, readings: int) -> dict[str, float | int]:
    """Parameters that make ``name`` learn for ``readings`` readings 1 s apart.

    ``thermal`` learns for a time (``learning_h``), the others for a count.
    """
    if name == "thermal":
        return {"learning_h": readings / 3600}
    return {"warmup": readings}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_is_finite_warm_and_picklable(name: str) -> None:
    mon = SensorMonitor(name, warmup(name, 50))
    verdicts = [mon.observe(x) for x in series(400)]
    assert all(v.score is None and not v.warm for v in verdicts[:50])
    scores = [v.score for v in verdicts[50:]]
    assert all(s is not None and math.isfinite(s) and s >= 0 for s in scores)
    det = Detector(name, warmup(name, 50))
    for x in series(100):
        det.observe("p", x)
    again = Detector.loads(det.dumps(), name, warmup(name, 50))
    # The restored model continues exactly where the saved one was.
    assert again.observe("p", 4.2) == det.observe("p", 4.2)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_flags_a_fire(name: str) -> None:
    # ``thermal`` judges by time: an excursion shorter than its slack (2.5 min at the
    # default calibration) is never an anomaly, so its fire lasts 5 min (1 s apart).
    fire = 300 if name == "thermal" else 5
    data = [(x, False) for x in series(600)] + [(60.0, True)] * fire
    m = evaluate(name, warmup(name, 300) if name == "thermal" else {}, data)
    assert m.tp >= 1 and m.fp <= 6  # measurable: precision/recall on labelled data
    assert 0 <= m.precision <= 1 and 0 <= m.recall <= 1


def test_flagged_points_are_not_learned() -> None:
    # (zscore's window is set longer than the test: it re-anchors a window after a shift.)
    mon = SensorMonitor("zscore", {"warmup": 20, "window_s": 900.0})
    for x in series(100):
        mon.observe(x)
    seen = mon.seen
    # A freezer door left open: the model never learns the warm values, so it keeps alarming.
    verdicts = [mon.observe(20.0) for _ in range(200)]
    assert all(v.is_anomaly for v in verdicts)
    assert mon.seen == seen


def test_context_reports_a_lasting_fault_at_its_onset_and_learns_it_after_the_alarm() -> None:
    # An onset detector: the door left open is flagged when it starts; the
    # flagged readings are not learned while flagged (held aside), and the
    # lasting level is left to the agent's high/low threshold alarms.
    mon = SensorMonitor("context", {"warmup": 50})
    for x in series(600):
        mon.observe(x)
    seen = mon.seen
    first = mon.observe(20.0)
    assert first.is_anomaly and mon.seen == seen
    later = [mon.observe(20.0) for _ in range(200)]
    assert sum(v.is_anomaly for v in later) <= 3
    assert mon.seen >= seen + 190  # the new level is learned once the alarm has cleared


def test_restore_ignores_state_of_another_detector(tmp_path: Path) -> None:
    det = Detector("zscore", {"warmup": 5})
    for x in series(20):
        det.observe("p", x)
    path = tmp_path / "detector.pickle"
    atomic_write(path, det.dumps())
    assert Detector.loads(path.read_bytes(), "zscore", {"warmup": 5}).monitors["p"].seen == 20
    assert Detector.loads(path.read_bytes(), "zscore", {"warmup": 6}).monitors == {}
    assert Detector.loads(path.read_bytes(), "context", {}).monitors == {}
    assert not (tmp_path / "detector.pickle.tmp").exists()


@pytest.mark.parametrize(
    ("name", "old_module", "cls"),
    [
        ("context", "edge_agent.detect_nab", ContextModel),
        ("zscore", "edge_agent.detect", ZScoreModel),
    ],
)
def test_state_saved_before_the_models_moved_is_restored(
    monkeypatch: pytest.MonkeyPatch, name: str, old_module: str, cls: type
) -> None:
    """A state file names each model's class by module: the old names still load."""
    det = Detector(name, {"warmup": 5})
    for x in series(50):
        det.observe("p", x)
    # Pickle as the previous release did: the class under its old module name.
    old = sys.modules.get(old_module) or types.ModuleType(old_module)
    monkeypatch.setitem(sys.modules, old_module, old)
    monkeypatch.setattr(old, cls.__name__, cls, raising=False)
    monkeypatch.setattr(cls, "__module__", old_module)
    data = det.dumps()
    monkeypatch.undo()
    assert old_module.encode() in data
    again = Detector.loads(data, name, {"warmup": 5})
    assert again.monitors["p"].seen == det.monitors["p"].seen
    assert again.observe("p", 4.2) == det.observe("p", 4.2)


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("nope", {}, "name"),
        ("zscore", {"threshold": -1.0}, "params.threshold"),
        ("zscore", {"warmup": "ten"}, "params.warmup"),
        ("zscore", {"warmup": True}, "params.warmup"),
        ("context", {"alpha": 0.1}, "params.alpha"),
        ("hst", {}, "name"),
    ],
)
def test_bad_detector_specs_name_the_key(name: str, params: dict, key: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DetectorSpecError) as err:
        SensorMonitor(name, params)
    assert err.value.key == key
