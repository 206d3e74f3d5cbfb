"""A tiny asyncio HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

Shared by the gateway and the processor. ``/healthz`` answers 200 while the
event loop runs (liveness); ``/readyz`` answers 200 only when the readiness
callback says the stage can do its work, 503 otherwise. Anything else is 404.
Requests are ``GET``/``HEAD`` only, one per connection.

Hand-written rather than prometheus-client's ``start_http_server``: that one
runs a thread and serves only the metrics, while orchestrators need the two
probes, answered from the stage's own event loop (a stuck loop must fail
liveness); a web framework would be a heavy dependency for three routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


class HealthServer:
    """Serves the endpoints until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self._host = host
        self._port = port
        self._render = render
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("event=http_listening host=%s port=%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    close = stop

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await asyncio.wait_for(self._respond(reader), timeout=5)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        try:
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request_line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # headers are not needed
        parts = request_line.decode("latin-1").split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            return 400, "text/plain", b"bad request\n"
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._render()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ok, detail = self._ready()
            return (200 if ok else 503), "text/plain", (detail + "\n").encode()
        return 404, "text/plain", b"not found\n"
