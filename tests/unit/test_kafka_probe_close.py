"""The Kafka health probe's connection is closed down to its socket, even when the
TLS shutdown does not end (no broker: fake connections)."""

from __future__ import annotations

import asyncio
from typing import Any

from deploy.local.services.kafka import _close_conn


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Protocol:
    def __init__(self) -> None:
        self._transport = _Transport()


class _Conn:
    """What :func:`_close_conn` uses of ``aiokafka.conn.AIOKafkaConnection``."""

    def __init__(self, *, connected: bool, closes: bool) -> None:
        self.closed = False
        self._closes = closes
        self._protocol: Any = _Protocol() if connected else None
        self._closed_fut: Any = None

    def close(self) -> None:
        self.closed = True
        if self._closes:  # the transport reports connection_lost at once
            self._closed_fut.set_result(None)


async def _run(conn: _Conn) -> None:
    if conn._protocol is not None:
        conn._closed_fut = asyncio.get_running_loop().create_future()
    await _close_conn(conn, wait_s=0.2)


def test_a_connection_whose_socket_closes_is_not_aborted() -> None:
    conn = _Conn(connected=True, closes=True)
    asyncio.run(_run(conn))
    assert conn.closed and not conn._protocol._transport.aborted


def test_a_tls_shutdown_that_does_not_end_is_aborted() -> None:
    conn = _Conn(connected=True, closes=False)
    asyncio.run(_run(conn))
    assert conn.closed and conn._protocol._transport.aborted


def test_a_connection_that_never_connected_is_only_closed() -> None:
    conn = _Conn(connected=False, closes=False)
    asyncio.run(_run(conn))
    assert conn.closed
