"""The chaos tests' proofs of their faults (``testsupport.chaos``), checked without servers.

A proof that cannot fail proves nothing: each helper is shown to say "yes"
when the fault happened and "no" when it did not.
"""

from __future__ import annotations

import doctest
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import testsupport.broker_backlog
import testsupport.chaos
import testsupport.chaos_rig
from deploy.local.stack import LocalStack
from testsupport.chaos import LogCount, PortWatch, kill9, where_missing
from testsupport.chaos_rig import still_running, wait_for


@pytest.mark.parametrize(
    "module", [testsupport.chaos, testsupport.broker_backlog, testsupport.chaos_rig]
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0


def test_kill9_reports_the_sigkill_of_a_stack_service(tmp_path: Path) -> None:
    stack = LocalStack(stack_dir=tmp_path, mqtt_port=1)
    stack.run_dir.mkdir(parents=True)
    # A process whose command line carries the service's marker, as the stack starts it.
    # (Not ``sh -c "exec -a ..."``: Debian's /bin/sh is dash, which has no ``-a``,
    # so that process ended at once and the test depended on winning a race.)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mosquitto"])
    stack.service("mosquitto").process.pid_file.write_text(f"{proc.pid}\n")
    try:
        killed = kill9(stack, "mosquitto")
    finally:
        proc.kill()
        proc.wait()
    assert killed.pid == proc.pid and killed.exit_code == -signal.SIGKILL and killed.by_sigkill


def test_kill9_fails_when_the_service_is_not_running(tmp_path: Path) -> None:
    stack = LocalStack(stack_dir=tmp_path, mqtt_port=1)
    with pytest.raises(AssertionError, match="mosquitto is not running"):
        kill9(stack, "mosquitto")


def test_port_watch_sees_a_port_that_answers() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with PortWatch("127.0.0.1", server.getsockname()[1], every_s=0.01) as watch:
            pass
    assert not watch.always_refused and watch.tries >= 1


def test_port_watch_with_no_try_proves_nothing() -> None:
    assert not PortWatch("127.0.0.1", 9).always_refused


def test_log_count_counts_children_and_stops_counting_after_exit() -> None:
    child = logging.getLogger("test_chaos_support.parent.child")
    with LogCount("test_chaos_support.parent", "code=16") as seen:
        child.warning("event=publish_unrouted code=%d", 16)
        child.warning("event=publish_refused code=%d", 135)
    child.warning("event=publish_unrouted code=%d", 16)
    assert seen.count == 1 and seen.messages == ["event=publish_unrouted code=16"]


def test_a_missing_reading_still_in_its_outbox_is_late_else_lost(tmp_path: Path) -> None:
    from edge_agent.outbox import Outbox

    def reading(seq: int) -> tuple[str, bytes]:
        return "t/telemetry", b"r%d" % seq

    path = tmp_path / "o.db"
    with Outbox(path, device_id="d1", site="s1") as outbox:
        assert outbox.append_readings([reading] * 3, now_ms=1) == [0, 1, 2]
        first = outbox.next_batch(1)
        outbox.ack([first[0].id])  # the broker's PUBACK: seq 0 leaves the outbox
        outbox.flush_acks()
    where = where_missing([("d1", 1), ("d1", 0)], {"d1": path})
    assert where.lost == [("d1", 0)] and where.late == [("d1", 1)] and where
    assert not where_missing([], {"d1": path})
    assert "1 lost" in str(where) and "1 late" in str(where)


def test_wait_for_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(pytest.fail.Exception, match="waiting for the answer"):
        wait_for("the answer", lambda: [], timeout=0.05, every=0.01)


def test_still_running_names_what_a_stopped_stack_left_running(tmp_path: Path) -> None:
    stack = LocalStack(stack_dir=tmp_path, mqtt_port=1)
    assert still_running(stack.status()) == {}
    # A node of a clustered service still runs: named with its node.
    status = {"kafka": {"pid": None, "nodes": [{"id": 1, "pid": None}, {"id": 3, "pid": 42}]}}
    assert still_running(status) == {"kafka-3": 42}
