"""NAB v1.1 scoring, written from ``shared/docs/nab-scoring.md`` (pure, numpy only).

The value of a detection depends on where it falls:

* inside window ``k = [L, R]`` (width ``w``) only the *earliest* detection
  counts, worth ``A_TP * sig(-(R - i + 1) / w) / sig(-1)``: 1.0 on the left
  edge, about 0 on the right edge, so early detection pays;
* outside every window each detection is a false positive worth ``-A_FP``,
  softened just after a window: ``A_FP * sig((i - R') / (w' - 1))``;
* a window with no detection costs ``-A_FN``;
* the first ``P = min(floor(0.15 n), 750)`` rows are never scored.

One threshold serves the whole corpus (:func:`sweep`), and the total is
normalised so that the null detector scores 0 and a perfect one 100
(:func:`normalise`).

>>> prof = Profile("standard", a_tp=1.0, a_fp=0.11, a_fn=1.0)
>>> f = FileLabels(n=100, windows=((40, 49),))
>>> scores = [0.0] * 100
>>> score_file(scores, f, prof, 0.5).score   # nothing fires: one missed window
-1.0
>>> scores[40] = 0.9; scores[30] = 0.8       # on the left edge, and one false alarm
>>> r = score_file(scores, f, prof, 0.5)
>>> round(r.score, 6), r.tp, r.fp, r.fn
(0.89, 1, 1, 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PROFILES",
    "FileLabels",
    "FileScore",
    "Profile",
    "SweepResult",
    "detection_values",
    "normalise",
    "probation_rows",
    "score_file",
    "sig",
    "sweep",
    "windows_to_rows",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Profile:
    """Weights of one NAB profile (``config/profiles.json``)."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


#: The three published profiles (the same numbers as ``config/profiles.json``).
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


@dataclass(frozen=True, slots=True)
class FileLabels:
    """One file's length and its windows as inclusive row ranges, in time order."""

    n: int
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class FileScore:
    """A file's raw score at one threshold, with its detection counts."""

    score: float
    tp: int  # windows with at least one detection
    fp: int  # detections outside every window
    fn: int  # windows with none


@dataclass(frozen=True, slots=True)
class SweepResult:
    """The corpus-wide best threshold and the raw total it gives."""

    threshold: float
    total: float


def sig(y: float) -> float:
    """The scaled sigmoid: +1 far left, 0 at 0, -1 beyond 3.

    >>> sig(0.0), sig(3.5)
    (0.0, -1.0)
    >>> round(sig(-1.0), 6)
    0.986614
    """
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n: int) -> int:
    """Rows at the start of a file that are never scored.

    >>> probation_rows(4032), probation_rows(22695)
    (604, 750)
    """
    return min(math.floor(0.15 * n), 750)


def windows_to_rows(
    timestamps: Sequence[str], windows: Iterable[tuple[str, str]]
) -> tuple[tuple[int, int], ...]:
    """Window limits (``YYYY-MM-DD HH:MM:SS[.ffffff]``) as row indices, by exact match.

    A limit that matches no row, or more than one, is an error: guessing would
    move a window silently.

    >>> windows_to_rows(["a 1", "a 2", "a 3"], [("a 2.000000", "a 3.000000")])
    ((1, 2),)
    """
    index: dict[str, int] = {}
    dup: set[str] = set()
    for i, ts in enumerate(timestamps):
        if ts in index:
            dup.add(ts)
        index[ts] = i
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        pair: list[int] = []
        for limit in (start, end):
            key = limit.removesuffix(".000000")
            if key not in index or key in dup:
                what = "several rows" if key in dup else "no row"
                raise ValueError(f"window limit {limit!r} matches {what}")
            pair.append(index[key])
        if pair[1] < pair[0]:
            raise ValueError(f"window {start!r}..{end!r} ends before it starts")
        rows.append((pair[0], pair[1]))
    rows.sort()
    return tuple(rows)


def detection_values(
    labels: FileLabels, profile: Profile
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """What a detection at each row is worth, and the window each row lies in (-1: none).

    Probationary rows are worth 0 and lie in no window: they are never scored.

    >>> v, k = detection_values(FileLabels(20, ((5, 9),)), PROFILES["standard"])
    >>> float(v[5]), int(k[5]), int(k[10])
    (1.0, 0, -1)
    >>> round(float(v[4]), 2), round(float(v[19]), 2)   # before the window; long after it
    (-0.11, -0.11)
    """
    n = labels.n
    values = np.full(n, -profile.a_fp, dtype=np.float64)
    window_of = np.full(n, -1, dtype=np.int64)
    sig_1 = sig(-1.0)
    for k, (left, right) in enumerate(labels.windows):
        width = right - left + 1
        for i in range(left, right + 1):
            values[i] = profile.a_tp * sig(-(right - i + 1) / width) / sig_1
        window_of[left : right + 1] = k
        nxt = labels.windows[k + 1][0] if k + 1 < len(labels.windows) else n
        span = max(width - 1, 1)  # a one-row window would divide by zero
        for i in range(right + 1, nxt):
            values[i] = profile.a_fp * sig((i - right) / span)
    p = probation_rows(n)
    values[:p] = 0.0
    window_of[:p] = -1
    return values, window_of


def _checked(scores: Sequence[float] | FloatArray, labels: FileLabels) -> FloatArray:
    a = np.asarray(scores, dtype=np.float64)
    if a.shape != (labels.n,):
        raise ValueError(f"expected {labels.n} scores, got {a.shape}")
    if np.isnan(a).any():
        raise ValueError("scores contain NaN")
    return a


def score_file(
    scores: Sequence[float] | FloatArray, labels: FileLabels, profile: Profile, threshold: float
) -> FileScore:
    """The file's raw NAB score: detections are rows ``i >= P`` with ``score >= threshold``."""
    a = _checked(scores, labels)
    values, window_of = detection_values(labels, profile)
    hit = a >= threshold
    hit[: probation_rows(labels.n)] = False
    outside = hit & (window_of < 0)
    total = float(values[outside].sum())
    tp = fn = 0
    for k, (left, right) in enumerate(labels.windows):
        rows = np.flatnonzero(hit[left : right + 1] & (window_of[left : right + 1] == k))
        if rows.size:
            total += float(values[left + rows[0]])
            tp += 1
        else:
            total -= profile.a_fn
            fn += 1
    return FileScore(total, tp, int(outside.sum()), fn)


def sweep(
    files: Mapping[str, tuple[Sequence[float] | FloatArray, FileLabels]], profile: Profile
) -> SweepResult:
    """The single threshold that maximises the corpus total, NAB's way.

    All scored rows of all files are taken in decreasing score; after each
    distinct score value the total is evaluated with that value as threshold.
    Ties between totals go to the highest threshold (fewest detections). With
    no row worth detecting, the threshold is just above the highest score.

    >>> lab = FileLabels(n=100, windows=((40, 49),))
    >>> s = [0.1] * 100; s[42] = 0.7; s[90] = 0.9
    >>> r = sweep({"f": (s, lab)}, PROFILES["standard"])
    >>> r.threshold, round(r.total, 4)
    (0.7, 0.8671)
    """
    all_scores: list[FloatArray] = []
    all_values: list[FloatArray] = []
    all_windows: list[npt.NDArray[np.int64]] = []
    n_windows = 0
    for scores, labels in files.values():
        a = _checked(scores, labels)
        values, window_of = detection_values(labels, profile)
        p = probation_rows(labels.n)
        all_scores.append(a[p:])
        all_values.append(values[p:])
        w = window_of[p:]
        all_windows.append(np.where(w >= 0, w + n_windows, -1))
        n_windows += len(labels.windows)
    score = np.concatenate(all_scores) if all_scores else np.zeros(0)
    value = np.concatenate(all_values) if all_values else np.zeros(0)
    window = np.concatenate(all_windows) if all_windows else np.zeros(0, dtype=np.int64)
    base = -profile.a_fn * n_windows
    if score.size == 0:
        return SweepResult(math.inf, base)
    order = np.argsort(-score, kind="stable")
    s, v, w = score[order], value[order], window[order]
    delta = np.where(w < 0, v, 0.0)
    # Inside a window only the best (= earliest) detection so far counts: the
    # gain of a row is how much it raises its window's running maximum, which
    # starts at -A_FN. A segmented running max: group rows by window (keeping
    # the score order within each), offset every window by a constant larger
    # than any value range, and take one global running maximum.
    inside = np.flatnonzero(w >= 0)
    if inside.size:
        by_window = inside[np.lexsort((inside, w[inside]))]
        wid = w[by_window]
        spread = 10.0 * (profile.a_tp + profile.a_fn + 1.0)
        shifted = v[by_window] + wid * spread
        starts = np.r_[True, wid[1:] != wid[:-1]]
        floor = wid * spread - profile.a_fn  # each window starts at -A_FN
        running = np.maximum(np.maximum.accumulate(shifted), floor)
        prev = np.where(starts, floor, np.r_[floor[:1], running[:-1]])
        delta[by_window] = running - prev
    totals = base + np.cumsum(delta)
    last_of_value = np.r_[s[1:] != s[:-1], True]  # the end of each group of equal scores
    candidates = np.flatnonzero(last_of_value)
    best = candidates[int(np.argmax(totals[candidates]))]
    if totals[best] <= base:
        return SweepResult(float(np.nextafter(s[0], math.inf)), base)
    return SweepResult(float(s[best]), float(totals[best]))


def normalise(total: float, n_windows: int, profile: Profile) -> float:
    """The NAB score: 0 for the null detector, 100 for a perfect one.

    >>> normalise(-116.0, 116, PROFILES["standard"]), normalise(116.0, 116, PROFILES["standard"])
    (0.0, 100.0)
    """
    perfect = profile.a_tp * n_windows
    null = -profile.a_fn * n_windows
    return 100.0 * (total - null) / (perfect - null)
