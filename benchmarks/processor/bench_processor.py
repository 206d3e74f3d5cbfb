"""Processor benchmark: Kafka -> search server throughput vs a bare bulk loader; rule cost.

Run against the local stack (``thermowatch stack up``)::

    python benchmarks/processor/bench_processor.py --readings 100000 --devices 50 --rounds 3

1. Produces N readings (D devices, 1 Hz each, event time ending now) into a
   private topic.
2. Per round, the limit: the official client (opensearch-py ``helpers.bulk``,
   chunks of 5000) writes the same documents (same ids, ``op_type=create``)
   into a private index prefix just before and just after the processor's
   run; the mean of the two is the round's limit.
3. The processor (fresh consumer group, default settings, same event loop)
   consumes the topic until every reading is stored; readings/s from its
   first consumed batch (after the group join, reported separately) to the
   last document.
4. Rule evaluation cost: :class:`FleetRules` over the same readings in memory,
   with a tick (fleet outliers, stale sensors) every 1000 readings,
   microseconds per reading (thresholds, rate, outlier all enabled).
5. Prints every round and the median ratio.

Everything it creates is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from cloud_processor.config import (
    AlertSettings,
    HttpSettings,
    KafkaSettings,
    ProcessorConfig,
    RulesConfig,
    SearchSettings,
)
from cloud_processor.documents import reading_doc, reading_id
from cloud_processor.factory import build_processor
from cloud_processor.rules import FleetRules
from deploy.local.stack import LocalStack
from stagekit.kafka import (
    KafkaTarget,
    connection_keys,
    create_topics,
    delete_topics,
    settings_for,
)
from stagekit.search import SearchSettings as Server
from stagekit.search import api as search
from stagekit.search import make_backend
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames, index_templates
from telemetry_contract import Reading, encode, kafka_key, kafka_topics

RULES = RulesConfig(
    threshold_high_c=8.0,
    critical_high_c=12.0,
    threshold_low_c=-30.0,
    min_duration_s=60,
    rate_max_c_per_min=3.0,
)


def make_readings(n: int, devices: int) -> list[Reading]:
    per = n // devices
    end = int(time.time() * 1000)
    out = []
    for i in range(per):
        for d in range(devices):
            temp = 4.0 + ((i * 7 + d * 13) % 40) / 16.0 + (6.0 if (i // 300) % 5 == 4 else 0.0)
            out.append(
                Reading(
                    device_id=f"b-{d:03d}",
                    sensor_id="host",
                    site=f"site{d % 5}",
                    seq=i + 1,
                    ts=end - (per - i) * 1000,
                    temp_c=round(temp, 4),
                    anomaly_score=0.1,
                    detector="hst",
                )
            )
    return out


async def produce(kafka: KafkaTarget, topic: str, readings: list[Reading]) -> None:
    producer = AIOKafkaProducer(
        **settings_for(kafka).client_options(), acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        batch = []
        for r in readings:
            batch.append(await producer.send(topic, encode(r), key=kafka_key(r.device_id)))
            if len(batch) >= 5000:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


def bare_loader(server: Server, names: IndexNames, readings: list[Reading]) -> float:
    """The limit: official client, helpers.bulk, same documents and ids (same TLS and login)."""
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(
        hosts=[server.url],
        http_auth=(server.username, server.password) if server.username else None,
        ca_certs=server.ca_file or None,
        timeout=60,
    )
    for name, body in index_templates(names).items():
        client.indices.put_index_template(name=name, body=body)
    actions = (
        {
            "_op_type": "create",
            "_index": names.readings_for(r.ts),
            "_id": reading_id(r),
            "_source": reading_doc(r),
        }
        for r in readings
    )
    started = time.perf_counter()
    ok, errors = helpers.bulk(
        client,
        actions,
        chunk_size=5000,
        max_chunk_bytes=50 * 2**20,
        raise_on_error=False,
        stats_only=True,
    )
    elapsed = time.perf_counter() - started
    client.close()
    assert ok == len(readings), (ok, errors)
    return len(readings) / elapsed


async def processor_run(cfg: ProcessorConfig, n: int) -> tuple[float, dict[str, float]]:
    processor = build_processor(cfg)
    await processor.start()
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(processor.run(stop))

    def stored() -> float:
        total = 0.0
        for metric in processor.metrics.registry.collect():
            for s in metric.samples:
                if (
                    s.name == "thermowatch_processor_documents_total"
                    and s.labels.get("index") == "readings"
                    and s.labels.get("result") in ("stored", "duplicate")
                ):
                    total += s.value
        return total

    def consumed() -> float:
        return sum(
            s.value
            for metric in processor.metrics.registry.collect()
            for s in metric.samples
            if s.name == "thermowatch_processor_records_total"
        )

    try:
        # Sustained rate: from the first batch consumed (after the group join)
        # to the last reading stored.
        while consumed() == 0:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
        joined = time.perf_counter()
        while stored() < n:
            await asyncio.sleep(0.02)
            if task.done():
                task.result()
        elapsed = time.perf_counter() - joined
    finally:
        stop.set()
        await task
        await processor.close()
    info = {"seconds": round(elapsed, 2), "join_s": round(joined - started, 2)}
    return n / elapsed, info


def rule_cost(readings: list[Reading]) -> float:
    rules = FleetRules(RULES, AlertSettings(max_event_age_s=1e9))
    now = readings[-1].ts
    started = time.perf_counter()
    for i, r in enumerate(readings):
        rules.on_reading(r, now_ms=now)
        if i % 1000 == 999:  # the processor ticks once per batch
            rules.tick(now)
    return (time.perf_counter() - started) / len(readings) * 1e6


async def cleanup(server: Server, *names: IndexNames) -> None:
    backend = make_backend(server)
    for n in names:
        with contextlib.suppress(SearchError):
            await backend.perform(search.delete_index(f"{n.prefix}*"))
        for spec in INDEXES:
            with contextlib.suppress(SearchError):
                await backend.perform(search.delete_index_template(n.base(spec)))
    await backend.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument(
        "--bootstrap",
        default="",
        help="a plaintext Kafka host:port (default: the local stack's Kafka, SASL_SSL as admin)",
    )
    ap.add_argument(
        "--search", default="", help="search URL (default: the local stack's, as admin)"
    )
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument(
        "--commit-interval",
        type=float,
        default=KafkaSettings().commit_interval_s,
        help="kafka.commit_interval_s (default: the processor's default)",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="bare/processor/bare rounds (median reported)"
    )
    args = ap.parse_args()
    endpoints = LocalStack().endpoints()
    args.kafka = args.bootstrap or endpoints["kafka"]
    endpoint = endpoints["search"]
    if args.search:
        endpoint = {**endpoint, "url": args.search}
    server = Server.from_endpoint(endpoint, "admin")  # writes its own prefixes

    run = f"bench{uuid.uuid4().hex[:6]}"
    topics = kafka_topics(run)
    readings = make_readings(args.readings, args.devices)
    n = len(readings)
    await create_topics(
        args.kafka,
        [topics.telemetry, topics.edge_alerts, topics.status, topics.alerts],
        partitions=args.partitions,
    )
    t = time.perf_counter()
    await produce(args.kafka, topics.telemetry, readings)
    produce_s = time.perf_counter() - t

    results: dict[str, Any] = {
        "readings": n,
        "devices": args.devices,
        "partitions": args.partitions,
        "commit_interval_s": args.commit_interval,
        "produce_s": round(produce_s, 2),
        "rule_us_per_reading": round(rule_cost(readings), 2),
        "rounds": [],
    }
    for r in range(args.rounds):
        bare_a = IndexNames(f"{run}-r{r}-bare-")
        bare_b = IndexNames(f"{run}-r{r}-bare2-")
        proc_names = IndexNames(f"{run}-r{r}-proc-")
        try:
            before = await asyncio.to_thread(bare_loader, server, bare_a, readings)
            await cleanup(server, bare_a)
            cfg = ProcessorConfig(
                kafka=KafkaSettings(
                    **connection_keys(args.kafka, "processor"),
                    topic_prefix=run,
                    group_id=f"{run}-g{r}",
                    client_id=f"{run}-p{r}",
                    max_batch=5000,
                    poll_timeout_ms=200,
                    commit_interval_s=args.commit_interval,
                ),
                search=SearchSettings.from_endpoint(
                    endpoint, "admin", index_prefix=proc_names.prefix
                ),
                rules=RULES,
                alerts=AlertSettings(),
                http=HttpSettings(enabled=False),
            )
            rate, info = await processor_run(cfg, n)
            await cleanup(server, proc_names)
            after = await asyncio.to_thread(bare_loader, server, bare_b, readings)
        finally:
            await cleanup(server, bare_a, bare_b, proc_names)
        # The limit: mean of a bare run just before and one just after the
        # processor's (cancels warm-up and load drift between the runs).
        limit = (before + after) / 2
        results["rounds"].append(
            {
                "bare_loader_runs_per_s": [round(before), round(after)],
                "bare_loader_per_s": round(limit),
                "processor_per_s": round(rate),
                "processor_s": info["seconds"],
                "processor_group_join_s": info["join_s"],
                "ratio": round(rate / limit, 3),
            }
        )
        print(json.dumps(results["rounds"][-1]), flush=True)
    await delete_topics(args.kafka, topics.all())
    ratios = sorted(x["ratio"] for x in results["rounds"])
    results["median_ratio"] = ratios[len(ratios) // 2]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
