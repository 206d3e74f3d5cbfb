"""The shared hand-written HTTP server: bounded requests, one response per connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from stagekit.health import HealthServer
from stagekit.httpserver import MAX_HEADERS, MAX_LINE, HttpServer, Request


class Echo(HttpServer):
    """Answers every request with its method, path and Host."""

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = f"{request.method} {request.path} {request.host}".encode()
        await self.respond(writer, 200, "text/plain", body, head=request.method == "HEAD")


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo("127.0.0.1", 0, headers="X-Test: 1\r\n", request_timeout_s=0.5)
    await server.start()
    yield server
    await server.close()


async def test_request_line_path_and_host(echo: Echo) -> None:
    answer = await exchange(echo.port, b"GET /a/b?x=1 HTTP/1.1\r\nhOsT: h:1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"X-Test: 1\r\nConnection: close" in head
    assert body == b"GET /a/b h:1"


async def test_head_has_no_body(echo: Echo) -> None:
    answer = await exchange(echo.port, b"HEAD / HTTP/1.1\r\n\r\n")
    assert answer.endswith(b"\r\n\r\n") and b"Content-Length: 7" in answer  # "HEAD / "


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\r\n",  # no request line
        b"GET /" + b"x" * MAX_LINE + b" HTTP/1.1\r\n\r\n",  # line over the limit
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n",  # too many headers
        b"GET / HTTP/1.1\r\n",  # headers never end: the timeout answers
    ],
)
async def test_malformed_or_slow_requests_get_a_400(echo: Echo, request_bytes: bytes) -> None:
    assert (await exchange(echo.port, request_bytes)).startswith(b"HTTP/1.1 400 Bad Request")


async def test_close_is_idempotent_and_frees_the_port(echo: Echo) -> None:
    port = echo.port
    await echo.close()
    await echo.close()
    assert not echo.serving
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_health_server_answers_head_without_a_body_and_refuses_other_methods() -> None:
    server = HealthServer("127.0.0.1", 0, lambda: b"m 1\n", lambda: (True, "ready"))
    await server.start()
    try:
        head = await exchange(server.port, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
        post = await exchange(server.port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 400 Bad Request")
    finally:
        await server.stop()
