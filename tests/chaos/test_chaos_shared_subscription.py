"""Mosquitto restarts under a gateway on a *shared* subscription: nothing is lost.

Mosquitto 2.0.11 (Debian 12) does not restore a persistent session's shared
subscription after a restart. Until the gateway subscribes again the broker
has no subscriber for the devices' readings: it acknowledges each with
PUBACK reason 16 "No matching subscribers" and drops it. The edge agent keeps
such a reading and sends it again (``mqtt.resend_unrouted``, on by default),
so the gateway's Kafka topic must end up holding every seq the agents
allocated. The gateway reconnects 4 s apart and the devices within 1 s, so
each restart opens that window (measured with ``resend_unrouted = false``: 96
of 315 readings lost; with a plain, non-shared subscription: none).

The faults are proven, not assumed: at each restart Mosquitto's port refused
connections once it was stopped, its log shows the SIGTERM save, it came
back under a new pid, and the edge agents (threads of this test) logged at
least one PUBACK with reason 16 ``event=publish_unrouted code=16``: the
window really opened and a publish really was refused. Private stack
(Mosquitto + Kafka) on its own ports; under a minute.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from telemetry_contract import kafka_topics
from testsupport.chaos import LogCount, chaos_fleet, chaos_run, port_refuses
from thermowatch import accounting as acc
from thermowatch.demo import pipeline_services, wait_topics

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01"]}
RESTARTS = 2
#: What an edge agent logs, once per refusal episode, when a PUBACK says 16.
UNROUTED = "event=publish_unrouted code=16"


def test_no_reading_lost_across_mosquitto_restarts_with_a_shared_subscription(
    mq_kafka_stack: LocalStack, tmp_path: Path
) -> None:
    stack = mq_kafka_stack
    ep = stack.endpoints()
    run = chaos_run(tmp_path, "shared", SITES)
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
    fleet = chaos_fleet(run, ep["mosquitto"], interval_s=0.25)
    stopped = False
    try:
        asyncio.run(wait_topics(ep["kafka"], topics.all(), gateway, 120.0))
        fleet.start()
        kafka = ep["kafka"]
        if not acc.wait_devices_in_topic(kafka, topics.telemetry, run.devices, timeout_s=120):
            pytest.fail(f"readings did not reach Kafka:\n{gateway.tail(40)}")
        log_file = stack.log_file("mosquitto")
        for i in range(RESTARTS):
            old_pid, log_mark = stack.service_pid("mosquitto"), log_file.stat().st_size
            with LogCount("edge_agent.publisher", UNROUTED) as unrouted:
                stack.stop("mosquitto")
                refused = port_refuses(ep["mosquitto"]["host"], int(ep["mosquitto"]["port"]))
                time.sleep(1.0)  # devices publish into a closed port: their outboxes keep it
                stack.start("mosquitto", timeout=120.0)
                time.sleep(10.0)
            with open(log_file, "rb") as fh:
                fh.seek(log_mark)
                saved = b"Saving in-memory database" in fh.read()
            new_pid = stack.service_pid("mosquitto")
            assert refused and saved and new_pid not in (None, old_pid), (
                f"restart {i}: port refused={refused}, saved={saved}, pid {old_pid}->{new_pid}"
            )
            assert unrouted.count >= 1, (
                f"restart {i}: no publish was refused with PUBACK 16, the window never opened"
            )
            print(f"restart {i}: {unrouted.count} refusal episodes, e.g. {unrouted.messages[:1]}")
        assert gateway.alive, gateway.tail(40)
        fleet.stop()  # each agent flushes its outbox before exiting
        stopped = True
        paths = fleet.outbox_paths()
        allocated = acc.allocated_from_outboxes({d: paths[d] for d in run.devices})
        pending = acc.pending_in_outboxes({d: paths[d] for d in run.devices})
        missing = acc.wait_missing_in_topic(
            kafka, topics.telemetry, allocated, timeout_s=120, poll_s=3.0
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
