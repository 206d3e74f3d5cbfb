"""Proof that a chaos test's fault really happened, and where a missing reading is.

A chaos test that injects a fault and then finds nothing lost proves nothing
unless the fault happened as claimed: a "kill -9" that was a clean stop, a
"down" server that still answered, an "unrouted" publish the broker in fact
routed, a "replay" with nothing to replay. Each helper here turns one such
claim into something a test asserts:

* :func:`kill9` -- SIGKILL a service of a :class:`~deploy.local.stack.LocalStack`
  and collect its exit status (``-9``), so no clean shutdown ran;
* :class:`PortWatch` -- a thread that keeps trying a port while a service is
  meant to be down: every attempt must be refused;
* :class:`LogCount` -- counts log records of an in-process logger that
  carry a marker (the edge agents' ``event=publish_unrouted code=16``);
* :func:`committed_offsets` and :func:`readings_after` -- the consumer group's
  committed offsets and the readings past them: what a restarted processor
  must replay;
* :func:`where_missing` -- "late or lost": a missing reading still in its
  device's outbox will be sent again (late); one gone from there is lost.

And the two things every private-stack chaos test starts from:
:func:`chaos_run` (a demo run of its own) and :func:`chaos_fleet` (its fleet of
in-process edge agents, reconnecting within a second).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.stack import LocalStack
from stagekit.kafka import KafkaTarget, settings_for
from thermowatch.demo import DemoFleet, DemoRun, steady_plan

__all__ = [
    "Killed",
    "LogCount",
    "PortWatch",
    "WhereMissing",
    "chaos_fleet",
    "chaos_run",
    "committed_offsets",
    "kill9",
    "port_refuses",
    "readings_after",
    "where_missing",
]


def chaos_run(work: Path, name: str, sites: Mapping[str, Iterable[str]]) -> DemoRun:
    """A demo run of its own (topics, indices, group named after a fresh run id) in ``work``."""
    return DemoRun(
        run_id=f"{name}{uuid.uuid4().hex[:6]}",
        run_dir=work / "run",
        w1_dir=work / "w1",
        sites={s: list(d) for s, d in sites.items()},
        duration_s=3600.0,
    )


def chaos_fleet(
    run: DemoRun,
    mqtt: Mapping[str, Any],
    interval_s: float,
    mqtt_options: Mapping[str, Any] | None = None,
    outbox_options: Mapping[str, Any] | None = None,
    mqtt_ports: Mapping[str, int] | None = None,
) -> DemoFleet:
    """``run``'s fleet (steady, no scripted incident), reconnecting within 0.5-1 s;
    ``mqtt_ports`` sends some devices to another port (another broker node)."""
    return DemoFleet(
        steady_plan(run.sites),
        run_dir=run.run_dir,
        w1_dir=run.w1_dir,
        mqtt=mqtt,
        run_id=run.run_id,
        interval_s=interval_s,
        mqtt_ports=mqtt_ports,
        mqtt_options={"reconnect_min_s": 0.5, "reconnect_max_s": 1.0, **(mqtt_options or {})},
        outbox_options=outbox_options,
    )


def port_refuses(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connect to ``host:port`` is refused (nothing listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Killed:
    """A service process killed by :func:`kill9`."""

    name: str
    pid: int
    #: As ``subprocess`` reports it: ``-9`` for SIGKILL (None: not this process's child).
    exit_code: int | None

    @property
    def by_sigkill(self) -> bool:
        return self.exit_code == -signal.SIGKILL


def kill9(stack: LocalStack, name: str, timeout: float = 30.0, node: int | None = None) -> Killed:
    """SIGKILL the running service ``name`` of ``stack`` (its node ``node`` in the
    cluster profile); its exit status once it is gone.

    The stack spawns its services as children of the process that started
    them (detached into their own session, but still children), so the test
    that brought the stack up collects the status itself with ``waitpid``:
    ``-9`` proves that the process died of the signal, with no shutdown hook
    (Kafka's controlled shutdown, Mosquitto's final save) run. The stack's pid
    file is left alone; ``stack.start(name)`` finds it stale and starts anew.
    """
    pid = stack.service_pid(name, node)
    if pid is None:
        what = name if node is None else f"{name} node {node}"
        raise AssertionError(f"{what} is not running: nothing to kill")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # started by another process: wait as the stack does
            stack.node(name, node).process.wait_exit(pid, timeout)
            return Killed(name, pid, None)
        if done:
            return Killed(name, pid, os.waitstatus_to_exitcode(status))
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} pid {pid} still runs {timeout:.0f} s after SIGKILL")
        time.sleep(0.05)


class PortWatch:
    """Try ``host:port`` every ``every_s`` in a thread while a service is meant to be down.

    >>> with PortWatch("127.0.0.1", 9, every_s=0.01) as watch:  # port 9: nothing listens
    ...     time.sleep(0.05)
    >>> watch.always_refused, watch.tries > 1
    (True, True)
    """

    def __init__(self, host: str, port: int, every_s: float = 0.5) -> None:
        self.host, self.port, self.every_s = host, port, every_s
        #: One entry per attempt: True when refused.
        self.refused: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{port}", daemon=True)

    def start(self) -> None:
        """Start trying (right after the service was stopped)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop trying (right before the service is started again), with one last try."""
        if self._stop.is_set() or not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(10)
        self.refused.append(port_refuses(self.host, self.port))

    def __enter__(self) -> PortWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refused.append(port_refuses(self.host, self.port, timeout=self.every_s))
            self._stop.wait(self.every_s)

    @property
    def tries(self) -> int:
        return len(self.refused)

    @property
    def always_refused(self) -> bool:
        """Every attempt was refused (and there were some)."""
        return bool(self.refused) and all(self.refused)

    def __repr__(self) -> str:
        accepted = self.refused.count(False)
        return f"PortWatch({self.host}:{self.port}, tries={self.tries}, accepted={accepted})"


class LogCount(logging.Handler):
    """Counts the records of ``logger`` (and its children) whose message holds ``marker``.

    For in-process stages (the demo fleet's edge agents run as threads of the
    test): the test counts what the code logged instead of asking it.

    >>> log = logging.getLogger("doctest.logcount")
    >>> with LogCount("doctest.logcount", "event=x") as seen:
    ...     log.warning("event=x code=1")
    ...     log.warning("event=y")
    >>> seen.count
    1
    """

    def __init__(self, logger: str, marker: str) -> None:
        super().__init__(logging.DEBUG)
        self.marker = marker
        self.count = 0
        self.messages: list[str] = []
        self._logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.marker in message:
            self.count += 1
            self.messages.append(message)

    def __enter__(self) -> LogCount:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)


async def committed_offsets(kafka: KafkaTarget, group_id: str, topic: str) -> dict[int, int]:
    """``partition -> committed offset`` of ``group_id`` on ``topic`` (absent: none)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
    await admin.start()
    try:
        answer = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {
        tp.partition: int(om.offset)
        for tp, om in answer.items()
        if tp.topic == topic and om.offset >= 0
    }


async def readings_after(
    kafka: KafkaTarget, topic: str, starts: Mapping[int, int]
) -> set[tuple[str, int]]:
    """``(device_id, seq)`` of the readings of ``topic`` at or past ``starts`` (per
    partition; a partition not named is read from its beginning), up to the ends
    as of the call."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stagekit.kafka import partitions_of
    from thermowatch.accounting import reading_keys

    found = await partitions_of(kafka, [topic])
    tps = [TopicPartition(topic, p) for p in found.get(topic, [])]
    values: list[bytes] = []
    consumer = AIOKafkaConsumer(**settings_for(kafka).client_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        todo = set()
        for tp in tps:
            start = starts.get(tp.partition, 0)
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo.add(tp)
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                values.extend(r.value for r in records if r.value is not None)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return set(reading_keys(values))


@dataclass
class WhereMissing:
    """Readings an outbox allocated that are not where they should be, by hop."""

    #: Still in the device's outbox: the edge has it and sends it (again): late.
    late: list[tuple[str, int]] = field(default_factory=list)
    #: Gone from the outbox (the edge deleted it) and not delivered: lost.
    lost: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.late or self.lost)

    def __str__(self) -> str:
        return (
            f"{len(self.lost)} lost (gone from the outbox, never delivered), e.g. "
            f"{self.lost[:10]}; {len(self.late)} late (still in an outbox), e.g. {self.late[:10]}"
        )


def where_missing(missing: Iterable[tuple[str, int]], outboxes: Mapping[str, Path]) -> WhereMissing:
    """Split ``missing`` readings into late (still in an outbox) and lost (gone)."""
    from thermowatch.accounting import pending_in_outboxes

    missing = sorted(missing)
    pending = pending_in_outboxes({d: outboxes[d] for d in {d for d, _ in missing}})
    out = WhereMissing()
    for device, seq in missing:
        (out.late if seq in pending[device] else out.lost).append((device, seq))
    return out
