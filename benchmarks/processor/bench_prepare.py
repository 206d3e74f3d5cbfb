"""The processor's per-record cost and rule-state memory, no services.

``BatchPreparer.prepare`` over ``--rounds`` readings of each of ``--devices``
devices, in batches of ``--batch``, with the fakes of
:mod:`cloud_processor.testing` for Kafka and the search server: microseconds
per record (median of three runs) and the memory held after the last batch
(``tracemalloc``). Results: docs/benchmarks.md ("hostile-input guards")::

    taskset -c 0 python benchmarks/processor/bench_prepare.py
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

from aiokafka.structs import TopicPartition

from cloud_processor.app import Processor
from cloud_processor.config import KafkaSettings, ProcessorConfig, RulesConfig
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from telemetry_contract import Reading, encode

TP = TopicPartition("b.telemetry", 0)


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def _build(now_ms: int) -> Processor:
    cfg = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="b"),
        rules=RulesConfig(threshold_high_c=8.0, rate_max_c_per_min=5.0),
    )
    return Processor(
        cfg,
        source=FakeSource(TP),
        producer=FakeProducer(),
        storage=FakeStore(),
        clock=lambda: now_ms / 1000,
    )


def _feed(p: Processor, values: list[bytes], batch: int, now_ms: int) -> None:
    for i in range(0, len(values), batch):
        records = [_Record(v, i + j) for j, v in enumerate(values[i : i + batch])]
        p.batches.prepare({TP: records}, now_ms + i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    now = int(time.time() * 1000)
    values = [
        encode(
            Reading(
                device_id=f"d{d:05}",
                sensor_id="host",
                site=f"s{d % 50}",
                seq=r + 1,
                ts=now - 600_000 + r * 1000,
                temp_c=5.0 + (d % 7) * 0.1,
            )
        )
        for r in range(args.rounds)
        for d in range(args.devices)
    ]
    runs = []
    for _ in range(3):
        p = _build(now)
        gc.collect()
        t0 = time.perf_counter()
        _feed(p, values, args.batch, now)
        runs.append((time.perf_counter() - t0) / len(values) * 1e6)
    gc.collect()
    tracemalloc.start()
    p = _build(now)
    _feed(p, values, args.batch, now)
    held, _ = tracemalloc.get_traced_memory()
    print(
        f"prepare: median {statistics.median(runs):.1f} us/record over {len(values)} records "
        f"({args.devices} devices), runs {[round(t, 1) for t in runs]}; "
        f"held after: {held / 1e6:.1f} MB ({held / args.devices / 1e3:.2f} KB/device)"
    )


if __name__ == "__main__":
    main()
