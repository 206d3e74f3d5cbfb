"""Run an edge-agent detector over the NAB corpus and score it the NAB way.

Every file gets its own fresh :class:`edge_agent.detect.SensorMonitor` (the
object the agent keeps per sensor), fed every value in file order, one at a
time: causal, one pass, no labels. The monitor's score of each row (0 during
warm-up) is what NAB thresholds. One corpus-wide threshold is then chosen
per profile by :func:`benchmarks.nab.scorer.sweep`.

The agent does not learn from readings it flags (``context`` learns them
once the alarm has cleared), so its scores may depend on its own
``threshold`` parameter. The sweep assumes they do not; so the run also
reports the score at the configured threshold (no sweep), and the corpus is
run a second time with ``threshold`` set to the standard profile's best
value and scored at that fixed value: the *closed-loop* score is what the
agent would really get with that setting.

Any detector registered in :data:`edge_agent.detect.DETECTORS` runs. When
the monitor's ``observe`` takes a timestamp (a parameter named ``ts_ms``,
``timestamp``, ``*_ms``...), it gets each row's NAB timestamp as epoch
milliseconds (UTC); otherwise it gets the value alone. The rows the monitor
itself flags are scored too (``as_flagged``: what the agent would alarm on,
whatever turns a score into an alarm).

Usage (from the repository root)::

    python -m benchmarks.nab.run                       # the agent's default detector
    python -m benchmarks.nab.run --detector context
    python -m benchmarks.nab.run --detector zscore --param threshold=4 --param window_s=120
    python -m benchmarks.nab.run --detector context --json nab-context.json

Per-row scores land in ``benchmarks/nab/results/<detector>/<category>/<detector>_<name>.csv``
(NAB's layout, columns ``timestamp,value,anomaly_score``), plus ``summary.json``
(also written to ``--json PATH``: the figures another report includes).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/nab/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.nab import corpus as nab_corpus
from benchmarks.nab import scorer

Param = float | int | bool | str

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def make_monitor(name: str, params: Mapping[str, Param]) -> Any:
    """The agent's per-sensor monitor for detector ``name``: ``SensorMonitor(name, params)``.

    Warm-up, scoring, the threshold and the rule of not learning flagged
    readings are therefore the agent's own code, with its configured threshold.
    """
    from edge_agent import detect

    if name in detect.DETECTORS:
        try:
            return detect.SensorMonitor(name, params)
        except ValueError as exc:  # DetectorSpecError: a bad --param
            raise SystemExit(f"nab: error: {exc}") from None
    known = ", ".join(sorted(detect.DETECTORS))
    raise SystemExit(f"nab: error: unknown detector {name!r} (known: {known})")


@dataclass(frozen=True, slots=True)
class FileRun:
    key: str
    scores: list[float]
    cpu_s: float
    state_bytes: int
    #: 1.0 where the monitor flagged the row (its verdict's ``is_anomaly``), else 0.0.
    flags: list[float] | None = None


def timestamps_ms(stamps: Sequence[str]) -> list[int]:
    """NAB's ``YYYY-MM-DD HH:MM:SS`` timestamps (UTC) as epoch milliseconds.

    >>> timestamps_ms(["2014-01-01 00:00:00", "2014-01-01 00:05:00"])
    [1388534400000, 1388534700000]
    """
    return [int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()) * 1000 for s in stamps]


#: Names of an ``observe`` parameter that takes the reading's time (epoch ms).
_TIME_PARAMS = frozenset({"ts", "timestamp", "ts_ms", "t_ms", "at_ms", "now_ms", "time_ms"})


def time_parameter(observe: Callable[..., Any]) -> str | None:
    """The name of ``observe``'s timestamp parameter, or None when it takes none.

    >>> time_parameter(lambda temp_c: None), time_parameter(lambda temp_c, ts_ms=0: None)
    (None, 'ts_ms')
    """
    try:
        params = list(inspect.signature(observe).parameters.values())[1:]
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for p in params:
        if p.kind in named and (p.name in _TIME_PARAMS or p.name.endswith("_ms")):
            return p.name
    return None


def feed(
    mon: Any, values: Sequence[float], stamps: Sequence[str] | None = None
) -> tuple[list[float], list[float], float]:
    """Every value, in order, through ``mon.observe``: its scores (0 while warming
    up), its flags (1.0 / 0.0) and the CPU seconds it took. Each row's time goes
    along when ``observe`` takes one (:func:`time_parameter`) and ``stamps`` is given.
    """
    scores: list[float] = []
    flags: list[float] = []
    observe = mon.observe
    when = time_parameter(observe) if stamps is not None else None
    if when is None:
        start = time.process_time()
        for x in values:
            v = observe(x)
            scores.append(0.0 if v.score is None else v.score)
            flags.append(1.0 if v.is_anomaly else 0.0)
    else:
        assert stamps is not None
        ms = timestamps_ms(stamps)
        start = time.process_time()
        for x, t in zip(values, ms, strict=True):
            v = observe(x, **{when: t})
            scores.append(0.0 if v.score is None else v.score)
            flags.append(1.0 if v.is_anomaly else 0.0)
    return scores, flags, time.process_time() - start


def run_file(
    job: tuple[str, Sequence[float], str, dict[str, Param], Sequence[str] | None],
) -> FileRun:
    """Feed one file's rows to a fresh monitor; the score and flag of every row."""
    import pickle

    key, values, name, params, stamps = job
    try:
        mon = make_monitor(name, params)
    except SystemExit as exc:  # in a pool worker it would kill the worker and hang the pool
        raise ValueError(str(exc)) from None
    scores, flags, cpu = feed(mon, values, stamps)
    return FileRun(key, scores, cpu, len(pickle.dumps(mon)), flags)


def run_corpus(
    corpus: nab_corpus.Corpus, name: str, params: Mapping[str, Param], workers: int
) -> dict[str, FileRun]:
    """Every file through its own monitor, biggest files first, on ``workers`` processes."""
    keys = sorted(corpus.series, key=lambda k: -corpus.series[k].labels.n)
    jobs = [
        (k, corpus.series[k].values, name, dict(params), corpus.series[k].timestamps) for k in keys
    ]
    if workers <= 1:
        runs = [run_file(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            runs = pool.map(run_file, jobs, chunksize=1)
    return {r.key: r for r in runs}


def to_unit(scores: Sequence[float], unbounded: bool) -> list[float]:
    """Scores as NAB wants them, in [0, 1]: ``s / (1 + s)`` for unbounded ones (monotone).

    >>> to_unit([0.0, 1.0, 3.0], unbounded=True)
    [0.0, 0.5, 0.75]
    """
    if not unbounded:
        return [min(max(s, 0.0), 1.0) for s in scores]
    return [s / (1.0 + s) for s in scores]


def write_csvs(
    corpus: nab_corpus.Corpus, runs: Mapping[str, FileRun], name: str, out: Path
) -> bool:
    """NAB-layout result files; returns whether scores were squashed into [0, 1]."""
    unbounded = any(s > 1.0 for r in runs.values() for s in r.scores)
    for key, run in runs.items():
        cat, fname = key.split("/")
        path = out / name / cat / f"{name}_{fname}"
        path.parent.mkdir(parents=True, exist_ok=True)
        series = corpus.series[key]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for ts, v, a in zip(
                series.timestamps, series.values, to_unit(run.scores, unbounded), strict=True
            ):
                w.writerow([ts, repr(v), repr(a)])
    return unbounded


def score_runs(corpus: nab_corpus.Corpus, runs: Mapping[str, FileRun]) -> dict[str, dict[str, Any]]:
    """Per profile: best threshold, normalised score, and the temperature files' raw scores."""
    out: dict[str, dict[str, Any]] = {}
    for prof in scorer.PROFILES.values():
        files = {k: (runs[k].scores, s.labels) for k, s in corpus.series.items()}
        best = scorer.sweep(files, prof)
        per_file = {
            k: scorer.score_file(runs[k].scores, s.labels, prof, best.threshold)
            for k, s in corpus.series.items()
        }
        out[prof.name] = {
            "threshold": best.threshold,
            "score": scorer.normalise(best.total, corpus.n_windows, prof),
            "tp": sum(f.tp for f in per_file.values()),
            "fp": sum(f.fp for f in per_file.values()),
            "fn": sum(f.fn for f in per_file.values()),
            "temperature_raw": {
                k.split("/")[1].removesuffix(".csv"): per_file[k].score
                for k in nab_corpus.TEMPERATURE_FILES
                if k in per_file
            },
        }
    return out


def fixed_threshold_score(
    corpus: nab_corpus.Corpus, runs: Mapping[str, FileRun], threshold: float
) -> dict[str, float]:
    """Normalised scores of every profile at one given threshold (no sweep)."""
    out: dict[str, float] = {}
    for prof in scorer.PROFILES.values():
        total = sum(
            scorer.score_file(runs[k].scores, s.labels, prof, threshold).score
            for k, s in corpus.series.items()
        )
        out[prof.name] = scorer.normalise(total, corpus.n_windows, prof)
    return out


def flagged_score(corpus: nab_corpus.Corpus, runs: Mapping[str, FileRun]) -> dict[str, float]:
    """Normalised scores of every profile when the detections are the rows the monitor flagged."""
    flags = {k: FileRun(k, r.flags or [0.0] * len(r.scores), 0.0, 0) for k, r in runs.items()}
    return fixed_threshold_score(corpus, flags, 0.5)


def parse_param(text: str) -> tuple[str, Param]:
    """``key=value`` with value read as bool, int, float or string.

    >>> parse_param("threshold=4"), parse_param("seed=7.5"), parse_param("x=true")
    (('threshold', 4), ('seed', 7.5), ('x', True))
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    for conv in (int, float):
        try:
            return key, conv(raw)
        except ValueError:
            pass
    return key, raw


def default_detector() -> str:
    from edge_agent.config import DetectorSettings

    return DetectorSettings().name


def evaluate(
    corpus: nab_corpus.Corpus,
    name: str,
    params: Mapping[str, Param],
    workers: int = 2,
    closed_loop: bool = True,
) -> dict[str, Any]:
    """Run detector ``name`` over ``corpus`` and return the summary (what ``--json`` writes).

    The runs themselves are kept under the ``"runs"`` key (not JSON; dropped on writing).
    """
    n_rows = sum(s.labels.n for s in corpus.series.values())
    merged = dict(make_monitor(name, params).params)  # with the detector's defaults
    t0 = time.monotonic()
    runs = run_corpus(corpus, name, merged, workers)
    wall = time.monotonic() - t0
    results = score_runs(corpus, runs)
    std = results["standard"]
    threshold = merged.get("threshold")
    configured = None
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        configured = fixed_threshold_score(corpus, runs, float(threshold))

    closed: dict[str, Any] | None = None
    swept = std["threshold"]
    if closed_loop and isinstance(threshold, float) and math.isfinite(swept) and swept > 0:
        again = {**merged, "threshold": swept}
        try:
            make_monitor(name, again)
        except SystemExit as exc:  # e.g. the z-score sweeps to 4.3e9, above the agent's bound
            closed = {"threshold": swept, "scores": None, "skipped": str(exc)}
        else:
            runs2 = run_corpus(corpus, name, again, workers)
            closed = {"threshold": swept, "scores": fixed_threshold_score(corpus, runs2, swept)}
    return {
        "detector": name,
        "params": merged,
        "files": len(corpus.series),
        "rows": n_rows,
        "windows": corpus.n_windows,
        "profiles": results,
        "at_configured_threshold": configured,
        "as_flagged": flagged_score(corpus, runs),
        "closed_loop": closed,
        "cpu_us_per_sample": 1e6 * sum(r.cpu_s for r in runs.values()) / max(n_rows, 1),
        "max_state_bytes": max((r.state_bytes for r in runs.values()), default=0),
        "wall_s": wall,
        "workers": workers,
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default=None, help="detector name (default: the agent's)")
    ap.add_argument("--param", action="append", type=parse_param, default=[], metavar="K=V")
    ap.add_argument("--data", type=Path, default=None, help="NAB root (default: shared/data/nab)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root")
    ap.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the summary here"
    )
    ap.add_argument("--workers", type=int, default=2, help="processes (at most 2)")
    ap.add_argument("--no-closed-loop", action="store_true", help="skip the second run")
    args = ap.parse_args(argv)
    name = args.detector or default_detector()
    workers = max(1, min(2, args.workers))

    corpus = nab_corpus.corpus_or_exit("nab", args.data, ["labels/combined_windows.json"])
    result = evaluate(corpus, name, dict(args.param), workers, not args.no_closed_loop)
    runs: dict[str, FileRun] = result.pop("runs")
    params = result["params"]
    squashed = write_csvs(corpus, runs, name, args.out)
    summary = {**result, "csv_scores": "s/(1+s)" if squashed else "as scored"}
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)

    print(f"detector={name} params={json.dumps(params, sort_keys=True)}")
    print(f"files={summary['files']} rows={summary['rows']} windows={summary['windows']}")
    print(f"{'profile':<20} {'score':>7} {'threshold':>12} {'tp':>4} {'fp':>5} {'fn':>4}")
    for pname, r in summary["profiles"].items():
        counts = f"{r['tp']:4d} {r['fp']:5d} {r['fn']:4d}"
        print(f"{pname:<20} {r['score']:7.2f} {r['threshold']:12.6g} {counts}")
    for fname, raw in summary["profiles"]["standard"]["temperature_raw"].items():
        print(f"raw standard score {fname}: {raw:+.4f}")
    configured = summary["at_configured_threshold"]
    if configured is not None:
        print(
            f"at the configured threshold={params['threshold']} (no sweep): "
            + " ".join(f"{k}={v:.2f}" for k, v in configured.items())
        )
    print(
        "as the monitor flagged: "
        + " ".join(f"{k}={v:.2f}" for k, v in summary["as_flagged"].items())
    )
    closed = summary["closed_loop"]
    if closed is not None and closed["scores"] is None:
        print(f"closed loop at threshold={closed['threshold']:.6g} not run: {closed['skipped']}")
    elif closed is not None:
        cl = closed["scores"]
        print(
            f"closed loop (agent threshold={closed['threshold']:.6g}): "
            + " ".join(f"{k}={v:.2f}" for k, v in cl.items())
        )
    cpu_us, state_max = summary["cpu_us_per_sample"], summary["max_state_bytes"]
    print(
        f"cpu_us_per_sample={cpu_us:.2f} max_state_bytes={state_max} wall_s={summary['wall_s']:.1f}"
    )
    if squashed:
        print("csv anomaly_score = s/(1+s) of the detector's score (monotone; same sweep)")
    print(f"results: {folder.resolve()}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
