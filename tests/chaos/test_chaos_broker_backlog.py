"""Mosquitto stopped while it holds a backlog for the gateway.

Kafka is stopped under a running fleet, so the gateway stops acknowledging;
past its in-flight window (``receive_maximum``, cut to 20 here so that the
backlog waits in the broker rather than in the gateway's memory) the broker
queues the devices' readings in the gateway's persistent session. For the
devices those readings are delivered (they had their PUBACK): only the broker
has them. Then Mosquitto is stopped and started again, Kafka is started, and
every seq the agents allocated is looked up in the Kafka topic.

* SIGTERM (a restart): Mosquitto saves its database and restores the session
  with its queue — nothing may be lost, shared subscription or not.
* SIGKILL (a crash): Mosquitto acknowledges QoS 1 before anything is on disk,
  so what it held since its last autosave is gone. A known hole
  (gateway/README.md), kept here as a strict xfail: it starts failing the day
  an end-to-end receipt closes it.

The sequence is :func:`testsupport.broker_backlog.restart_with_backlog`;
``benchmarks/gateway/broker_restart_backlog.py`` runs it as an experiment
with more variants. Private stack (Mosquitto + Kafka); about 2 minutes for
both cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from testsupport.broker_backlog import restart_with_backlog

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


@pytest.mark.parametrize(
    "kill",
    [
        pytest.param(False, id="restart"),
        pytest.param(
            True,
            id="crash",
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,  # the losses; anything else fails the test
                reason="known hole: Mosquitto acknowledges QoS 1 before it is on disk; a "
                "crash loses what it held beyond the gateway's window (gateway/README.md)",
            ),
        ),
    ],
)
def test_the_backlog_held_for_the_gateway_survives_the_broker_stopping(
    mq_kafka_stack: LocalStack, tmp_path: Path, kill: bool
) -> None:
    got = restart_with_backlog(
        mq_kafka_stack,
        tmp_path,
        share_group="gateways",
        # 10 s at 30 readings/s: ~300 readings, 20 in the gateway's window, and
        # "held" undercounts by up to 64 per device (acked rows deleted in batches).
        backlog_s=10.0,
        kill=kill,
        receive_maximum=20,
        settle_s=20.0 if kill else 120.0,
    )
    if got.held < 30:
        pytest.fail(f"no backlog was built in the broker: {got}")
    assert got.missing == [], f"{len(got.missing)} readings lost: {got.missing[:10]}"
    assert got.left_in_outboxes == 0 and got.gateway_alive
