"""The published results of NAB's reference detectors, recomputed by our scorer.

For each reference detector in the corpus's ``results/`` (a folder holding
``<det>_<profile>_scores.csv`` for the three profiles) and each profile, at
the detector's published threshold (``config/thresholds.json``):

* every file whose per-row scores are in ``results/<det>/<category>/<det>_<name>.csv``
  is scored from those rows: its score and its row counts (TP, TN, FP, FN, as
  NAB counts rows) must equal the published per-file row;
* a file without per-row scores enters the total with its published score,
  and is listed as such (:attr:`ProfileCheck.published_only`): only its
  window and probation row counts can be checked;
* the total is normalised and compared with ``results/final_results.json``.

Usage (from the repository root)::

    python -m benchmarks.nab.reference            # every reference detector, every profile
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # `python benchmarks/nab/reference.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.nab import corpus as nab_corpus
from benchmarks.nab import scorer

__all__ = [
    "FileCheck",
    "ProfileCheck",
    "RowCounts",
    "check",
    "raw_rows_path",
    "reference_detectors",
    "row_counts",
]


@dataclass(frozen=True, slots=True)
class RowCounts:
    """NAB's per-file counts, in rows past probation: detections in / out of windows."""

    tp: int  # detected rows inside windows
    tn: int  # undetected rows outside windows
    fp: int  # detected rows outside windows
    fn: int  # undetected rows inside windows


def row_counts(
    scores: Sequence[float] | npt.NDArray[np.float64], labels: scorer.FileLabels, threshold: float
) -> RowCounts:
    """The row counts of the published per-file tables.

    >>> lab = scorer.FileLabels(n=100, windows=((40, 49),))
    >>> s = [0.0] * 100; s[41] = s[42] = s[90] = 1.0
    >>> row_counts(s, lab, 0.5)   # 15 probationary rows are not counted
    RowCounts(tp=2, tn=74, fp=1, fn=8)
    """
    hit = np.asarray(scores, dtype=np.float64) >= threshold
    inside = np.zeros(labels.n, dtype=bool)
    for left, right in labels.windows:
        inside[left : right + 1] = True
    p = scorer.probation_rows(labels.n)
    hit, inside = hit[p:], inside[p:]
    return RowCounts(
        tp=int((hit & inside).sum()),
        tn=int((~hit & ~inside).sum()),
        fp=int((hit & ~inside).sum()),
        fn=int((~hit & inside).sum()),
    )


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One file: the published row, and (when its per-row scores exist) ours."""

    key: str
    published: dict[str, float]
    score: scorer.FileScore | None = None
    counts: RowCounts | None = None


@dataclass(frozen=True, slots=True)
class ProfileCheck:
    detector: str
    profile: scorer.Profile
    threshold: float
    files: dict[str, FileCheck] = field(default_factory=dict)
    #: ``Σ S_file``: ours where the rows exist, the published score elsewhere.
    total: float = 0.0
    n_windows: int = 0
    #: ``results/final_results.json`` and ``config/thresholds.json``'s raw total.
    published_score: float = 0.0
    published_total: float = 0.0

    @property
    def from_rows(self) -> list[str]:
        return [k for k, f in self.files.items() if f.score is not None]

    @property
    def published_only(self) -> list[str]:
        return [k for k, f in self.files.items() if f.score is None]

    @property
    def score(self) -> float:
        return scorer.normalise(self.total, self.n_windows, self.profile)

    @property
    def worst_file_error(self) -> float:
        """The largest ``|ours - published|`` per-file score (0 with no rows)."""
        errs = [abs(f.score.score - f.published["score"]) for f in self.files.values() if f.score]
        return max(errs, default=0.0)


def reference_detectors(root: Path | None = None) -> list[str]:
    """The detectors of ``results/`` with a per-file table for every profile."""
    root = root or nab_corpus.default_root()
    return sorted(
        d.name
        for d in (root / "results").iterdir()
        if d.is_dir() and all((d / f"{d.name}_{p}_scores.csv").is_file() for p in scorer.PROFILES)
    )


def raw_rows_path(detector: str, key: str, root: Path | None = None) -> Path:
    """``results/<det>/<category>/<det>_<name>.csv``: the detector's score of every row."""
    cat, name = key.split("/")
    return (root or nab_corpus.default_root()) / "results" / detector / cat / f"{detector}_{name}"


def check(
    corpus: nab_corpus.Corpus, detector: str, profiles: Sequence[str] = tuple(scorer.PROFILES)
) -> dict[str, ProfileCheck]:
    """Recompute ``detector``'s published results per profile (see the module doc).

    Each file's per-row scores are read once for all ``profiles``.
    """
    root = corpus.root
    thresholds = nab_corpus.load_thresholds(root)[detector]
    finals = nab_corpus.load_published_totals(root)[detector]
    raw_totals = nab_corpus.load_published_raw_totals(root)[detector]
    published = {p: nab_corpus.load_published_file_scores(detector, p, root) for p in profiles}
    for p, rows in published.items():
        if set(rows) != set(corpus.series):
            raise ValueError(f"{detector} {p}: the per-file table does not list the corpus's files")
    files: dict[str, dict[str, FileCheck]] = {p: {} for p in profiles}
    for key in sorted(corpus.series):
        path = raw_rows_path(detector, key, root)
        scores: list[float] | None = None
        if path.is_file():
            stamps, scores = nab_corpus.load_scores_csv(path)
            if list(stamps) != list(corpus.series[key].timestamps):
                raise ValueError(f"{path}: timestamps differ from the data file's")
        labels = corpus.series[key].labels
        for p in profiles:
            row = published[p][key]
            if scores is None:
                files[p][key] = FileCheck(key, row)
                continue
            mine = scorer.score_file(scores, labels, scorer.PROFILES[p], thresholds[p])
            files[p][key] = FileCheck(key, row, mine, row_counts(scores, labels, thresholds[p]))
    return {
        p: ProfileCheck(
            detector=detector,
            profile=scorer.PROFILES[p],
            threshold=thresholds[p],
            files=files[p],
            total=sum(
                f.score.score if f.score else f.published["score"] for f in files[p].values()
            ),
            n_windows=corpus.n_windows,
            published_score=finals[p],
            published_total=raw_totals[p],
        )
        for p in profiles
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nab-reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="NAB root (default: shared/data/nab)")
    args = ap.parse_args(argv)
    corpus = nab_corpus.corpus_or_exit("nab-reference", args.data)
    failed = False
    print(f"{'detector':<10} {'profile':<20} {'rows':>5} {'ours':>10} {'published':>10} worst file")
    for det in reference_detectors(corpus.root):
        for profile, c in check(corpus, det).items():
            ok = abs(c.score - c.published_score) <= 1e-6 and c.worst_file_error <= 1e-6
            failed |= not ok
            print(
                f"{det:<10} {profile:<20} {len(c.from_rows):>2}/{len(c.files):<2} "
                f"{c.score:10.5f} {c.published_score:10.5f} {c.worst_file_error:.1e}"
                + ("" if ok else "  MISMATCH")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
