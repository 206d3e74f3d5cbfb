"""End-to-end latency benchmark: device publish -> searchable, and -> webhook.

Runs the real pipeline on this machine against the shared local stack
(``thermowatch stack up``, or ``--cluster``): one or more gateway processes and
one or more processor processes (``--processors``, one consumer group),
started with ``thermowatch.demo``'s config builders and process wrapper under
their own Kafka topic prefix, consumer group, index prefix and MQTT share
group. Worker processes (``loadgen.py``) play the devices
``e2e-d01``.. (MQTT users added to the stack on first use) and publish
contract readings with QoS 1 at each offered rate for ``--seconds``.

Measured per offered rate:

(a) **event time -> searchable**: a sample of readings (``--samples-per-s``)
    is polled every ``--poll-ms`` with a ``_search`` ``ids`` query (no
    refresh forced), so a document counts only once a refresh has made it
    visible to search; latency = time the answer that first contained it
    arrived - the reading's ``ts`` (its send time).
(b) **anomalous reading -> webhook received**: ``--anomalies-per-s``
    readings at 60 degC (the benchmark's ``threshold_high_c`` is 50 with
    ``min_duration_s`` 0, so one reading opens an alert; the device's next
    reading resolves it). A local HTTP receiver records when each
    ``opened`` change arrives; it is matched to the reading by
    ``(device_id, opened_at == ts)``.

Then, with ``--find-max``, higher rates (``--max-rates``) are tried until
p99 (b) reaches 1 s or the generator cannot deliver 95 % of the offered rate.
Everything the run created (Kafka topics and consumer group, indices and
templates) is deleted at the end.

    python benchmarks/e2e/bench_latency.py --rates 200,1000,5000 --seconds 60

With ``--fleet`` it plays 10,000-100,000 devices, each its own connection,
each publishing once per ``--period-s`` (:mod:`benchmarks.e2e.fleet`):

    python benchmarks/e2e/bench_latency.py --fleet --devices 100000 --brokers 6 \
        --workers 6 --period-s 60 --seconds 180

(a process may hold only so many connections, ``ulimit -n``: ``--brokers``
shards the sites over several private brokers, one gateway group each).

With ``--storm`` (issue 14), each rate runs ``--storm-rounds`` pairs of
steps, calm and storm interleaved (ABBA...): in a storm step one more device
(``e2e-storm``, no readings) sends ``--storm-alerts`` edge alerts of
alternating severity at ``--storm-rate``/s while the others publish as
usual; ``--webhook-delay-ms`` makes the receiver slow. The summary compares
the p99 of (a) over the calm and the storm steps:

    python benchmarks/e2e/bench_latency.py --storm --rates 200 --seconds 30 \
        --anomalies-per-s 0 --webhook-delay-ms 200

This file is the command line; the run is :mod:`benchmarks.e2e.runner` (on
:mod:`~benchmarks.e2e.pipeline`, measured by :mod:`~benchmarks.e2e.probes`
and :mod:`~benchmarks.e2e.readback`), the numbers :mod:`benchmarks.e2e.report`,
the clean-up :mod:`benchmarks.e2e.cleanup`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks package of this checkout (not installed)

from benchmarks.e2e.report import plot  # noqa: E402
from benchmarks.e2e.runner import Bench  # noqa: E402
from deploy.local.stack import LocalStack  # noqa: E402

HERE = Path(__file__).resolve().parent


def _kv(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    """The options of a run (``bench_scaleout.py`` takes the same ones)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rates", default="200,1000,5000", help="offered readings/s, comma separated")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per rate (default 60)")
    ap.add_argument(
        "--find-max", action="store_true", help="step above the last rate until it breaks"
    )
    ap.add_argument("--step-factor", type=float, default=1.5, help="rate multiplier for --find-max")
    ap.add_argument("--devices", type=int, default=30, help="simulated devices (default 30)")
    ap.add_argument(
        "--workers",
        type=int,
        default=3,
        help="load generator processes (default 3), split over the brokers (at least one each)",
    )
    ap.add_argument(
        "--period-s",
        default="",
        help="seconds between a device's readings, comma separated: each one a step at "
        "devices/period readings/s (instead of --rates)",
    )
    ap.add_argument(
        "--fleet",
        action="store_true",
        help="presets for 10,000-100,000 devices: --device-login password --keepalive-s 600 "
        "--connect-rate 400 --per-address 20000 (each still settable)",
    )
    ap.add_argument(
        "--device-login",
        choices=("certificate", "password"),
        help="devices log in with a client certificate (default) or a password (TLS both)",
    )
    ap.add_argument("--keepalive-s", type=int, help="devices' MQTT keep-alive (default 30)")
    ap.add_argument(
        "--connect-rate", type=float, help="device connections opened per second (default: no cap)"
    )
    ap.add_argument(
        "--per-address",
        type=int,
        help="devices per loopback source address 127.0.0.2, .3, ... (default 0: the system's)",
    )
    ap.add_argument(
        "--mqtt",
        choices=("private", "shared"),
        default="private",
        help="a private Mosquitto for this run (default) or the shared stack's",
    )
    ap.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="private Mosquitto brokers, the sites sharded over them (default 1)",
    )
    ap.add_argument(
        "--gateways", type=int, default=1, help="gateway processes per broker (default 1)"
    )
    ap.add_argument(
        "--processors",
        type=int,
        default=1,
        help="processor processes, one consumer group (default 1)",
    )
    ap.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="partitions of the run's topics (default: the gateway config's, 3)",
    )
    ap.add_argument("--gateway-linger-ms", type=int, default=5)
    ap.add_argument(
        "--gateway-receipts",
        choices=("on", "off"),
        default="on",
        help="the gateways' receipts to devices (default on, as shipped)",
    )
    ap.add_argument("--refresh-interval", default="1s", help="search index refresh interval")
    ap.add_argument(
        "--processor-kafka",
        type=_kv,
        action="append",
        metavar="KEY=VALUE",
        help="override a [kafka] setting of the processor (repeatable)",
    )
    ap.add_argument(
        "--kill-processor-at-s",
        type=float,
        default=None,
        metavar="S",
        help="SIGKILL the first processor S seconds into the first measured step (after "
        "the warm-up), with "
        "--processors 2 or more: the takeover is measured (when the anomalies sent "
        "in the 10 s after the kill reached the webhook)",
    )
    ap.add_argument(
        "--processor-aggregates",
        type=_kv,
        action="append",
        metavar="KEY=VALUE",
        help="override an [aggregates] setting of the processor (repeatable; "
        "live_hold_s=0: every window recomputed by query, as before issue 19's fold)",
    )
    ap.add_argument(
        "--processor-webhook",
        type=_kv,
        action="append",
        metavar="KEY=VALUE",
        help="override a [webhook] setting of the processor (repeatable)",
    )
    ap.add_argument(
        "--storm",
        action="store_true",
        help="alert storm: calm and storm steps interleaved per rate (see --storm-*)",
    )
    ap.add_argument("--storm-rounds", type=int, default=3, help="calm+storm pairs per rate")
    ap.add_argument("--storm-alerts", type=int, default=1000, help="edge alerts per storm step")
    ap.add_argument("--storm-rate", type=float, default=200.0, help="storm alerts per second")
    ap.add_argument(
        "--webhook-delay-ms", type=float, default=0.0, help="the receiver's delay per request"
    )
    ap.add_argument("--anomalies-per-s", type=float, default=4.0)
    ap.add_argument("--samples-per-s", type=float, default=20.0)
    ap.add_argument("--poll-ms", type=float, default=50.0, help="searchability poll period")
    ap.add_argument(
        "--split-budget-s",
        type=float,
        default=60.0,
        help="max seconds to read the telemetry topic back for the latency split",
    )
    ap.add_argument("--drain-s", type=float, default=30.0, help="max wait after each step")
    ap.add_argument(
        "--settle-s",
        type=float,
        default=300.0,
        help="max wait, after the last step, until every reading is stored (default 300)",
    )
    ap.add_argument("--json", type=Path, help="results file (default results/<timestamp>.json)")
    ap.add_argument("--plot", type=Path, help="PNG plot (default beside the JSON)")
    ap.add_argument("--keep", action="store_true", help="keep topics and indices (debugging)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the rates of ``--rates``/``--period-s`` as floats and the
    ``--fleet`` presets (or the defaults) filled in."""
    args.rates = [float(x) for x in args.rates.split(",") if x]
    if args.period_s:
        args.rates = [args.devices / float(x) for x in args.period_s.split(",") if x]
    presets = {"device_login": "password", "keepalive_s": 600, "connect_rate": 400.0}
    presets["per_address"] = 20000
    defaults = {"device_login": "certificate", "keepalive_s": 30, "connect_rate": 0.0}
    defaults["per_address"] = 0
    for key, value in (presets if args.fleet else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def setup(args: argparse.Namespace, prog: str = "bench_latency") -> bool:
    """Logging as ``-v`` says; False (after printing why) when the stack is not up."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # The probe counts its own failed searches (e.g. before the first index exists).
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    status = LocalStack().status()
    down = [k for k, v in status.items() if not v.get("pid")]
    if down:
        print(
            f"{prog}: error: stack services not running: {down} (thermowatch stack up)",
            file=sys.stderr,
        )
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = resolve(parser().parse_args(argv))
    if not setup(args):
        return 1
    bench = Bench(args)
    result = bench.run_all()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path = args.json or HERE / "results" / f"{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_path: Path | None = args.plot or json_path.with_suffix(".png")
    if result["steps"] and importlib.util.find_spec("matplotlib") is not None:
        plot(result, plot_path)
    else:  # the results are in the JSON; the plot is an extra (pip install '.[bench]')
        plot_path = None
    print(json.dumps(result.get("summary", {}), indent=2))
    print(f"results: {json_path}\nplot: {plot_path or 'none (matplotlib is not installed)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
