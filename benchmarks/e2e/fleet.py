"""What lets one machine play a fleet of 10,000-100,000 devices, each its own
MQTT connection: source addresses past the ephemeral port range, paced
connects and readings, and one ``epoll`` selector per worker process.

* **Source addresses.** A TCP connection from ``127.0.0.1`` to the broker's
  port takes one of the ~28,000 ephemeral ports (``ip_local_port_range``
  32768-60999). Linux routes all of ``127.0.0.0/8`` to ``lo``, so device
  ``i`` connects from ``127.0.0.(2 + i // per_address)``: every address has
  a port range of its own (:func:`source_address`). ``127.0.0.1`` itself is
  left to everything else on the machine.
* **Paced connects.** A worker opens its connections at a bounded rate
  (:func:`connect_wait`): a storm of TLS handshakes is its own test.
* **Paced readings.** Every device publishes once per period, the devices'
  phases spread evenly over it (:class:`RoundRobin`): the fleet's rate is
  ``devices / period`` and a short stall is caught up, not lost.
* **One selector per worker.** Sockets are registered with
  :mod:`selectors` (``epoll``); a tick touches only the connections that
  published or that the broker answered, never a loop over all of them
  (:class:`Pump`). Keep-alive pings are a sweep every quarter keep-alive.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
from typing import Protocol

__all__ = [
    "Pump",
    "RoundRobin",
    "connect_from",
    "connect_wait",
    "shard",
    "source_address",
    "sources",
]

#: The first source address of a fleet: ``127.0.0.1`` stays free for the rest.
FIRST_SOURCE = ipaddress.IPv4Address("127.0.0.2")
_LAST_LOOPBACK = ipaddress.IPv4Address("127.255.255.254")


def source_address(index: int, per_address: int) -> str:
    """The loopback address device ``index`` (0-based) connects from, ``per_address``
    devices to each (keep it below the ~28,000 ports of ``ip_local_port_range``).

    >>> [source_address(i, 20000) for i in (0, 19999, 20000, 99999)]
    ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.6']
    """
    if index < 0 or per_address <= 0:
        raise ValueError(f"source_address: index {index} < 0 or per_address {per_address} <= 0")
    addr = FIRST_SOURCE + index // per_address
    if addr > _LAST_LOOPBACK:
        raise ValueError(f"source_address: device {index} is past 127.255.255.254")
    return str(addr)


def sources(first: int, n: int, per_address: int) -> list[str]:
    """Source addresses of ``n`` devices from fleet-wide index ``first`` on.

    >>> sources(1, 3, 2)
    ['127.0.0.2', '127.0.0.3', '127.0.0.3']
    """
    return [source_address(first + k, per_address) for k in range(n)]


def shard(sites: list[str], brokers: int) -> list[list[str]]:
    """The sites of each of ``brokers`` brokers: contiguous runs, sizes within one
    (a site's devices all on one broker, one gateway group per broker).

    >>> shard(["a", "b", "c", "d", "e"], 2)
    [['a', 'b', 'c'], ['d', 'e']]
    """
    if brokers <= 0 or brokers > len(sites):
        raise ValueError(f"--brokers: must be 1 to {len(sites)} (the sites), got {brokers}")
    size, extra = divmod(len(sites), brokers)
    out, at = [], 0
    for b in range(brokers):
        n = size + (b < extra)
        out.append(sites[at : at + n])
        at += n
    return out


def connect_from(host: str, port: int, source: str | None, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` (IPv4), from ``source`` when given.

    ``IP_BIND_ADDRESS_NO_PORT``: the port is picked at ``connect`` for this
    destination, not at ``bind`` for every destination, so each address's
    whole port range is usable."""
    if source is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def connect_wait(k: int, rate: float, elapsed_s: float) -> float:
    """Seconds to wait before connection ``k`` (0-based) at ``rate`` connections/s
    (0: no limit), ``elapsed_s`` after the first.

    >>> connect_wait(0, 100.0, 0.0), connect_wait(50, 100.0, 0.2), connect_wait(50, 100.0, 0.9)
    (0.0, 0.3, 0.0)
    >>> connect_wait(10_000, 0.0, 0.0)
    0.0
    """
    if rate <= 0:
        return 0.0
    return max(0.0, round(k / rate - elapsed_s, 9))


class RoundRobin:
    """Which devices publish now: ``n`` devices, each once per ``period_s``, the
    phases spread evenly (device ``i``'s readings are ``i * period_s / n`` into
    each period). Behind schedule, the due readings come at once.

    >>> rr = RoundRobin(4, 2.0)
    >>> rr.take(0.0), rr.take(0.5), rr.take(2.0), rr.take(2.0)
    ([0], [1], [2, 3, 0], [])
    """

    def __init__(self, n: int, period_s: float, start: int = 0) -> None:
        """``start``: the device of the first reading (where the last step stopped)."""
        if n <= 0 or period_s <= 0:
            raise ValueError(f"RoundRobin: n and period_s must be > 0, got {n}, {period_s}")
        self.n = n
        self.rate = n / period_s
        self.sent = 0
        self.next = start % n

    def take(self, elapsed_s: float) -> list[int]:
        """The devices due ``elapsed_s`` after the start (each reading once)."""
        due = int(self.rate * elapsed_s + 1e-9) + 1 - self.sent
        out = []
        for _ in range(max(0, due)):
            out.append(self.next)
            self.next = (self.next + 1) % self.n
        self.sent += len(out)
        return out


class Conn(Protocol):
    """What :class:`Pump` needs of a connection (``loadgen.RawPublisher``)."""

    sock: socket.socket

    def read(self) -> None: ...

    def flush(self) -> bool: ...


class Pump:
    """A worker's connections on one selector: write what was queued, read what came.

    Only connections that published (:meth:`mark`) or that the selector says
    are readable or writable are touched; a connection whose socket is full is
    watched for writing until it has drained.
    """

    def __init__(self, conns: list[Conn]) -> None:
        self.sel = selectors.DefaultSelector()
        for c in conns:
            self.sel.register(c.sock, selectors.EVENT_READ, c)
        self._dirty: list[Conn] = []
        self._writing: set[int] = set()  # ids of connections watched for writing

    def mark(self, conn: Conn) -> None:
        """``conn`` has bytes queued."""
        self._dirty.append(conn)

    def _flushed(self, c: Conn) -> None:
        left = c.flush()
        key = id(c)
        if left and key not in self._writing:
            self._writing.add(key)
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        elif not left and key in self._writing:
            self._writing.discard(key)
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def run(self, timeout: float) -> None:
        """Flush the marked connections, then wait at most ``timeout`` s for events."""
        dirty, self._dirty = self._dirty, []
        for c in dirty:
            self._flushed(c)
        for key, mask in self.sel.select(timeout):
            c = key.data
            if mask & selectors.EVENT_READ:
                c.read()
            self._flushed(c)

    def close(self) -> None:
        self.sel.close()
