"""Mosquitto stopped while it holds a backlog of 5,000 readings for the gateway.

The sequence is :func:`testsupport.broker_backlog.restart_with_backlog`: 30
devices at 10 readings/s; Kafka killed (SIGKILL), so the gateways stop
acknowledging and, past their in-flight window (20 here), the broker queues
the readings in their persistent session; an observer subscribed beside them
counts what the broker routed meanwhile. Then Mosquitto is stopped, started
again, Kafka started again, and once the accounting is stable every reading
of the run must be in Kafka -- and stored in the search server exactly once.
A reading that is missing is reported as *late* (still in its device's
outbox: the edge sends it again) or *lost* (gone from the outbox, never
delivered).

* ``restart``: SIGTERM; Mosquitto saves its database and restores the
  session with its queue -- nothing may be lost, shared subscription or not.
* ``crash``: SIGKILL; Mosquitto acknowledges QoS 1 before anything is on
  disk, so what it held since its last save is gone. ``crash-wiped``: the
  broker saved its database (SIGUSR1) and then its host lost the disk: the
  persistence file is deleted before the restart, the gateways' sessions
  with it. ``crash-shared``: two gateways on a shared subscription.

  Before receipts this was a known hole: the edge deleted a reading at the
  broker's PUBACK, so only the broker had the backlog, and a crash lost it
  (about 5,100 of 5,100 held). Now the edge keeps every reading until the
  gateway's receipt says Kafka has it, and sends again what no receipt
  covered after it reconnects. The fault is proven before any loss is
  counted (a backlog of 5,000 at the broker, Kafka's port refused
  throughout, Mosquitto's exit status -9 and no final save, the wiped
  file), with ``pytest.fail``.

The edges wait :data:`~testsupport.broker_backlog.RECEIPT_TIMEOUT_S` for a
receipt, and "stable" means nothing changed for longer than that, so a
reading an edge still holds is sent again before it is called late. Nothing
assumes that an outbox empties at the broker's PUBACK. Private stack
(Mosquitto, Kafka, OpenSearch); about 40 s for the restart, 90 s per crash.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from testsupport.broker_backlog import BacklogResult, BrokerFault, restart_with_backlog

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(480)]

#: Used by the ``mq_kafka_stack`` fixture (conftest): the processor stores readings.
STACK_SERVICES = ["mosquitto", "kafka", "search"]


CASES = [
    pytest.param(BrokerFault(kill=False, share_group="gateways", backlog=2000), id="restart"),
    pytest.param(BrokerFault(kill=True), id="crash"),
    pytest.param(BrokerFault(kill=True, wipe=True), id="crash-wiped"),
    pytest.param(
        BrokerFault(kill=True, gateways=2, share_group="gateways"),
        id="crash-shared",
    ),
]


def prove_the_fault(got: BacklogResult) -> None:
    """The fault happened as the case says (``pytest.fail``, never AssertionError)."""
    fault = got.fault
    problems = []
    if got.held < fault.backlog:
        problems.append(f"the broker held only {got.held} readings, not {fault.backlog}")
    if got.kafka_exit != -signal.SIGKILL:
        problems.append(f"Kafka's exit status was {got.kafka_exit}, not -9")
    if got.kafka_down is None or not got.kafka_down.always_refused:
        problems.append(f"Kafka's port answered while it was down: {got.kafka_down}")
    if fault.kill and (got.broker_exit != -signal.SIGKILL or got.broker_saved):
        problems.append(
            f"Mosquitto did not crash: exit {got.broker_exit}, final save {got.broker_saved}"
        )
    if not fault.kill and not got.broker_saved:
        problems.append("Mosquitto did not save its database on SIGTERM")
    if fault.wipe and (got.persistence_files or got.wiped_bytes == 0):
        problems.append(
            f"the persistence was not wiped: {got.wiped_bytes} bytes deleted, "
            f"left {got.persistence_files}"
        )
    if problems:
        pytest.fail("; ".join(problems) + f"\n{got.log_tail}", pytrace=False)


@pytest.mark.parametrize("fault", CASES)
def test_every_reading_is_stored_once_after_the_broker_stops_with_a_backlog(
    mq_kafka_stack: LocalStack, tmp_path: Path, fault: BrokerFault
) -> None:
    got = restart_with_backlog(mq_kafka_stack, tmp_path, fault, store=True)
    print(
        f"held={got.held} allocated={got.allocated} kafka_copies={got.kafka_copies} "
        f"left_in_outboxes={got.left_in_outboxes} wiped_bytes={got.wiped_bytes} "
        f"broker_exit={got.broker_exit} kafka_exit={got.kafka_exit} {got.kafka_down}\n"
        f"  settled: {got.settled}\n  final: {got.final}, of which allocated after the "
        f"broker's restart: {got.lost_after_restart}"
    )
    prove_the_fault(got)
    if not got.services_alive:  # a crashed stage is no expected failure either
        pytest.fail(f"a pipeline service exited:\n{got.log_tail}", pytrace=False)
    # Once nothing moved any more, with the fleet still running (so an edge could
    # still send what it kept): late or lost, either fails.
    assert not got.settled, f"after the restart: {got.settled}"
    assert not got.final, f"after the fleet stopped: {got.final}"
    assert not got.not_stored, f"{len(got.not_stored)} never stored: {got.not_stored[:10]}"
    assert not got.stored_twice, f"stored twice: {got.stored_twice[:10]}"
