"""Prometheus metrics and the ``/metrics``, ``/healthz``, ``/readyz`` HTTP endpoint.

Each :class:`Metrics` owns its registry, so several processors (tests) can
live in one interpreter. ``/healthz`` answers 200 while the run loop is alive;
``/readyz`` answers 200 only when the search server answered the last request
and the consumer has joined its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["HealthServer", "Metrics"]

log = logging.getLogger(__name__)


class Metrics:
    """The processor's metrics (names start with ``thermowatch_processor_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        p = "thermowatch_processor_"
        r = self.registry
        self.consumer_lag = Gauge(
            p + "consumer_lag",
            "Records behind the partition end.",
            ["topic", "partition"],
            registry=r,
        )
        self.records = Counter(
            p + "records_total", "Kafka records consumed, by message type.", ["type"], registry=r
        )
        self.invalid = Counter(
            p + "invalid_records_total", "Records that broke the contract.", registry=r
        )
        self.docs = Counter(
            p + "documents_total",
            "Documents written, by index kind and result.",
            ["index", "result"],
            registry=r,
        )
        self.bulk_latency = Histogram(
            p + "bulk_latency_seconds",
            "Latency of one bulk request.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.alerts = Counter(
            p + "alerts_total",
            "Alert changes, by change and rule.",
            ["change", "rule"],
            registry=r,
        )
        self.active_alerts = Gauge(p + "active_alerts", "Alerts currently open.", registry=r)
        self.commits = Counter(p + "commits_total", "Offset commits.", registry=r)
        self.search_up = Gauge(p + "search_up", "1 when the search server answers.", registry=r)
        self.webhook = Counter(
            p + "webhook_total", "Webhook deliveries by result.", ["result"], registry=r
        )

    def render(self) -> bytes:
        """Text exposition format."""
        return generate_latest(self.registry)


class HealthServer:
    """A minimal asyncio HTTP server for metrics and probes."""

    def __init__(self, metrics: Metrics, ready: Callable[[], bool], host: str, port: int) -> None:
        self._metrics = metrics
        self._ready = ready
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("event=http_listening host=%s port=%d", self._host, self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, ctype, body = "200 OK", "text/plain; version=0.0.4", self._metrics.render()
            elif path == "/healthz":
                status, ctype, body = "200 OK", "text/plain", b"ok\n"
            elif path == "/readyz":
                ok = self._ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", b"ready\n" if ok else b"not ready\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
