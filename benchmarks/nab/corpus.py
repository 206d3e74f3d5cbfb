"""Reading the NAB corpus from disk: data files, windows, profiles, published results.

The corpus lives outside the repository, in ``shared/data/nab`` beside the
checkout (or beside a folder above it: CI clones the repository into a folder
of its own with ``shared/`` copied beside it); ``THERMOWATCH_NAB_DATA`` or an
explicit path overrides that. No package registry serves it, so ``make deps``
cannot install it: the tests that need it call :func:`require_corpus`, which
skips them on a developer's machine and fails them under ``CI=true``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.nab.scorer import FileLabels, Profile, windows_to_rows

__all__ = [
    "CORPUS_ENV",
    "REQUIRED_FILES",
    "TEMPERATURE_FILES",
    "Corpus",
    "Series",
    "corpus_or_exit",
    "corpus_problem",
    "default_root",
    "load_corpus",
    "load_profiles",
    "load_published_file_scores",
    "load_published_raw_totals",
    "load_published_totals",
    "load_scores_csv",
    "load_thresholds",
    "require_corpus",
]

#: The two real temperature sensors of the corpus.
TEMPERATURE_FILES = (
    "realKnownCause/ambient_temperature_system_failure.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
)


#: The environment variable naming the corpus root (the folder holding ``data/``, ``labels/``...).
CORPUS_ENV = "THERMOWATCH_NAB_DATA"

#: What the scorer's and runner's tests read besides ``data/``.
REQUIRED_FILES = (
    "labels/combined_windows.json",
    "config/profiles.json",
    "config/thresholds.json",
    "results/final_results.json",
)

_CHECKOUT = Path(__file__).resolve().parents[2]


def candidate_roots() -> list[Path]:
    """Where the corpus is looked for: ``$THERMOWATCH_NAB_DATA`` alone when it is set,
    else ``shared/data/nab`` beside the checkout, then beside each folder above it.
    """
    env = os.environ.get(CORPUS_ENV)
    if env:
        return [Path(env)]
    return [folder / "shared" / "data" / "nab" for folder in _CHECKOUT.parents]


def _missing(root: Path, files: Sequence[str] = REQUIRED_FILES) -> list[str]:
    missing = [f for f in files if not (root / f).is_file()]
    if not (root / "data").is_dir():
        missing.insert(0, "data/")
    return missing


def default_root() -> Path:
    """The first complete candidate of :func:`candidate_roots`, else the first one."""
    roots = candidate_roots()
    return next((r for r in roots if not _missing(r)), roots[0])


def corpus_problem(root: Path | None = None, files: Sequence[str] = REQUIRED_FILES) -> str | None:
    """None when ``data/`` and ``files`` are at ``root`` (default: :func:`default_root`),
    else what is missing and every place looked.

    >>> corpus_problem(Path("/nonexistent/nab"))
    'NAB corpus not found: /nonexistent/nab lacks data/, labels/combined_windows.json, \
config/profiles.json, config/thresholds.json, results/final_results.json'
    """
    roots = [root] if root is not None else candidate_roots()
    if not _missing(roots[0] if root is not None else default_root(), files):
        return None
    where = "; ".join(f"{r} lacks {', '.join(_missing(r, files))}" for r in roots)
    return f"NAB corpus not found: {where}"


#: How to point the tests and the commands at the corpus.
HOW_TO_POINT = (
    f"put the NAB corpus at shared/data/nab beside the checkout, or set {CORPUS_ENV} "
    "to the folder holding its data/, labels/, config/ and results/"
)


def require_corpus(root: Path | None = None) -> Path:
    """For a test: the corpus root; a skip when it is missing, a failure under ``CI=true``.

    The message names every place looked and how to point the tests at the
    corpus (``testsupport.prerequisites.require``).
    """
    from testsupport.prerequisites import require  # pytest: only tests call this

    problem = corpus_problem(root)
    require(problem is None, problem or "", HOW_TO_POINT)
    return root if root is not None else default_root()


def corpus_or_exit(
    prog: str, root: Path | None = None, files: Sequence[str] = REQUIRED_FILES
) -> Corpus:
    """For a command: the corpus, or ``prog: error: <what is missing> (<how to point at it>)``."""
    problem = corpus_problem(root, files)
    if problem is not None:
        raise SystemExit(f"{prog}: error: {problem} ({HOW_TO_POINT}, or pass --data DIR)")
    return load_corpus(root)


@dataclass(frozen=True, slots=True)
class Series:
    """One data file: its key (``category/name.csv``), rows and labels."""

    key: str
    timestamps: tuple[str, ...]
    values: tuple[float, ...]
    labels: FileLabels


@dataclass(frozen=True, slots=True)
class Corpus:
    root: Path
    series: dict[str, Series]

    @property
    def n_windows(self) -> int:
        return sum(len(s.labels.windows) for s in self.series.values())


def _read_rows(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        stamp, value = header.index("timestamp"), header.index("value")
        ts: list[str] = []
        vs: list[str] = []
        for row in reader:
            ts.append(row[stamp])
            vs.append(row[value])
    return ts, vs


def load_corpus(root: Path | None = None, keys: list[str] | None = None) -> Corpus:
    """Every file named in ``labels/combined_windows.json`` (or just ``keys``)."""
    root = root or default_root()
    windows: dict[str, list[list[str]]] = json.loads(
        (root / "labels" / "combined_windows.json").read_text()
    )
    series: dict[str, Series] = {}
    for key in sorted(keys if keys is not None else windows):
        ts, vs = _read_rows(root / "data" / key)
        rows = windows_to_rows(ts, [(w[0], w[1]) for w in windows[key]])
        values = tuple(float(v) for v in vs)
        series[key] = Series(key, tuple(ts), values, FileLabels(len(ts), rows))
    return Corpus(root, series)


def load_profiles(root: Path | None = None) -> dict[str, Profile]:
    """The profiles of ``config/profiles.json``."""
    root = root or default_root()
    raw = json.loads((root / "config" / "profiles.json").read_text())
    out: dict[str, Profile] = {}
    for name, body in raw.items():
        cm = body["CostMatrix"]
        out[name] = Profile(
            name, float(cm["tpWeight"]), float(cm["fpWeight"]), float(cm["fnWeight"])
        )
    return out


def _thresholds_field(root: Path | None, field: str) -> dict[str, dict[str, float]]:
    raw = json.loads(((root or default_root()) / "config" / "thresholds.json").read_text())
    return {
        det: {prof: float(v[field]) for prof, v in profiles.items()}
        for det, profiles in raw.items()
    }


def load_thresholds(root: Path | None = None) -> dict[str, dict[str, float]]:
    """``detector -> profile -> threshold`` from ``config/thresholds.json``."""
    return _thresholds_field(root, "threshold")


def load_published_raw_totals(root: Path | None = None) -> dict[str, dict[str, float]]:
    """``detector -> profile -> raw total`` (``Σ S_file``) from ``config/thresholds.json``."""
    return _thresholds_field(root, "score")


def load_published_totals(root: Path | None = None) -> dict[str, dict[str, float]]:
    """``detector -> profile -> normalised score`` from ``results/final_results.json``."""
    root = root or default_root()
    raw = json.loads((root / "results" / "final_results.json").read_text())
    return {det: {k: float(v) for k, v in profiles.items()} for det, profiles in raw.items()}


def load_published_file_scores(
    detector: str, profile: str, root: Path | None = None
) -> dict[str, dict[str, float]]:
    """Per-file rows of ``results/<det>/<det>_<profile>_scores.csv``: threshold, score,
    and the row counts tp, tn, fp, fn and total (rows of the file)."""
    root = root or default_root()
    path = root / "results" / detector / f"{detector}_{profile}_scores.csv"
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["File"] and row["File"].endswith(".csv"):
                out[row["File"]] = {
                    "threshold": float(row["Threshold"]),
                    "score": float(row["Score"]),
                    "tp": float(row["TP"]),
                    "tn": float(row["TN"]),
                    "fp": float(row["FP"]),
                    "fn": float(row["FN"]),
                    "total": float(row["Total_Count"]),
                }
    return out


def load_scores_csv(path: Path) -> tuple[list[str], list[float]]:
    """Timestamps and ``anomaly_score`` column of a NAB-layout result file."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)  # not DictReader: a third of the time on 365,558 rows
        header = next(reader)
        stamp, score = header.index("timestamp"), header.index("anomaly_score")
        ts: list[str] = []
        scores: list[float] = []
        for row in reader:
            ts.append(row[stamp])
            scores.append(float(row[score]))
    return ts, scores
