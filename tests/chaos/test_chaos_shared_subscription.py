"""Mosquitto restarts under a gateway on a *shared* subscription: nothing is lost.

Mosquitto 2.0.11 (Debian 12) does not restore a persistent session's shared
subscription after a restart. Until the gateway subscribes again the broker
has no subscriber for the devices' readings: it acknowledges each with
PUBACK reason 16 "No matching subscribers" and drops it. The edge agent keeps
such a reading and sends it again (``mqtt.resend_unrouted``, on by default),
so the gateway's Kafka topic must end up holding every seq the agents
allocated. The gateway reconnects 4 s apart and the devices within 1 s, so
each restart opens that window (measured with ``resend_unrouted = false``: 96
of 315 readings lost; with a plain, non-shared subscription: none). Private
stack (Mosquitto + Kafka) on its own ports; under a minute.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from telemetry_contract import kafka_topics
from thermowatch import accounting as acc
from thermowatch.demo import DemoFleet, DemoRun, pipeline_services, steady_plan, wait_topics

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01"]}
RESTARTS = 2


def test_no_reading_lost_across_mosquitto_restarts_with_a_shared_subscription(
    mq_kafka_stack: LocalStack, tmp_path: Path
) -> None:
    stack = mq_kafka_stack
    ep = stack.endpoints()
    run = DemoRun(
        run_id=f"shared{uuid.uuid4().hex[:6]}",
        run_dir=tmp_path / "run",
        w1_dir=tmp_path / "w1",
        sites={s: list(d) for s, d in SITES.items()},
        duration_s=3600.0,
    )
    topics = kafka_topics(run.kafka_prefix)
    gateway, _processor = pipeline_services(
        run,
        ep,
        # The gateway comes back after the devices (its supervisor is slower, or
        # it is one of many): a window in which the broker has no subscriber.
        gateway_overrides={
            "mqtt": {"share_group": "gateways", "reconnect_min_s": 4.0, "reconnect_max_s": 4.0}
        },
    )
    gateway.start()
    fleet = DemoFleet(
        steady_plan(SITES),
        run_dir=run.run_dir,
        w1_dir=run.w1_dir,
        mqtt=ep["mosquitto"],
        run_id=run.run_id,
        interval_s=0.25,
        mqtt_options={"reconnect_min_s": 0.5, "reconnect_max_s": 1.0},
    )
    stopped = False
    try:
        asyncio.run(wait_topics(ep["kafka"]["bootstrap"], topics.all(), gateway, 120.0))
        fleet.start()
        bootstrap = ep["kafka"]["bootstrap"]
        if not acc.wait_devices_in_topic(bootstrap, topics.telemetry, run.devices, timeout_s=120):
            pytest.fail(f"readings did not reach Kafka:\n{gateway.tail(40)}")
        for _ in range(RESTARTS):
            stack.stop("mosquitto")
            time.sleep(1.0)  # devices publish into a closed port: their outboxes keep it
            stack.start("mosquitto", timeout=120.0)
            time.sleep(10.0)
        assert gateway.alive, gateway.tail(40)
        fleet.stop()  # each agent flushes its outbox before exiting
        stopped = True
        paths = fleet.outbox_paths()
        allocated = acc.allocated_from_outboxes({d: paths[d] for d in run.devices})
        pending = acc.pending_in_outboxes({d: paths[d] for d in run.devices})
        missing = acc.wait_missing_in_topic(
            bootstrap, topics.telemetry, allocated, timeout_s=120, poll_s=3.0
        )
        total = sum(len(r) for r in allocated.values())
        assert total >= 200, allocated
        left = {d: sorted(s) for d, s in pending.items() if s}
        assert not missing, (
            f"{len(missing)} of {total} readings never reached Kafka, e.g. {missing[:20]}; "
            f"still in the outboxes: {left}"
        )
    finally:
        if not stopped:
            fleet.stop()
        gateway.stop()
