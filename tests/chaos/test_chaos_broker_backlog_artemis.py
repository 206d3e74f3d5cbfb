"""The broker-crash case of test_chaos_broker_backlog.py on the optional Artemis broker.

Same sequence (:func:`testsupport.broker_backlog.restart_with_backlog`): 30
devices at 10 readings/s, Kafka killed so that at least 5,000 acknowledged
readings wait in the broker for the gateway, then the broker is killed
(SIGKILL), started again, Kafka started again, and every reading of the run
must be in Kafka and stored exactly once.

Unlike the Mosquitto cases the edges run **without receipts**: each deletes a
reading from its outbox at the broker's PUBACK, so nothing but the broker
holds the backlog. Artemis writes a QoS 1 message to its journal and syncs
it before the PUBACK, so the crash loses none of it (Mosquitto, which
acknowledges before it saves, lost all of them in this setting: see
docs/benchmarks.md). Private stack (Artemis, Kafka, OpenSearch); marker
``artemis`` (see pyproject.toml for what runs it).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from testsupport.broker_backlog import BrokerFault, restart_with_backlog

pytestmark = [pytest.mark.chaos, pytest.mark.artemis, pytest.mark.timeout(480)]

#: Used by the ``mq_kafka_stack`` fixture (conftest): the processor stores readings.
STACK_SERVICES = ["artemis", "kafka", "search"]


def test_artemis_crash_loses_no_acknowledged_reading_without_receipts(
    mq_kafka_stack: LocalStack, tmp_path: Path
) -> None:
    fault = BrokerFault(kill=True, broker="artemis", receipts=False)
    got = restart_with_backlog(mq_kafka_stack, tmp_path, fault, store=True)
    print(
        f"held={got.held} allocated={got.allocated} kafka_copies={got.kafka_copies} "
        f"left_in_outboxes={got.left_in_outboxes} broker_exit={got.broker_exit} "
        f"kafka_exit={got.kafka_exit} {got.kafka_down}\n  settled: {got.settled}\n"
        f"  final: {got.final}"
    )
    # The fault is proven first (pytest.fail, never an AssertionError).
    if got.held < fault.backlog or got.broker_exit != -signal.SIGKILL:
        pytest.fail(
            f"no crash with a backlog: held {got.held}, broker exit {got.broker_exit}\n"
            f"{got.log_tail}",
            pytrace=False,
        )
    if got.kafka_exit != -signal.SIGKILL or not (got.kafka_down and got.kafka_down.always_refused):
        pytest.fail(f"Kafka was not down throughout: {got.kafka_down}", pytrace=False)
    if not got.services_alive:
        pytest.fail(f"a pipeline service exited:\n{got.log_tail}", pytrace=False)
    # Without receipts an edge keeps nothing it had a PUBACK for: whatever the
    # broker lost would be lost for good.
    assert not got.settled, f"after the restart: {got.settled}"
    assert not got.final, f"after the fleet stopped: {got.final}"
    assert not got.not_stored, f"{len(got.not_stored)} never stored: {got.not_stored[:10]}"
    assert not got.stored_twice, f"stored twice: {got.stored_twice[:10]}"
