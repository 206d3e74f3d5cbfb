"""Test helpers that ship with the package: an SSE client and a private live pipeline.

Used by the integration and browser tests (and handy for a manual look);
nothing here runs at import.

* :class:`SseClient` reads a ``text/event-stream`` over a plain asyncio
  connection and timestamps each event when it arrives.
* :func:`live_pipeline` runs the real processor and the web view on a unique
  Kafka topic prefix and index prefix of a running stack, and removes both
  afterwards.
* :func:`headless_chromium` drives Debian's Chromium with selenium (the
  browser tests; ``make deps`` installs both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from stagekit.kafka import KafkaTarget, connection_keys, settings_for
from telemetry_contract import (
    DeviceStatus,
    EdgeAlert,
    Gap,
    KafkaTopics,
    Message,
    Reading,
    encode,
    kafka_key,
    kafka_topics,
)
from thermowatch.web.app import WebApp
from thermowatch.web.config import HttpSettings, KafkaSettings, SearchSettings, WebConfig

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "LivePipeline",
    "SseClient",
    "SseEvent",
    "browser_missing",
    "get_json",
    "headless_chromium",
    "live_pipeline",
]

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")


def browser_missing() -> list[str]:
    """What the browser tests need and this machine lacks (empty: nothing)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install 'thermowatch[dev]')")
    return missing


@contextlib.contextmanager
def headless_chromium(window: str = "1280,900") -> Iterator[Any]:
    """A selenium driver of headless Chromium (quit on exit); see :func:`browser_missing`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        f"--window-size={window}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event; ``received`` is ``time.time()`` on arrival."""

    event: str
    data: Any
    received: float


class SseClient:
    """A minimal event-stream reader: ``await connect()``, ``await next()``, ``await close()``."""

    def __init__(self, url: str) -> None:
        self._url = urlsplit(url)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.status = 0

    async def connect(self) -> None:
        """Open the stream and read the response head (``status`` holds the code)."""
        host, port = self._url.hostname or "127.0.0.1", self._url.port or 80
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._writer.write(
            f"GET {self._url.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await self._writer.drain()
        self.status = int((await self._reader.readline()).split()[1])
        while (await self._reader.readline()) not in (b"\r\n", b""):
            pass

    async def next(self, within: float = 30.0) -> SseEvent:
        """The next event (comments and ``retry`` lines skipped)."""
        assert self._reader is not None
        return await asyncio.wait_for(self._next(self._reader), within)

    async def _next(self, reader: asyncio.StreamReader) -> SseEvent:
        event, data = "message", ""
        while True:
            line = (await reader.readline()).decode()
            if not line:
                raise ConnectionError("event stream closed")
            line = line.rstrip("\n")
            if line == "":
                if data:
                    return SseEvent(event, json.loads(data), time.time())
                event = "message"
                continue
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def get_json(url: str) -> tuple[int, Any]:
    """``GET url`` with a plain asyncio connection: (status, decoded JSON body)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body.strip() else None


@dataclass(slots=True)
class LivePipeline:
    """A private processor + web view on a running stack."""

    prefix: str
    topics: KafkaTopics
    #: The stack's Kafka endpoint (or settings, or a plaintext ``host:port``).
    kafka: KafkaTarget
    #: The stack's search endpoint (``LocalStack.endpoints()["search"]``).
    search: Mapping[str, Any]
    processor: Any
    web: WebApp
    producer: Any

    @property
    def url(self) -> str:
        """Base URL of the web view."""
        return self.web.url

    def web_config(self, **kafka: Any) -> WebConfig:
        """A web config for this pipeline's prefixes (port 0)."""
        return web_config(self.prefix, self.kafka, self.search, **kafka)

    async def send(self, messages: Sequence[Message]) -> None:
        """Produce messages the way the gateway does (topic by type, keyed by device)."""
        futures = [
            await self.producer.send(
                _topic_for(m, self.topics),
                encode(m),
                key=kafka_key(m.device_id),  # type: ignore[union-attr]
            )
            for m in messages
        ]
        await asyncio.gather(*futures)


def web_config(
    prefix: str, kafka: KafkaTarget, search: Mapping[str, Any], **keys: Any
) -> WebConfig:
    """Web view settings for a private pipeline (port 0, quick reloads).

    Kafka as user ``web``; ``search`` is the stack's search endpoint, where the
    view logs in as ``admin``, since the ``web`` user reads only ``thermowatch-*``
    and tests use their own prefix.
    """
    return WebConfig(
        http=HttpSettings(port=0, push_interval_s=0.1, heartbeat_s=5.0),
        search=SearchSettings.from_endpoint(
            search, "admin", index_prefix=f"{prefix}-", refresh_s=1.0
        ),
        kafka=msgspec.convert(
            {
                **connection_keys(kafka, "web"),
                "topic_prefix": prefix,
                "client_id": f"{prefix}-web",
                "retry_s": 1.0,
                **keys,
            },
            KafkaSettings,
        ),
    )


def _topic_for(msg: Message, topics: KafkaTopics) -> str:
    if isinstance(msg, (Reading, Gap)):
        return topics.telemetry
    if isinstance(msg, EdgeAlert):
        return topics.edge_alerts
    assert isinstance(msg, DeviceStatus)
    return topics.status


@contextlib.asynccontextmanager
async def live_pipeline(
    kafka: KafkaTarget,
    search_endpoint: Mapping[str, Any],
    *,
    threshold_high_c: float = 8.0,
    critical_high_c: float | None = None,
) -> AsyncIterator[LivePipeline]:
    """Run the real processor and the web view on unique prefixes; clean up after.

    ``search_endpoint`` is the stack's (both log in as ``admin``: unique prefixes).
    """
    from aiokafka import AIOKafkaProducer

    from cloud_processor.config import (
        AlertSettings,
        ProcessorConfig,
        RulesConfig,
    )
    from cloud_processor.config import HttpSettings as ProcessorHttp
    from cloud_processor.config import KafkaSettings as ProcessorKafka
    from cloud_processor.config import SearchSettings as ProcessorSearch
    from cloud_processor.factory import build_processor
    from stagekit.kafka import create_topics, delete_topics
    from stagekit.search import SearchSettings as Server
    from stagekit.search import api as search
    from stagekit.search import make_backend
    from stagekit.search.api import SearchError
    from stagekit.search.indices import INDEXES, IndexNames

    prefix = f"w{uuid.uuid4().hex[:8]}"
    topics = kafka_topics(prefix)
    await create_topics(kafka, topics.all(), partitions=2)
    pcfg = ProcessorConfig(
        kafka=msgspec.convert(
            {
                **connection_keys(kafka, "processor"),
                "topic_prefix": prefix,
                "group_id": f"{prefix}-processor",
                "client_id": f"{prefix}-processor",
                "commit_interval_s": 1.0,
                "poll_timeout_ms": 100,
                "session_timeout_ms": 10_000,
            },
            ProcessorKafka,
        ),
        search=ProcessorSearch.from_endpoint(
            search_endpoint,
            "admin",
            index_prefix=f"{prefix}-",
            refresh_interval="1s",
            timeout_s=10.0,
        ),
        rules=RulesConfig(
            threshold_high_c=threshold_high_c,
            critical_high_c=critical_high_c,
            hysteresis_c=1.0,
            min_duration_s=0,
        ),
        alerts=AlertSettings(max_event_age_s=900),
        http=ProcessorHttp(enabled=False),
    )
    processor = build_processor(pcfg)
    web = WebApp(web_config(prefix, kafka, search_endpoint))
    producer = AIOKafkaProducer(**settings_for(kafka).client_options(), acks="all", linger_ms=1)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await processor.start()
        task = asyncio.create_task(processor.run(stop))
        await producer.start()
        await web.start()
        yield LivePipeline(prefix, topics, kafka, search_endpoint, processor, web, producer)
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 60)
        await web.close()
        await producer.stop()
        await processor.close()
        cleanup = make_backend(Server.from_endpoint(search_endpoint, "admin"))
        try:
            with contextlib.suppress(SearchError):
                await cleanup.perform(search.delete_index(f"{prefix}-*"))
            for spec in INDEXES:
                with contextlib.suppress(SearchError):
                    await cleanup.perform(
                        search.Request(
                            "DELETE", f"/_index_template/{IndexNames(f'{prefix}-').base(spec)}"
                        )
                    )
        finally:
            await cleanup.close()
        await delete_topics(kafka, topics.all())
