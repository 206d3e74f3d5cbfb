"""Scale-out benchmark: readings stored per second with more gateways and processors.

One command runs, one after the other, a pipeline per configuration
``GATEWAYSxPROCESSORS`` of ``--configs`` (default ``1x1,1x2,1x3,2x1,2x2,1x1``:
the baseline again at the end, the machine being shared) at one offered rate
(``--rates``, a single rate above what one gateway and one processor
sustain). Each is a run of ``bench_latency.py`` (:class:`~benchmarks.e2e.runner.Bench`:
its own private broker, topics, consumer group and indices; the same warm-up,
steps, read-back and exact count, clean-up) with ``--gateways G
--processors P``, whose steps are: ``--warm-s`` seconds at the rate (not
measured: the pipeline is saturated before the measured step starts), then
``--seconds`` measured. During the measured step the index is counted every
``--count-every-s``; its growth over the load window is the configuration's
**stored readings/s**, compared with the mean of the baseline's runs. After the
last step the run waits (``--settle-s``) until every published reading is in
the index: ``readings_missing_in_index`` is the loss, ``readings_extra_in_index``
a stored duplicate (a document's id is ``device:seq``).

Run it against the cluster profile (``thermowatch stack up --cluster``; the
run's topics get the stack's replication factor) or a single-node stack:

    python benchmarks/e2e/bench_scaleout.py --rates 3000 --warm-s 20 --seconds 75

Every option of ``bench_latency.py`` is accepted (``--gateways`` and
``--processors`` are set per configuration). Results: ``--json``, default
``results/scaleout-<timestamp>.json``. ``--budget-min`` skips the configurations
that would end past a time budget (the slowest so far as the estimate). The
pure parts are
:mod:`benchmarks.e2e.scaleout`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks package of this checkout (not installed)

from benchmarks.e2e.bench_latency import parser as latency_parser  # noqa: E402
from benchmarks.e2e.bench_latency import resolve, setup  # noqa: E402
from benchmarks.e2e.probes import StoredSampler  # noqa: E402
from benchmarks.e2e.runner import Bench  # noqa: E402
from benchmarks.e2e.scaleout import (  # noqa: E402
    BASELINE,
    Config,
    cpu_groups,
    fits,
    label,
    markdown_table,
    parse_configs,
    ratios,
    stored_rate,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``bench_latency.py``'s options with this benchmark's defaults, plus ``--configs``,
    ``--warm-s`` and ``--count-every-s``; ``configs`` parsed, one rate in ``rates``."""
    ap = latency_parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--configs",
        default="1x1,1x2,1x3,2x1,2x2,1x1",
        help="GATEWAYSxPROCESSORS, comma separated, run in order (default 1x1,1x2,1x3,2x1,2x2,1x1)",
    )
    ap.add_argument(
        "--warm-s", type=float, default=20.0, help="seconds at the rate before the measured step"
    )
    ap.add_argument(
        "--count-every-s", type=float, default=3.0, help="index count period (default 3)"
    )
    ap.add_argument(
        "--budget-min",
        type=float,
        default=0.0,
        help="skip a configuration that, as long as the longest so far, would end past "
        "this many minutes from the start (default 0: run all)",
    )
    ap.set_defaults(
        rates="3000",
        seconds=75.0,
        # 6: two per processor at 3, three at 2, the same for every configuration.
        partitions=6,
        # A saturated step's samples wait for its backlog: the settle is shorter then.
        drain_s=120.0,
        anomalies_per_s=2.0,
        split_budget_s=20.0,
    )
    args = resolve(ap.parse_args(argv))
    if len(args.rates) != 1:
        ap.error("--rates: one offered rate (readings/s) for every configuration")
    try:
        args.configs = parse_configs(args.configs)
    except ValueError as exc:
        ap.error(str(exc))
    return args


class ScaleoutBench(Bench):
    """One configuration's run: a warm step, then the measured step with the index counted."""

    def _measure(self, result: dict[str, Any]) -> None:
        a = self.args
        rate = a.rates[0]
        if a.warm_s > 0:
            warm = self.step(rate, a.warm_s, "warm", 0.0, measured=False)
            result["steps"].append(warm)
        pipeline = self.pipeline
        sampler = StoredSampler(
            pipeline.endpoints["search"],
            f"{pipeline.run.index_prefix}readings-*",
            a.count_every_s,
        )
        sampler.start()
        try:
            st = self.step(rate, a.seconds, "measured", a.drain_s)
        finally:
            samples = sampler.stop()
        st["stored_samples"] = [(round(t, 3), n) for t, n in samples]
        rate_s = stored_rate(samples, st["load_start_unix"], st["load_end_unix"])
        st["stored_per_s"] = round(rate_s, 1) if rate_s is not None else None
        result["steps"].append(st)
        print(
            f"  offered {rate:g}/s  acked {st['acked_in_window_per_s']}/s  "
            f"stored {st['stored_per_s']}/s  load {st['load_avg_1_5_15'][0]}",
            flush=True,
        )


def row_of(config: Config, result: dict[str, Any]) -> dict[str, Any]:
    """The table row of one configuration's run."""
    measured = next(s for s in result["steps"] if s["label"] == "measured")
    a = measured["searchable_ms"]
    return {
        "config": label(config),
        "gateways": config[0],
        "processors": config[1],
        "run_id": result["run_id"],
        "offered_per_s": measured["offered_per_s"],
        "acked_in_window_per_s": measured["acked_in_window_per_s"],
        "stored_per_s": measured["stored_per_s"],
        "readings_published": result["readings_published_with_warmup"],
        "readings_lost": result["readings_missing_in_index"],
        "readings_duplicated": result["readings_extra_in_index"],
        "settle_s": result["readings_settle_s"],
        "searchable_ms_p50": a["p50"],
        "searchable_ms_p99": a["p99"],
        "searchable_n": a["n"],
        "searchable_not_found": measured["searchable_not_found"],
        "processor_bulk_requests": measured["processor_bulk_requests"],
        "processor_bulk_mean_ms": measured["processor_bulk_mean_ms"],
        "cpu_percent": cpu_groups(measured["cpu_percent"]),
        "load_avg_1_5_15": measured["load_avg_1_5_15"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not setup(args, "bench_scaleout"):
        return 1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path = args.json or HERE / "results" / f"scaleout-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "benchmark": "e2e-scaleout",
        "command": " ".join(["python", "benchmarks/e2e/bench_scaleout.py", *sys.argv[1:]]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline": label(BASELINE),
        "configs": [label(c) for c in args.configs],
        "rows": [],
        "runs": [],
    }
    t0 = time.monotonic()
    durations: list[float] = []
    for config in args.configs:
        if not fits(time.monotonic() - t0, durations, args.budget_min * 60):
            print(f"{label(config)}: skipped (--budget-min {args.budget_min:g})", flush=True)
            out["runs"].append({"config": label(config), "skipped": "budget"})
            continue
        t_config = time.monotonic()
        print(f"{label(config)}: {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
        run_args = copy.copy(args)
        run_args.gateways, run_args.processors = config
        try:
            result = ScaleoutBench(run_args).run_all()
            out["rows"].append(row_of(config, result))
            print(f"  {json.dumps(out['rows'][-1])}", flush=True)
        except Exception as exc:  # one configuration failing still leaves the others
            result = {"config": label(config), "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        durations.append(time.monotonic() - t_config)
        result["config_duration_s"] = round(durations[-1], 1)
        out["runs"].append(result)
        out["ratios"] = ratios(out["rows"])
        json_path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    out["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    json_path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out["ratios"], indent=2))
    if out["rows"]:
        print(markdown_table(out["rows"]))
    print(f"results: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
