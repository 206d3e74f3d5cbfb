"""The NAB scorer: hand-made cases of each formula, and the published Numenta numbers.

The corpus is read from ``shared/data/nab`` beside the checkout (or
``$THERMOWATCH_NAB_DATA``); when it is absent the corpus tests are skipped,
and fail under ``CI=true`` (:func:`benchmarks.nab.corpus.require_corpus`).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from benchmarks.nab import corpus, reference, scorer
from benchmarks.nab.scorer import PROFILES, FileLabels, Profile

STD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP_rate"]
LOW_FN = PROFILES["reward_low_FN_rate"]


# --- the formulas, by hand -------------------------------------------------


def test_sigmoid_values() -> None:
    assert scorer.sig(0.0) == 0.0
    assert scorer.sig(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scorer.sig(1.0) == pytest.approx(2 / (1 + math.exp(5)) - 1)
    assert scorer.sig(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)
    assert scorer.sig(3.0000001) == -1.0
    assert scorer.sig(0.5) < 0 < scorer.sig(-0.5)


def test_probation_is_15_percent_capped_at_750() -> None:
    assert scorer.probation_rows(1000) == 150
    assert scorer.probation_rows(1127) == 169  # floor, not round
    assert scorer.probation_rows(5000) == 750
    assert scorer.probation_rows(100_000) == 750


def _one(i: int, labels: FileLabels, profile: Profile = STD) -> float:
    s = [0.0] * labels.n
    s[i] = 1.0
    return scorer.score_file(s, labels, profile, 0.5).score


# A 10-row window at rows 400..409 of a 1000-row file (probation: 150 rows).
LAB = FileLabels(1000, ((400, 409),))


def test_window_reward_is_one_at_left_edge_and_small_at_right_edge() -> None:
    assert _one(400, LAB) == pytest.approx(1.0)
    right = scorer.sig(-1 / 10) / scorer.sig(-1.0)
    assert _one(409, LAB) == pytest.approx(right)
    assert right == pytest.approx(0.248242, abs=1e-6)
    middle = scorer.sig(-5 / 10) / scorer.sig(-1.0)  # row 405: R - i + 1 = 5
    assert _one(405, LAB) == pytest.approx(middle)
    # A_TP scales it; A_FN does not touch a caught window.
    assert _one(405, LAB, LOW_FN) == pytest.approx(middle)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    s = [0.0] * 1000
    s[403] = s[401] = s[408] = 0.9
    r = scorer.score_file(s, LAB, STD, 0.5)
    assert r.score == pytest.approx(scorer.sig(-9 / 10) / scorer.sig(-1.0))
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)


def test_missed_window_costs_a_fn() -> None:
    s = [0.0] * 1000
    assert scorer.score_file(s, LAB, STD, 0.5).score == -1.0
    assert scorer.score_file(s, LAB, LOW_FN, 0.5).score == -2.0


def test_false_positive_before_any_window_costs_a_fp() -> None:
    assert _one(300, LAB) == pytest.approx(-0.11 - 1.0)
    assert _one(300, LAB, LOW_FP) == pytest.approx(-0.22 - 1.0)


def test_false_positive_after_a_window_is_softened_by_distance() -> None:
    # Just after the window: A_FP * sig((i - R) / (w - 1)), nearly free.
    just_after = 0.11 * scorer.sig(1 / 9)
    assert _one(410, LAB) == pytest.approx(just_after - 1.0)
    assert -0.11 < just_after < 0
    # Three widths later it is a full -A_FP.
    assert _one(409 + 28, LAB) == pytest.approx(-0.11 - 1.0)
    assert _one(409 + 9, LAB) == pytest.approx(0.11 * scorer.sig(1.0) - 1.0)


def test_every_false_positive_counts_no_debouncing() -> None:
    s = [0.0] * 1000
    s[200:205] = [1.0] * 5
    r = scorer.score_file(s, LAB, STD, 0.5)
    assert r.fp == 5
    assert r.score == pytest.approx(-1.0 - 5 * 0.11)


def test_probationary_rows_are_never_scored() -> None:
    assert _one(149, LAB) == -1.0  # a detection in probation: neither FP nor TP
    assert _one(150, LAB) == pytest.approx(-1.11)
    early = FileLabels(1000, ((100, 200),))  # a window straddling the probation end
    assert _one(150, early) == pytest.approx(scorer.sig(-51 / 101) / scorer.sig(-1.0))
    assert _one(120, early) == -1.0


def test_threshold_is_inclusive() -> None:
    s = [0.0] * 1000
    s[400] = 0.5
    assert scorer.score_file(s, LAB, STD, 0.5).score == pytest.approx(1.0)
    assert scorer.score_file(s, LAB, STD, 0.5000001).score == -1.0


def test_normalise_null_and_perfect() -> None:
    assert scorer.normalise(-116, 116, STD) == 0.0
    assert scorer.normalise(116, 116, STD) == 100.0
    assert scorer.normalise(-232, 116, LOW_FN) == 0.0
    assert scorer.normalise(0, 6, STD) == 50.0
    assert scorer.normalise(0, 6, LOW_FN) == pytest.approx(100 * 12 / 18)


def test_windows_to_rows_rejects_unknown_and_ambiguous_limits() -> None:
    ts = ["2014-01-01 00:00:00", "2014-01-01 00:05:00", "2014-01-01 00:05:00"]
    assert scorer.windows_to_rows(ts, [(ts[0] + ".000000", ts[0])]) == ((0, 0),)
    with pytest.raises(ValueError):
        scorer.windows_to_rows(ts, [(ts[0], "2014-01-02 00:00:00")])
    with pytest.raises(ValueError):
        scorer.windows_to_rows(ts, [(ts[0], ts[1])])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_sweep_matches_brute_force(seed: int, profile: Profile) -> None:
    rng = random.Random(seed)
    files: dict[str, tuple[list[float], FileLabels]] = {}
    for f in range(3):
        n = rng.randint(200, 400)
        wins: list[tuple[int, int]] = []
        start = rng.randint(0, 60)
        while start < n - 10:
            width = rng.randint(2, 30)
            wins.append((start, min(start + width - 1, n - 1)))
            start = wins[-1][1] + rng.randint(1, 120)
        # Coarse scores make many ties, which the sweep must group.
        scores = [
            rng.choice([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]) * rng.random() ** 3
            for _ in range(n)
        ]
        scores = [round(x, 2) for x in scores]
        files[f"f{f}"] = (scores, FileLabels(n, tuple(wins)))
    got = scorer.sweep(files, profile)
    candidates = sorted({x for s, _ in files.values() for x in s}, reverse=True)
    brute = [
        (sum(scorer.score_file(s, lab, profile, th).score for s, lab in files.values()), th)
        for th in candidates
    ]
    best_total = max(t for t, _ in brute)
    base = sum(-profile.a_fn * len(lab.windows) for _, lab in files.values())
    assert got.total == pytest.approx(max(best_total, base))
    recheck = sum(
        scorer.score_file(s, lab, profile, got.threshold).score for s, lab in files.values()
    )
    assert recheck == pytest.approx(got.total)


# --- the real corpus --------------------------------------------------------


@pytest.fixture(scope="module")
def nab() -> corpus.Corpus:
    return corpus.load_corpus(corpus.require_corpus())


def test_corpus_shape(nab: corpus.Corpus) -> None:
    assert len(nab.series) == 58
    assert nab.n_windows == 116
    assert sum(s.labels.n for s in nab.series.values()) == 365_558


def test_null_scores_zero_and_perfect_scores_hundred(nab: corpus.Corpus) -> None:
    for profile in PROFILES.values():
        null = {k: (np.zeros(s.labels.n), s.labels) for k, s in nab.series.items()}
        r = scorer.sweep(null, profile)
        assert scorer.normalise(r.total, nab.n_windows, profile) == 0.0
        perfect = {}
        for k, s in nab.series.items():
            a = np.zeros(s.labels.n)
            for left, _ in s.labels.windows:
                a[left] = 1.0
            perfect[k] = (a, s.labels)
        r = scorer.sweep(perfect, profile)
        assert r.threshold == 1.0
        assert scorer.normalise(r.total, nab.n_windows, profile) == pytest.approx(100.0, abs=1e-9)


def _numenta_rows(key: str) -> list[float]:
    return corpus.load_scores_csv(reference.raw_rows_path("numenta", key))[1]


def test_worked_check_machine_temperature(nab: corpus.Corpus) -> None:
    key = corpus.TEMPERATURE_FILES[1]
    scores = _numenta_rows(key)
    theta = 0.5421876907348634
    lab = nab.series[key].labels
    r = scorer.score_file(scores, lab, STD, theta)
    assert r.score == pytest.approx(1.36013, abs=1e-5)
    assert (r.tp, r.fp, r.fn) == (3, 5, 1)
    offsets = []
    for left, right in lab.windows:
        hits = [i - left for i in range(left, right + 1) if scores[i] >= theta]
        offsets.append(hits[0] if hits else None)
    assert offsets == [21, 266, 162, None]


@pytest.fixture(scope="module")
def checks(nab: corpus.Corpus) -> dict[str, dict[str, reference.ProfileCheck]]:
    """Every reference detector of ``results/``, every profile, recomputed."""
    return {det: reference.check(nab, det) for det in reference.reference_detectors(nab.root)}


def test_reproduces_the_published_results_from_every_raw_row(
    checks: dict[str, dict[str, reference.ProfileCheck]],
) -> None:
    """Every file with per-row scores, every profile, every reference detector.

    Each such file's score must equal its published per-file score, and its
    TP / TN / FP / FN row counts the published ones; the corpus total
    (normalised) the published one to 1e-6, e.g. Numenta HTM's 70.10 / 63.12
    / 74.32. A file without per-row scores in ``results/`` enters the total
    with its published score (``test_every_file_is_scored_from_its_raw_rows``
    says how many do).
    """
    assert "numenta" in checks
    for det, by_profile in checks.items():
        for profile, c in by_profile.items():
            where = f"{det} {profile}"
            assert len(c.from_rows) >= (2 if det == "numenta" else 1), where
            for key in c.from_rows:
                f = c.files[key]
                assert f.score is not None and f.counts is not None
                assert f.score.score == pytest.approx(f.published["score"], abs=1e-9), (where, key)
                counts = (f.counts.tp, f.counts.tn, f.counts.fp, f.counts.fn)
                want = tuple(int(f.published[k]) for k in ("tp", "tn", "fp", "fn"))
                assert counts == want, (where, key)
            assert c.score == pytest.approx(c.published_score, abs=1e-6), where
            assert c.total == pytest.approx(c.published_total, abs=1e-6), where
    numenta = {p: round(c.score, 2) for p, c in checks["numenta"].items()}
    assert numenta == {"standard": 70.10, "reward_low_FP_rate": 63.12, "reward_low_FN_rate": 74.32}
    # The temperature files from their rows: the reference table's -0.7586 and 1.3601.
    std = checks["numenta"]["standard"].files
    ambient, machine = (std[k].score for k in corpus.TEMPERATURE_FILES)
    assert ambient is not None and ambient.score == pytest.approx(-0.7586, abs=1e-4)
    assert machine is not None and machine.score == pytest.approx(1.3601, abs=1e-4)


def test_every_published_file_has_our_windows_and_probation(
    nab: corpus.Corpus, checks: dict[str, dict[str, reference.ProfileCheck]]
) -> None:
    # For all 58 files, with or without per-row scores: NAB's TP + FN rows are
    # the window rows past probation, TN + FP the other rows past it. This
    # checks our timestamp-to-row mapping of the 116 windows and the probation.
    for det, by_profile in checks.items():
        for profile, c in by_profile.items():
            assert set(c.files) == set(nab.series)
            for key, f in c.files.items():
                labels = nab.series[key].labels
                p = scorer.probation_rows(labels.n)
                in_windows = sum(max(0, r - max(left, p) + 1) for left, r in labels.windows)
                pub = f.published
                assert pub["total"] == labels.n, (det, profile, key)
                assert pub["tp"] + pub["fn"] == in_windows, (det, profile, key)
                assert pub["tn"] + pub["fp"] == labels.n - p - in_windows, (det, profile, key)


@pytest.mark.xfail(
    strict=False,
    reason="the corpus's results/ holds Numenta's per-row scores for 2 of the 58 files "
    "(the temperature files); the other 56 enter the totals with their published scores",
)
def test_every_file_is_scored_from_its_raw_rows(
    checks: dict[str, dict[str, reference.ProfileCheck]],
) -> None:
    # Passes (reported as XPASS) once results/numenta/ holds every file's rows;
    # not strict, so a corpus that ships them all does not fail the run: the
    # test above already checks every file whose rows are present. Then drop
    # the mark and the caveat in docs/benchmarks.md.
    assert all(not c.published_only for by_p in checks.values() for c in by_p.values())
