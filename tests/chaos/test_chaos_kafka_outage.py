"""Kafka down for a minute under a running gateway: the gateway idles, then catches up.

While Kafka is unreachable the gateway must back off (bounded, jittered
exponential delays), not spin: its CPU over the outage stays below 5 % of a
core on average, and its log stays short (one warning when Kafka goes away,
one when it is back, a periodic summary in between: under 100 lines). The
devices keep publishing meanwhile; the gateway acknowledges MQTT only after
Kafka has a record, so when Kafka is back every reading the devices allocated
is in the telemetry topic, each exactly once. The edges' receipt wait is
longer than the outage, so no edge sends a reading again meanwhile and a
duplicate in Kafka could only come from the gateway; with a shorter wait the
edges re-send what no receipt covered, and Kafka holds copies the processor
stores once (tests/chaos/test_chaos_broker_backlog.py). Once Kafka is back the
receipts resume: every outbox empties.

CPU is the gateway process's utime + stime from ``/proc/<pid>/stat`` over
the outage. The outage is proven: Kafka's port refused every connection
tried twice a second throughout, and Kafka came back under a new pid.
Private stack (Mosquitto + Kafka on free ports); about 3 minutes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from edge_agent.outbox_files import read_pending_seqs
from telemetry_contract import kafka_topics
from testsupport.chaos import PortWatch, chaos_fleet, chaos_run
from thermowatch.accounting import (
    allocated_from_outboxes,
    fetch_reading_keys,
    wait_devices_in_topic,
    wait_missing_in_topic,
)
from thermowatch.demo import pipeline_services, wait_topics

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01"]}
OUTAGE_S = 60.0
MAX_CPU_SHARE = 0.05
MAX_LOG_LINES = 100
#: Longer than the outage: no receipt is overdue while Kafka is down.
RECEIPT_TIMEOUT_S = 3 * OUTAGE_S


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ": state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_gateway_idles_while_kafka_is_down_and_loses_nothing(
    mq_kafka_stack: LocalStack, tmp_path: Path
) -> None:
    stack = mq_kafka_stack
    run = chaos_run(tmp_path, "outage", SITES)
    ep = stack.endpoints()
    topics = kafka_topics(run.kafka_prefix)
    gateway, _ = pipeline_services(run, ep)
    fleet = chaos_fleet(
        run,
        ep["mosquitto"],
        interval_s=0.5,
        outbox_options={"receipt_timeout_s": RECEIPT_TIMEOUT_S},
    )
    kafka = ep["kafka"]
    gateway.start()
    try:
        asyncio.run(wait_topics(kafka, topics.all(), gateway, 120.0))
        fleet.start()
        assert wait_devices_in_topic(kafka, topics.telemetry, run.devices, timeout_s=120)
        paths = fleet.outbox_paths()
        outboxes = {d: paths[d] for d in run.devices}
        pid = gateway.pid
        assert pid is not None

        kafka_pid = stack.service_pid("kafka")
        stack.stop("kafka")
        down = PortWatch(ep["kafka"]["host"], int(ep["kafka"]["port"]))
        down.start()
        log_mark, cpu_0, t_0 = gateway.log_size(), cpu_seconds(pid), time.monotonic()
        at_stop = allocated_from_outboxes(outboxes)
        time.sleep(OUTAGE_S)
        cpu_share = (cpu_seconds(pid) - cpu_0) / (time.monotonic() - t_0)
        down.stop()
        assert down.always_refused, f"Kafka answered during the outage: {down}"
        outage_log = gateway.log_since(log_mark)
        during = allocated_from_outboxes(outboxes)
        published = sum(len(during[d]) - len(at_stop[d]) for d in run.devices)
        print(
            f"outage: gateway cpu={cpu_share:.1%} of a core, "
            f"log lines={len(outage_log.splitlines())} bytes={len(outage_log.encode())}, "
            f"readings published meanwhile={published}"
        )
        print(outage_log[-5000:])
        assert gateway.alive, gateway.log_since(log_mark)[-3000:]
        assert published >= 100, "the devices did not publish during the outage"
        assert cpu_share < MAX_CPU_SHARE, f"gateway used {cpu_share:.1%} of a core"
        lines = outage_log.splitlines()
        assert len(lines) < MAX_LOG_LINES, "\n".join(lines[:40])
        assert "kafka" in outage_log.lower(), "the outage was not logged at all"

        stack.start("kafka", timeout=240.0)
        assert stack.service_pid("kafka") not in (None, kafka_pid)
        time.sleep(10.0)
        fleet.stop()  # each agent flushes its outbox (and waits for the receipts, bounded)
        allocated = allocated_from_outboxes(outboxes)
        # Receipts resumed with Kafka: nothing is left waiting for one.
        left = {d: read_pending_seqs(p) for d, p in outboxes.items()}
        assert all(not seqs for seqs in left.values()), f"still in outboxes: {left}"
        missing = wait_missing_in_topic(
            kafka, topics.telemetry, allocated, timeout_s=120.0, poll_s=5.0
        )
        assert missing == [], f"{len(missing)} readings lost: {missing[:10]}"
        keys = asyncio.run(fetch_reading_keys(kafka, topics.telemetry))
        twice = {k: n for k, n in keys.items() if n != 1}
        assert twice == {}, f"readings in Kafka more than once: {list(twice.items())[:10]}"
        assert gateway.alive
        print(gateway.log_since(log_mark)[len(outage_log) :][-3000:])
    finally:
        fleet.stop()
        gateway.stop()
