"""The web view's HTTP server: the page, a JSON snapshot and server-sent events.

Plain asyncio, like :mod:`stagekit.health`: four routes and one event
stream do not justify a web framework. Routes: ``/`` (the page) and its
``/app.js`` and ``/app.css``, ``/api/state`` (the whole view as JSON),
``/events`` (``text/event-stream``: a ``snapshot`` event, then ``delta`` events
and a comment line every ``heartbeat_s``) and ``/healthz``.

Security basics, because the page has no login: it binds to loopback by
default; a request whose ``Host`` is not this server's loopback name is
refused when bound to loopback (DNS rebinding); every response forbids
framing and sniffing, and the Content-Security-Policy allows only this
origin's own script and style (the page builds its DOM with ``textContent``,
never ``innerHTML``). Event streams are limited to ``max_clients``; a client
too slow to take its events is disconnected (the browser reconnects and gets
a fresh snapshot).

>>> sse("delta", b'{"a":1}')
b'event: delta\\ndata: {"a":1}\\n\\n'
>>> host_allowed("localhost:8088", bind_host="127.0.0.1")
True
>>> host_allowed("evil.example:8088", bind_host="127.0.0.1")
False
>>> host_allowed("evil.example", bind_host="0.0.0.0")
True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Asset", "WebServer", "host_allowed", "sse"]

log = logging.getLogger(__name__)

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_SECURITY_HEADERS: Final = (
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'\r\n"
)
_LOOPBACK: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Events queued for one stream before it counts as too slow.
_QUEUE: Final = 64


def sse(event: str, data: bytes) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def host_allowed(host: str, *, bind_host: str) -> bool:
    """Whether a request's ``Host`` header may be served.

    Bound to loopback, only loopback names are accepted, so a web page on
    another site cannot reach the view through a DNS name it controls.

    >>> host_allowed("[::1]:8088", bind_host="::1"), host_allowed("", bind_host="127.0.0.1")
    (True, False)
    """
    if bind_host not in _LOOPBACK:
        return True
    name = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return name.lower() in _LOOPBACK


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


class WebServer:
    """Serves the routes until :meth:`close`; :meth:`publish` feeds the streams."""

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
        self._host = host
        self._port = port
        self._assets = assets
        self._state = state
        self._health = health
        self._max_clients = max_clients
        self._heartbeat = heartbeat_s
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def clients(self) -> int:
        """Open event streams."""
        return len(self._clients)

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=16 * 1024
        )
        log.info("event=web_listening host=%s port=%d", self._host, self.port)

    async def close(self) -> None:
        """Stop serving, end every stream (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            _offer(client, None)
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def publish(self, event: str, data: bytes) -> None:
        """Send an event to every open stream."""
        message = sse(event, data)
        for client in list(self._clients):
            if not _offer(client, message):
                self._clients.discard(client)  # its handler ends at the sentinel
                log.warning("event=web_client_too_slow action=disconnect")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, host = await asyncio.wait_for(_read_request(reader), timeout=5)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            await _respond(writer, 400, "text/plain", b"bad request\n")
            return
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, "text/plain", b"method not allowed\n")
            return
        if not host_allowed(host, bind_host=self._host):
            log.warning("event=web_host_refused host=%r", host[:100])
            await _respond(writer, 403, "text/plain", b"forbidden host\n")
            return
        head = method == "HEAD"
        if path == "/events" and not head:
            await self._stream(reader, writer)
        elif path == "/api/state":
            await _respond(writer, 200, "application/json", self._state(), head=head)
        elif path == "/healthz":
            await _respond(writer, 200, "application/json", self._health(), head=head)
        elif (asset := self._assets.get("/index.html" if path == "/" else path)) is not None:
            await _respond(writer, 200, asset.content_type, asset.body, head=head)
        else:
            await _respond(writer, 404, "text/plain", b"not found\n", head=head)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self._max_clients or self._server is None:
            await _respond(writer, 503, "text/plain", b"too many event streams\n")
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


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """(method, path, host) of a request; headers other than Host are ignored."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) < 2:
        raise ValueError("bad request line")
    host = ""
    for _ in range(100):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "host":
            host = value.strip()
    else:
        raise ValueError("too many headers")
    return parts[0], parts[1].split("?", 1)[0], host


async def _respond(
    writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, *, head: bool = False
) -> None:
    header = (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n" + _SECURITY_HEADERS + "\r\n"
    )
    writer.write(header.encode() + (b"" if head else body))
    await writer.drain()
