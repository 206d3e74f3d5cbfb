"""After the run: the Kafka append times of the anomalies and of their alerts.

The run's topics are created with ``message.timestamp.type=LogAppendTime``,
so a record's timestamp says when the broker had it; reading both topics back
cuts latency (b) at Kafka (:func:`benchmarks.e2e.report.webhook_split`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import msgspec

from benchmarks.e2e.loadgen import ANOMALY_C
from stagekit.kafka import KafkaTarget, partitions_of, settings_for
from telemetry_contract import ChangeKind, ContractError, Rule, decode_alert_change
from thermowatch.accounting import read_records

__all__ = ["alert_record_times", "anomaly_record_times"]


async def alert_record_times(kafka: KafkaTarget, topic: str) -> dict[tuple[str, int], int]:
    """``(device_id, opened_at) -> Kafka timestamp`` of ``opened`` changes on the alerts topic."""
    out: dict[tuple[str, int], int] = {}
    for value, ts in await read_records(kafka, topic):
        try:
            change = decode_alert_change(value)
        except ContractError:
            continue
        if change.kind == ChangeKind.OPENED and change.alert.rule == Rule.THRESHOLD_HIGH:
            key = (change.alert.device_id, change.alert.opened_at)
            out[key] = min(out.get(key, ts), ts)
    return out


class _Key(msgspec.Struct):
    device_id: str
    seq: int


async def anomaly_record_times(
    kafka: KafkaTarget, topic: str, budget_s: float, anomalies: Iterable[tuple[str, int]]
) -> tuple[dict[tuple[str, int], int], set[tuple[str, int]], bool]:
    """Read the telemetry topic back: ``(device_id, ts) -> Kafka timestamp`` of the
    anomalous readings (broker append time), the ``(device_id, seq)`` of anomalies
    that a later reading of the same device overtook in Kafka (a lower offset in the
    device's partition: the processor then sees the anomaly as out of date and does
    not evaluate threshold rules on it), and whether the
    whole topic was read in ``budget_s``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    needle = f'"temp_c":{ANOMALY_C}'.encode()
    partitions = (await partitions_of(kafka, [topic])).get(topic, [])
    tps = [TopicPartition(topic, p) for p in partitions]
    out: dict[tuple[str, int], int] = {}
    wanted = set(anomalies)
    newest: dict[str, int] = {}  # device -> highest seq so far, in offset order
    overtaken: set[tuple[str, int]] = set()
    key_of = msgspec.json.Decoder(_Key)
    if not tps:
        return out, set(), True
    consumer = AIOKafkaConsumer(
        **settings_for(kafka).client_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    deadline = time.monotonic() + budget_s
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=20_000)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    if needle in r.value:
                        msg = json.loads(r.value)
                        out[(str(msg["device_id"]), int(msg["ts"]))] = int(r.timestamp)
                    try:
                        k = key_of.decode(r.value)
                    except msgspec.DecodeError:
                        continue
                    top = newest.get(k.device_id, -1)
                    if (k.device_id, k.seq) in wanted and top > k.seq:
                        overtaken.add((k.device_id, k.seq))
                    newest[k.device_id] = max(top, k.seq)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        return out, overtaken, not todo
    finally:
        await consumer.stop()
