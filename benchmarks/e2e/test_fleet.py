"""The fleet load generator's pure parts: source addresses, pacing, the selector pump."""

from __future__ import annotations

import collections
import socket

import pytest

from benchmarks.e2e.fleet import (
    Pump,
    RoundRobin,
    connect_wait,
    shard,
    source_address,
    sources,
)
from benchmarks.e2e.loadgen import RawPublisher


def test_100k_devices_spread_over_addresses_below_the_port_range() -> None:
    workers, devices, per = 6, 100_000, 20_000
    sizes = [len(range(devices)[w::workers]) for w in range(workers)]
    firsts = [sum(sizes[:w]) for w in range(workers)]
    used = collections.Counter(
        a for first, n in zip(firsts, sizes, strict=True) for a in sources(first, n, per)
    )
    assert sorted(used) == [f"127.0.0.{k}" for k in range(2, 7)]
    assert set(used.values()) == {per}  # each address below ip_local_port_range's ~28,000
    assert "127.0.0.1" not in used


def test_sites_are_sharded_over_brokers_whole_and_in_order() -> None:
    sites = [f"s{i}" for i in range(10_000)]
    shards = shard(sites, 6)
    assert [s for part in shards for s in part] == sites
    assert {len(part) for part in shards} == {1666, 1667}
    with pytest.raises(ValueError, match="--brokers"):
        shard(sites[:2], 3)


def test_addresses_continue_past_a_byte_and_stop_at_the_end_of_loopback() -> None:
    assert source_address(254, 1) == "127.0.1.0"
    with pytest.raises(ValueError, match=r"past 127\.255\.255\.254"):
        source_address(2**24, 1)
    with pytest.raises(ValueError, match="per_address"):
        source_address(0, 0)


def test_connects_are_paced_at_the_rate() -> None:
    # 400/s: connection 200 is not due before 0.5 s.
    assert connect_wait(200, 400.0, 0.1) == pytest.approx(0.4)
    assert connect_wait(200, 400.0, 0.6) == 0.0


@pytest.mark.parametrize("tick", [0.005, 0.25, 7.0])
def test_every_device_publishes_once_per_period_whatever_the_tick(tick: float) -> None:
    n, period = 1000, 60.0
    robin = RoundRobin(n, period)
    counts: collections.Counter[int] = collections.Counter()
    t = 0.0
    while t < 2 * period - 1e-9:
        counts.update(robin.take(t))
        t += tick
    counts.update(robin.take(2 * period - 1e-6))
    assert robin.sent == 2 * n
    assert set(counts.values()) == {2} and len(counts) == n


def test_a_step_continues_with_the_device_after_the_last_one() -> None:
    first = RoundRobin(5, 5.0)
    assert first.take(2.0) == [0, 1, 2]
    second = RoundRobin(5, 5.0, start=first.next)
    assert second.take(1.0) == [3, 4]


class _Conn:
    """A connection of the pump over a socket pair; ``left`` bytes stay unwritten."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.reads = 0
        self.left = 0

    def read(self) -> None:
        self.reads += 1
        self.sock.recv(100)

    def flush(self) -> bool:
        return self.left > 0


def test_pump_reads_only_what_is_readable_and_watches_a_full_socket_for_writing() -> None:
    conns = [_Conn() for _ in range(3)]
    pump = Pump(list(conns))
    try:
        conns[1].peer.send(b"x")
        pump.run(0.5)
        assert [c.reads for c in conns] == [0, 1, 0]
        conns[2].left = 10
        pump.mark(conns[2])
        pump.run(0.0)
        assert pump.sel.get_key(conns[2].sock).events & 2  # EVENT_WRITE
        conns[2].left = 0
        pump.run(0.5)  # writable: flushed, back to reading only
        assert pump.sel.get_key(conns[2].sock).events == 1
    finally:
        pump.close()
        for c in conns:
            c.sock.close()
            c.peer.close()


def test_a_device_that_publishes_within_half_the_keepalive_never_pings() -> None:
    pub = RawPublisher.__new__(RawPublisher)
    pub.keepalive, pub._last_sent, pub._out = 600, 0.0, bytearray()
    pub.ping_if_idle(299.0)
    assert not pub.pending
    pub.ping_if_idle(301.0)
    assert bytes(pub._out) == b"\xc0\x00"
