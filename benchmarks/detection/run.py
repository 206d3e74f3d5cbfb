"""Detection on simulated equipment: false alarms on normal weeks, time to detect faults.

For each equipment profile, ``--weeks`` device-weeks of normal operation
from install (the first 24 h included), judged by the agent's own
:class:`edge_agent.judge.SampleJudge` at the default configuration of that
profile (:func:`benchmarks.detection.configs.edge_config_for`); then every
compatible fault injected into each of those weeks after two days (at a
seed-drawn time of day), continuing from the detector's state at that moment.

Usage (from the repository root)::

    python -m benchmarks.detection.run                      # 4 weeks per profile at 1 Hz
    python -m benchmarks.detection.run --profiles freezer --weeks 1 --interval-s 10
    python -m benchmarks.detection.run --json benchmarks/detection/result.json
    python -m benchmarks.detection.run --detector zscore --param window_s=60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/detection/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.detection.configs import edge_config_for, with_detector
from benchmarks.detection.harness import FaultRun, NormalRun, WeekJob, run_device_week, week_jobs
from benchmarks.detection.report import markdown, summarize
from benchmarks.nab.run import parse_param
from edge_agent.detect import DetectorSpecError, Param
from edge_agent.equipment import FAULT_KINDS, PROFILES


def _profiles(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    for n in names:
        if n not in PROFILES:
            known = ", ".join(sorted(PROFILES))
            raise argparse.ArgumentTypeError(f"unknown profile {n!r} (known: {known})")
    return names


def _faults(text: str) -> list[str]:
    if text == "none":
        return []
    names = [k.strip() for k in text.split(",") if k.strip()]
    for n in names:
        if n not in FAULT_KINDS:
            known = ", ".join(sorted(FAULT_KINDS))
            raise argparse.ArgumentTypeError(f"unknown fault {n!r} (known: {known}, or none)")
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def run_jobs(jobs: Sequence[WeekJob], workers: int) -> tuple[list[NormalRun], list[FaultRun]]:
    """Every job, on ``workers`` spawned processes (1: in this process), in job order."""
    if workers <= 1:
        results = [run_device_week(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(run_device_week, jobs, chunksize=1)
    normal = [n for n, _ in results]
    faults = [f for _, fs in results for f in fs]
    return normal, faults


def evaluate(
    profiles: Sequence[str],
    weeks: int = 4,
    *,
    interval_s: float = 1.0,
    seed: int = 1,
    faults: bool | Sequence[str] = True,
    workers: int = 1,
    detector: str = "",
    params: Sequence[tuple[str, Param]] = (),
) -> dict[str, Any]:
    """The per-profile summary (:func:`~benchmarks.detection.report.summarize`) of a whole run.

    ``detector``/``params``: run that detector instead of each profile's default.
    """
    jobs = week_jobs(profiles, weeks, seed, interval_s, faults, detector, params)
    return summarize(*run_jobs(jobs, workers))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="detection", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--profiles",
        type=_profiles,
        default=sorted(PROFILES),
        help=f"comma-separated (default: all: {','.join(sorted(PROFILES))})",
    )
    ap.add_argument("--weeks", type=_positive_int, default=4, help="device-weeks per profile")
    ap.add_argument("--interval-s", type=_positive_float, default=1.0, help="sampling interval")
    ap.add_argument("--seed", type=int, default=1, help="seed of the first week (then +1, +2, ...)")
    ap.add_argument("--workers", type=_positive_int, default=2, help="processes")
    ap.add_argument(
        "--faults",
        type=_faults,
        default=None,
        help="comma-separated fault kinds to inject (default: every one that applies; none: none)",
    )
    ap.add_argument(
        "--detector", default="", help="run this detector instead of each profile's default"
    )
    ap.add_argument(
        "--param",
        action="append",
        type=parse_param,
        default=[],
        metavar="K=V",
        help="a parameter of --detector (repeatable)",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    if args.param and not args.detector:
        ap.error("--param needs --detector")

    def config_of(profile: str) -> Any:
        c = edge_config_for(profile)
        return with_detector(c, args.detector, dict(args.param)) if args.detector else c

    try:
        config_of(args.profiles[0] if args.profiles else "fridge")
    except DetectorSpecError as exc:
        ap.error(str(exc))

    t0 = time.monotonic()
    summary = evaluate(
        args.profiles,
        args.weeks,
        interval_s=args.interval_s,
        seed=args.seed,
        faults=True if args.faults is None else args.faults,
        workers=args.workers,
        detector=args.detector,
        params=args.param,
    )
    wall = time.monotonic() - t0
    configs = {
        p: {"detector": c.detector.name, "params": c.detector.params, "high_c": c.alarm.high_c}
        for p in args.profiles
        for c in [config_of(p)]
    }
    doc = {
        "command": "python -m benchmarks.detection.run " + " ".join(argv or sys.argv[1:]),
        "weeks": args.weeks,
        "interval_s": args.interval_s,
        "seed": args.seed,
        "wall_s": wall,
        "configs": configs,
        "profiles": summary,
    }
    print(markdown(summary), end="")
    print(f"\nweeks={args.weeks} interval_s={args.interval_s} seed={args.seed} wall_s={wall:.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
