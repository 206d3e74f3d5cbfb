"""Gateway throughput benchmark: MQTT QoS 1 -> Kafka, beside its two limits.

Not a test. Runs against the running local stack (``thermowatch stack up``)
and prints a JSON summary. Three measurements on the same broker, the same
machine and the same records:

(a) a bare paho QoS 1 subscriber (manual ack right in ``on_message``) on the
    same shared-subscription filters, with the same Receive Maximum;
(b) a bare aiokafka producer sending the gateway's exact records (value, key,
    headers) with the gateway's settings (idempotent, acks=all, lz4,
    linger 5 ms, 256 KiB batches) and the same in-flight bound;
(c) the gateway itself as 1 and as 2 processes (``python -m gateway run``).

To measure the consumer side rather than the publisher, messages are queued
first: each subscriber (bare or gateway) connects once to create its
persistent session and subscription, disconnects, the benchmark publishes N
messages (the broker queues them in the session), and then the subscriber
reconnects and drains the queue. Throughput = N / (first message received ->
last one acknowledged after Kafka confirmed it). Zero loss is checked by
reading every (device, seq) back from Kafka.

    python benchmarks/gateway/bench.py --messages 30000 --repeat 3

``--only c1 --only c1plain`` measures the price of Kafka security: (c1) the
gateway writing to the stack's Kafka (SASL_SSL, SCRAM-SHA-512) and (c1plain)
the same gateway and records to a private plaintext Kafka started beside it
for the run (its own stack dir and port, removed afterwards), in one run,
taking turns at going first; ``ratio_sasl_ssl_to_plain`` = c1 / c1plain.

This file is the command line and one run's ratios; the measurements are
in :mod:`benchmarks.gateway.subscribers` (a, a2),
:mod:`~benchmarks.gateway.producers` (b, b2) and
:mod:`~benchmarks.gateway.gateways` (c), on the workload of
:mod:`~benchmarks.gateway.workload`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks package of this checkout (not installed)

from benchmarks.gateway.gateways import bench_gateways  # noqa: E402
from benchmarks.gateway.producers import (  # noqa: E402
    bench_bare_batch_producer,
    bench_bare_producer,
)
from benchmarks.gateway.subscribers import (  # noqa: E402
    bench_bare_subscriber,
    bench_gateway_reader,
)
from benchmarks.gateway.workload import Fleet  # noqa: E402
from deploy.local.services.kafka import KAFKA_PLAINTEXT_ENV  # noqa: E402
from deploy.local.stack import LocalStack, free_port  # noqa: E402


def one_run(
    stack: LocalStack,
    n: int,
    only: set[str],
    plain: Mapping[str, Any] | None = None,
    plain_first: bool = False,
) -> dict[str, Any]:
    """(a), (b), (c1), (c2) on fresh devices, topics and sessions; ratios of this run."""
    run = uuid.uuid4().hex[:6]
    fleet = Fleet(stack, run, n)
    out: dict[str, Any] = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in only:
            out["a_bare_paho_subscriber"] = bench_bare_subscriber(stack, fleet, run)
        if "a2" in only:
            out["a2_gateway_mqtt_reader_alone"] = bench_gateway_reader(stack, fleet, run, Path(tmp))
        if "b" in only:
            out["b_bare_aiokafka_producer"] = asyncio.run(
                bench_bare_producer(stack.endpoints()["kafka"], fleet, run)
            )
        if "b2" in only:
            out["b2_bare_aiokafka_batch_producer"] = asyncio.run(
                bench_bare_batch_producer(stack.endpoints()["kafka"], fleet, run)
            )
        # c1 and c1plain in turns (plain first on odd runs): neither always gets
        # the quieter moment.
        for name in sorted({"c1", "c1plain"} & only, reverse=plain_first):
            if name == "c1":
                out["c_gateway_1_process"] = bench_gateways(stack, fleet, run, 1, Path(tmp))
            elif plain is not None:
                out["c_gateway_1_process_plain_kafka"] = bench_gateways(
                    stack, fleet, run, 1, Path(tmp), kafka=plain, tag="p"
                )
        if "c2" in only:
            out["c_gateway_2_processes"] = bench_gateways(stack, fleet, run, 2, Path(tmp))
    out["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    a = out.get("a_bare_paho_subscriber", {}).get("per_s")
    # The Kafka limit is the faster of aiokafka's two ways to send.
    b = max(
        out.get("b_bare_aiokafka_producer", {}).get("per_s") or 0,
        out.get("b2_bare_aiokafka_batch_producer", {}).get("per_s") or 0,
    )
    c1 = out.get("c_gateway_1_process", {}).get("per_s")
    c2 = out.get("c_gateway_2_processes", {}).get("per_s")
    if a and b and c1:
        out["ratio_1_process_to_min_a_b"] = round(c1 / min(a, b), 3)
    if a and b and c2:
        out["ratio_2_processes_to_min_a_b"] = round(c2 / min(a, b), 3)
    if c1 and c2:
        out["growth_2_vs_1"] = round(c2 / c1, 3)
    c1plain = out.get("c_gateway_1_process_plain_kafka", {}).get("per_s")
    if c1 and c1plain:
        out["ratio_sasl_ssl_to_plain"] = round(c1 / c1plain, 3)
    a2 = out.get("a2_gateway_mqtt_reader_alone", {}).get("per_s")
    if a2 and b and c1:
        out["ratio_1_process_to_min_a2_b"] = round(c1 / min(a2, b), 3)
    return out


@contextlib.contextmanager
def plain_kafka() -> Iterator[dict[str, Any]]:
    """A private Kafka with the explicitly plaintext listener, for the run only."""
    with tempfile.TemporaryDirectory(prefix="bench-plain-kafka-") as root:
        os.environ[KAFKA_PLAINTEXT_ENV] = "1"
        try:
            private = LocalStack(Path(root), kafka_port=free_port(span=1))
        finally:
            del os.environ[KAFKA_PLAINTEXT_ENV]
        private.up(["kafka"], timeout=180.0)
        try:
            yield private.endpoints()["kafka"]
        finally:
            private.down(["kafka"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument(
        "--only", choices=["a", "a2", "b", "b2", "c1", "c1plain", "c2"], action="append"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="independent runs (each with its own baselines)"
    )
    args = ap.parse_args()
    stack = LocalStack()
    # Self-contained: start the local stack if it is not up (a no-op when it is).
    stack.up(["mosquitto", "kafka"])
    only = set(args.only or ["a", "a2", "b", "b2", "c1", "c2"])
    runs = []
    with contextlib.ExitStack() as cleanup:
        plain = cleanup.enter_context(plain_kafka()) if "c1plain" in only else None
        if plain is not None:  # a new JVM: warm both brokers up once, not measured
            warm = one_run(stack, args.messages, only & {"c1", "c1plain"}, plain)
            print(f"warm-up: {json.dumps(warm)}", file=sys.stderr, flush=True)
        for i in range(args.repeat):
            runs.append(one_run(stack, args.messages, only, plain, plain_first=i % 2 == 1))
            # Each run as soon as it is done (stderr), so a later failure loses nothing.
            print(f"run {i + 1}/{args.repeat}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"messages": args.messages, "cpus": os.cpu_count(), "runs": runs}
    sasl = sorted(r["ratio_sasl_ssl_to_plain"] for r in runs if "ratio_sasl_ssl_to_plain" in r)
    if sasl:
        out["ratio_sasl_ssl_to_plain_median"] = sasl[len(sasl) // 2]
        # Runs take turns at going first: the geometric mean cancels a position bias.
        out["ratio_sasl_ssl_to_plain_geomean"] = round(
            math.exp(sum(math.log(r) for r in sasl) / len(sasl)), 3
        )
    ratios = sorted(
        r["ratio_1_process_to_min_a_b"] for r in runs if "ratio_1_process_to_min_a_b" in r
    )
    if ratios:
        out["ratio_1_process_median"] = ratios[len(ratios) // 2]
        out["ratio_1_process_min_max"] = [ratios[0], ratios[-1]]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
