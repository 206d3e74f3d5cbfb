"""The web view's HTTP server: the page, a JSON snapshot and server-sent events.

Built on :mod:`stagekit.httpserver` (one hand-written server for the stages'
probes and this page: a few routes and one event stream do not justify a web
framework). Routes: ``/`` (the page) and its ``/app.js`` and ``/app.css``,
``/api/state`` (the whole view as JSON), ``/events`` (``text/event-stream``:
a ``snapshot`` event, then ``delta`` events and a comment line every
``heartbeat_s``) and ``/healthz``.

Security basics, because the page has no login: it binds to loopback by
default; a request whose ``Host`` is not this server's loopback name is
refused when bound to loopback (DNS rebinding, :func:`host_allowed`); every
response forbids framing and sniffing, and the Content-Security-Policy allows
only this origin's own script and style (the page builds its DOM with
``textContent``, never ``innerHTML``). Event streams are limited to
``max_clients``; a client too slow to take its events is disconnected (the
browser reconnects and gets a fresh snapshot).

>>> sse("delta", b'{"a":1}')
b'event: delta\\ndata: {"a":1}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from stagekit.httpserver import HttpServer, Request, host_allowed

__all__ = ["Asset", "WebServer", "host_allowed", "sse"]

log = logging.getLogger(__name__)

_SECURITY_HEADERS: Final = (
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'\r\n"
)
#: Every response: never cached, never framed, never sniffed.
_HEADERS: Final = "Cache-Control: no-store\r\n" + _SECURITY_HEADERS
#: Events queued for one stream before it counts as too slow.
_QUEUE: Final = 64


def sse(event: str, data: bytes) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file: content type and bytes."""

    content_type: str
    body: bytes


@dataclass(slots=True, eq=False)
class _Client:
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE)
    )


class WebServer(HttpServer):
    """Serves the routes until :meth:`close`; :meth:`publish` feeds the streams."""

    name = "web"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        assets: Mapping[str, Asset],
        state: Callable[[], bytes],
        health: Callable[[], bytes],
        max_clients: int = 32,
        heartbeat_s: float = 15.0,
    ) -> None:
        super().__init__(host, port, headers=_HEADERS)
        self._assets = assets
        self._state = state
        self._health = health
        self._max_clients = max_clients
        self._heartbeat = heartbeat_s
        self._clients: set[_Client] = set()

    @property
    def clients(self) -> int:
        """Open event streams."""
        return len(self._clients)

    def closing(self) -> None:
        """End every stream (their handlers stop at the sentinel)."""
        for client in list(self._clients):
            _offer(client, None)

    def publish(self, event: str, data: bytes) -> None:
        """Send an event to every open stream."""
        message = sse(event, data)
        for client in list(self._clients):
            if not _offer(client, message):
                self._clients.discard(client)  # its handler ends at the sentinel
                log.warning("event=web_client_too_slow action=disconnect")

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Route one request."""
        method, path = request.method, request.path
        if method not in ("GET", "HEAD"):
            await self.respond(writer, 405, "text/plain", b"method not allowed\n")
            return
        if not host_allowed(request.host, bind_host=self.host):
            log.warning("event=web_host_refused host=%r", request.host[:100])
            await self.respond(writer, 403, "text/plain", b"forbidden host\n")
            return
        head = method == "HEAD"
        if path == "/events" and not head:
            await self._stream(reader, writer)
        elif path == "/api/state":
            await self.respond(writer, 200, "application/json", self._state(), head=head)
        elif path == "/healthz":
            await self.respond(writer, 200, "application/json", self._health(), head=head)
        elif (asset := self._assets.get("/index.html" if path == "/" else path)) is not None:
            await self.respond(writer, 200, asset.content_type, asset.body, head=head)
        else:
            await self.respond(writer, 404, "text/plain", b"not found\n", head=head)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self._max_clients or not self.serving:
            await self.respond(writer, 503, "text/plain", b"too many event streams\n")
            return
        client = _Client()
        # Snapshot and registration with no await in between: no delta is missed.
        first = b"retry: 2000\n\n" + sse("snapshot", self._state())
        self._clients.add(client)
        log.info("event=web_stream_opened clients=%d", len(self._clients))
        eof = asyncio.create_task(reader.read(1))  # the browser closing the stream
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n"
                + _SECURITY_HEADERS.encode()
                + b"\r\n"
                + first
            )
            await writer.drain()
            while True:
                get = asyncio.create_task(client.queue.get())
                done, _ = await asyncio.wait(
                    {get, eof}, timeout=self._heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                if eof in done:
                    break
                if get in done:
                    message = get.result()
                    if message is None:
                        break
                    writer.write(message)
                else:
                    writer.write(b": ping\n\n")
                await writer.drain()
        finally:
            self._clients.discard(client)
            eof.cancel()
            with contextlib.suppress(BaseException):
                await eof
            log.info("event=web_stream_closed clients=%d", len(self._clients))


def _offer(client: _Client, message: bytes | None) -> bool:
    """Queue a message; a full queue ends the stream (False)."""
    try:
        client.queue.put_nowait(message)
        return True
    except asyncio.QueueFull:
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        return False
