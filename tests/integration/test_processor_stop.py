"""The processor while a neighbour is down: at start it retries, one log line
per retry and no traceback; it stops within 5 s of SIGTERM in every state
(at run time with the search server down too, losing nothing).

Real processes (``python -m cloud_processor run``) against the shared stack;
the neighbour that is down is a closed local port, or a port that accepts
connections and never answers (a hung server: the client's request blocks
for its whole timeout, which must not hold the exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from cloud_processor.app import STOP_GRACE_S
from cloud_processor.testing import TcpProxy
from stagekit.kafka import KafkaTarget, create_topics, delete_topics, settings_for
from stagekit.search import ThreadedBackend
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import Reading, encode, kafka_key, kafka_topics
from testsupport.kafka_config import kafka_toml
from testsupport.search import admin_backend, login_toml, proxied_url

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
#: The "done when" of the issue: stopped within 5 s of SIGTERM.
STOP_WITHIN_S = 5.0
#: Lines a start-up may log besides its retries (search connected, no ILM,
#: alerts restored, search unavailable, the signal, stopped, a client's first error).
OTHER_LINES = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port whose kernel accepts connections that nobody ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


class Run:
    """One ``processor run`` with its own prefix, config file and log."""

    def __init__(self, stack: dict[str, Any], tmp: Path) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.topics = kafka_topics(self.prefix)
        self.kafka: KafkaTarget = stack["kafka"]
        self.search: dict[str, Any] = stack["search"]
        self.search_url: str = stack["search"]["url"]
        self.names = IndexNames(f"{self.prefix}-")
        self.config = tmp / "processor.toml"
        self.log = tmp / "processor.log"
        self.http_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, kafka: KafkaTarget, search_url: str) -> None:
        self.config.write_text(
            f"""
[kafka]
{kafka_toml(kafka, "processor")}
topic_prefix = "{self.prefix}"
group_id = "{self.prefix}-processor"
session_timeout_ms = 6000

[search]
{login_toml(self.search, search_url)}
index_prefix = "{self.names.prefix}"
retry_initial_s = 0.2
retry_max_s = 1.0

[http]
enabled = true
port = {self.http_port}
""",
            encoding="utf-8",
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloud_processor", "run", "-c", str(self.config)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def retries(self, event: str) -> int:
        return sum(f"event={event} " in line for line in self.lines())

    async def wait_for_retries(self, event: str, n: int, within: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.retries(event) < n:
            assert self.proc is not None and self.proc.poll() is None, "\n".join(self.lines())
            assert loop.time() < deadline, "\n".join(self.lines())
            await asyncio.sleep(0.1)

    async def ready(self) -> bool:
        def probe() -> bool:
            url = f"http://127.0.0.1:{self.http_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return bool(answer.status == 200)
            except (OSError, urllib.error.URLError):
                return False

        return await asyncio.to_thread(probe)

    async def stop_within(self, seconds: float) -> int:
        """SIGTERM; the exit status, failing unless the process is gone within ``seconds``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {seconds} s after SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def assert_one_line_per_retry(self, event: str) -> None:
        text = "\n".join(self.lines())
        assert "Traceback" not in text, text
        retries = self.retries(event)
        assert retries >= 1, text
        assert len(self.lines()) <= retries + OTHER_LINES, text


@pytest.fixture
async def run(stack: dict[str, Any], tmp_path: Path) -> AsyncIterator[Run]:
    r = Run(stack, tmp_path)
    await create_topics(
        r.kafka, [r.topics.telemetry, r.topics.edge_alerts, r.topics.status], partitions=1
    )
    yield r
    r.kill()
    backend = admin_backend(r.search)
    with contextlib.suppress(SearchError):
        await backend.perform(search.delete_index(f"{r.names.prefix}*"))
    for spec in INDEXES:
        with contextlib.suppress(SearchError):
            await backend.perform(
                search.Request("DELETE", f"/_index_template/{r.names.base(spec)}")
            )
    await backend.close()
    await delete_topics(r.kafka, r.topics.all())


async def test_search_down_at_start_stops_on_sigterm(run: Run) -> None:
    run.start(kafka=run.kafka, search_url=f"http://127.0.0.1:{_free_port()}")
    await run.wait_for_retries("search_retry", 3)
    assert await run.stop_within(STOP_WITHIN_S) == 0
    run.assert_one_line_per_retry("search_retry")


async def test_hung_search_server_at_start_stops_on_sigterm(run: Run, hung_port: int) -> None:
    """The first request blocks in its thread (search.timeout_s, 30 s by
    default): SIGTERM does not wait for it."""
    run.start(kafka=run.kafka, search_url=f"http://127.0.0.1:{hung_port}")
    await asyncio.sleep(2)  # the request is in flight, nothing answers
    assert run.proc is not None and run.proc.poll() is None
    assert await run.stop_within(STOP_WITHIN_S) == 0
    assert "Traceback" not in "\n".join(run.lines())


async def test_kafka_down_at_start_retries_and_stops_on_sigterm(run: Run) -> None:
    # The stack's Kafka settings (SASL_SSL) on a port where nothing listens.
    run.start(
        kafka={**run.kafka, "bootstrap": f"127.0.0.1:{_free_port()}"}, search_url=run.search_url
    )
    await run.wait_for_retries("kafka_retry", 3)  # fails if the process exits
    assert await run.stop_within(STOP_WITHIN_S) == 0
    run.assert_one_line_per_retry("kafka_retry")


async def test_kafka_reachable_after_start_proceeds_to_ready(run: Run) -> None:
    host, port = settings_for(run.kafka).servers[0].rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    await proxy.cut()  # the address exists, nothing listens yet
    try:
        run.start(
            kafka={**run.kafka, "bootstrap": f"127.0.0.1:{proxy.port}"}, search_url=run.search_url
        )
        await run.wait_for_retries("kafka_retry", 2)
        assert not await run.ready()
        await proxy.restore()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while not await run.ready():
            assert run.proc is not None and run.proc.poll() is None, "\n".join(run.lines())
            assert loop.time() < deadline, "\n".join(run.lines())
            await asyncio.sleep(0.5)
        assert await run.stop_within(30) == 0
    finally:
        run.kill()
        await proxy.close()
    assert "Traceback" not in "\n".join(run.lines())


async def _produce(kafka: KafkaTarget, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(**settings_for(kafka).client_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        start_ms = 1_790_000_000_000
        for i in range(n):
            r = Reading(
                device_id="r-1",
                sensor_id="host",
                site="s",
                seq=i + 1,
                ts=start_ms + i * 1000,
                temp_c=4.0,
            )
            await producer.send(topic, encode(r), key=kafka_key(r.device_id))
        await producer.flush()
    finally:
        await producer.stop()


async def _stored(backend: ThreadedBackend, pattern: str) -> int:
    try:
        await backend.perform(search.refresh(pattern))
        answer = await backend.perform(
            search.search(pattern, {"size": 0, "track_total_hits": True})
        )
    except SearchError:
        return -1
    return int(answer["hits"]["total"]["value"])


async def test_search_down_at_run_time_stops_on_sigterm_losing_nothing(run: Run) -> None:
    """Writes retrying for ever do not hold the stop: after STOP_GRACE_S they
    are abandoned uncommitted, and the next start stores every record once."""
    host, port = run.search_url.rsplit("/", 1)[1].rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    backend = admin_backend(run.search)
    try:
        run.start(kafka=run.kafka, search_url=proxied_url(run.search, proxy.port))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await run.ready():
            assert loop.time() < deadline, "\n".join(run.lines())
            await asyncio.sleep(0.5)
        await proxy.cut()
        await _produce(run.kafka, run.topics.telemetry, 50)
        await run.wait_for_retries("search_retry", 2)  # a bulk write is retrying
        assert await run.stop_within(STOP_GRACE_S + 1) == 0
        assert "event=stop_cut_short" in "\n".join(run.lines())
        await proxy.restore()
        run.start(kafka=run.kafka, search_url=proxied_url(run.search, proxy.port))
        deadline = loop.time() + 90
        while await _stored(backend, run.names.readings_pattern) < 50:
            assert loop.time() < deadline, "\n".join(run.lines())
            await asyncio.sleep(0.5)
        assert await _stored(backend, run.names.readings_pattern) == 50
        assert await run.stop_within(30) == 0
    finally:
        run.kill()
        await proxy.close()
        await backend.close()
