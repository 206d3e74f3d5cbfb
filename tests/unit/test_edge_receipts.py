"""Receipts on the edge, with fakes: the outbox keeps what the broker PUBACKed until a
receipt covers it, re-sends after a reconnect or an overdue receipt, and accounts for
every seq (a reading still stored, covered by a receipt, in exactly one Gap, or
released under the bounds after its PUBACK)."""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_agent.config import MqttSettings, loads_config
from edge_agent.mqtt import Acked, Connected, MqttLink, ReceiptReceived
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.receipts import ReceiptTracker
from edge_agent.sensors import Sample
from stagekit.config import ConfigError
from telemetry_contract import Gap, Quality, Reading, Receipt, decode, decode_as, encode
from telemetry_contract.receipts import seq_ranges
from tests.unit.test_edge_mqtt import FakeLink, agent_on_fake_link

TOPIC = "thermowatch/s1/d1/receipt"
TS = 1_767_225_600_000


class Edge:
    """Outbox + publisher + receipt tracker on a fake link, in virtual time."""

    def __init__(self, path: Path, *, max_rows: int = 500_000, inflight: int = 4) -> None:
        self.now = [0.0]
        self.outbox = Outbox(
            path,
            device_id="d1",
            site="s1",
            max_rows=max_rows,
            drop_batch=2,
            ack_batch=3,
            synchronous="NORMAL",  # no fsync: the property runs many examples
            receipts=True,
        )
        self.outbox.open()
        self.tracker = ReceiptTracker(
            device_id="d1",
            site="s1",
            timeout_s=30.0,
            resend_max_s=600.0,
            monotonic=lambda: self.now[0],
            rng=lambda: 1.0,
        )
        mqtt = MqttSettings(max_inflight=inflight, reconnect_min_s=1.0, reconnect_max_s=4.0)
        self.publisher = Publisher(
            self.outbox, mqtt, monotonic=lambda: self.now[0], receipts=self.tracker
        )
        self.link = FakeLink()

    def append(self, n: int) -> list[int]:
        return self.outbox.append_readings(
            [lambda seq: ("thermowatch/s1/d1/telemetry", b"r%d" % seq)] * n, now_ms=TS
        )

    def pump(self) -> list[bytes]:
        before = len(self.link.sent)
        self.publisher.pump(self.link)  # type: ignore[arg-type]
        return [p for _, p in self.link.sent[before:]]

    def puback_all(self, code: int = 0) -> None:
        acks = [Acked(mid, code < 0x80, "x", code) for mid in list(self.publisher.inflight)]
        self.outbox.ack(self.publisher.settle(acks), defer=True)

    def receipt(self, ranges: list[tuple[int, int]]) -> None:
        payload = encode(Receipt(device_id="d1", site="s1", ts=TS, ranges=ranges))
        got = self.tracker.offer(payload, next_seq=self.outbox.next_seq, now_ms=TS)
        assert got is not None
        self.outbox.receipt(got)

    def stored(self) -> list[int]:
        self.outbox.flush_acks()
        rows = self.outbox._conn.execute(
            "SELECT seq FROM outbox WHERE kind='reading' ORDER BY seq"
        ).fetchall()
        return [r[0] for r in rows]


def sent_seqs(payloads: list[bytes]) -> list[int]:
    return [int(p[1:]) for p in payloads if p.startswith(b"r")]


@pytest.fixture
def edge(tmp_path: Path) -> Edge:
    e = Edge(tmp_path / "o.db")
    yield e  # type: ignore[misc]
    e.outbox.close()


def test_a_pubacked_reading_stays_until_a_receipt_covers_it(edge: Edge) -> None:
    edge.append(4)
    assert sent_seqs(edge.pump()) == [0, 1, 2, 3]
    edge.puback_all()
    assert edge.stored() == [0, 1, 2, 3]
    assert edge.outbox.stats().awaiting_receipt == 4
    edge.receipt([(0, 1), (3, 3)])
    assert edge.stored() == [2]
    assert edge.outbox.stats().awaiting_receipt == 1


def test_a_receipt_deletes_whatever_the_state_and_a_later_puback_is_harmless(
    edge: Edge,
) -> None:
    edge.append(3)
    edge.pump()  # 0..2 in flight, no PUBACK yet
    edge.receipt([(0, 2)])
    assert edge.stored() == []
    edge.puback_all()  # the PUBACKs of rows already deleted
    assert edge.stored() == [] and edge.outbox.stats().depth == 0


def test_a_gap_row_goes_only_when_a_receipt_covers_its_whole_range(tmp_path: Path) -> None:
    e = Edge(tmp_path / "o.db", max_rows=4)
    e.append(8)  # unsent: the oldest are dropped under a Gap
    gap_rows = e.outbox._conn.execute("SELECT seq, last_seq FROM outbox WHERE kind='gap'")
    (first, last), *_ = gap_rows.fetchall()
    sent: list[bytes] = []
    while batch := e.pump():
        sent += batch
        e.puback_all()
    assert [type(decode(m, now_ms=TS)) for m in sent if m.startswith(b"{")] == [Gap]
    e.receipt([(first, last - 1)])
    assert e.outbox.stats().pending_gaps == 1
    e.receipt([(first, last)])
    assert e.outbox.stats().pending_gaps == 0
    e.outbox.close()


def test_a_broker_that_forgot_pubacked_readings_gets_exactly_the_uncovered_ones_again(
    edge: Edge,
) -> None:
    """PUBACK, then the broker crashes (no receipt for most): a reconnect re-sends
    exactly what no receipt covered, and nothing receipted."""
    edge.append(6)
    edge.pump()
    edge.puback_all()
    edge.receipt([(1, 2)])  # the gateway had forwarded these before the crash
    edge.publisher.request_resend()  # what the agent does on Connected
    again = edge.pump()
    assert sent_seqs(again) == [0, 3, 4, 5]
    edge.puback_all()
    edge.receipt(seq_ranges(sent_seqs(again)))
    assert edge.stored() == []


def test_a_resend_waits_for_the_pubacks_still_due(edge: Edge) -> None:
    edge.append(2)
    edge.pump()
    edge.publisher.request_resend()
    assert edge.pump() == []  # paho sends what is in flight again itself
    edge.puback_all()
    assert sent_seqs(edge.pump()) == [0, 1]


def test_overdue_receipts_resend_with_growing_jittered_backoff_in_virtual_time(
    edge: Edge,
) -> None:
    edge.append(1)
    edge.pump()
    edge.puback_all()
    oldest = edge.outbox.oldest_awaiting
    resends = []
    for second in range(0, 400):
        edge.now[0] = float(second)
        if edge.tracker.due(oldest):
            resends.append(second)
            edge.publisher.request_resend()
            assert sent_seqs(edge.pump()) == [0]
            edge.puback_all()
    # 30 s overdue, then waits of 30, 60, 120 s (rng=1.0: the top of the jitter).
    assert resends == [30, 60, 120, 240]
    assert edge.tracker.overdue_resends == 4
    edge.receipt([(0, 0)])  # Kafka is back: nothing awaits, nothing is overdue
    edge.now[0] = 1000.0
    assert not edge.tracker.due(oldest)


def test_the_backoff_resets_when_receipts_make_progress(edge: Edge) -> None:
    edge.append(2)
    edge.pump()
    edge.puback_all()
    oldest = edge.outbox.oldest_awaiting
    edge.now[0] = 30.0
    assert edge.tracker.due(oldest)
    edge.publisher.request_resend()
    edge.pump()
    edge.puback_all()
    edge.receipt([(0, 0)])  # progress: row of seq 0 gone, seq 1 still waits
    edge.now[0] = 60.0
    assert edge.tracker.due(oldest)  # the first delay again, not a doubled one
    edge.publisher.request_resend()
    edge.pump()
    edge.puback_all()
    edge.now[0] = 90.0
    assert edge.tracker.due(oldest)


def test_overflow_releases_awaiting_rows_first_without_a_gap(tmp_path: Path) -> None:
    e = Edge(tmp_path / "o.db", max_rows=6)
    e.append(6)
    while e.pump():
        e.puback_all()
    e.append(2)  # over the bound: the oldest awaiting rows go, no Gap (the broker has them)
    st_ = e.outbox.stats()
    assert st_.released == 2 and st_.gaps == 0 and st_.dropped == 0
    assert e.stored() == [2, 3, 4, 5, 6, 7]
    e.outbox.close()


def test_the_bounds_never_drop_a_row_in_flight(tmp_path: Path) -> None:
    e = Edge(tmp_path / "o.db", max_rows=4, inflight=4)
    e.append(4)
    e.pump()  # 0..3 in flight
    e.append(3)  # over the bound: only unsent readings can go, under a Gap
    assert e.stored()[:4] == [0, 1, 2, 3]
    assert e.outbox.stats().gaps == 1
    e.outbox.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"junk",
        encode(Receipt(device_id="d2", site="s1", ts=TS, ranges=[(0, 1)])),  # another device
        encode(Receipt(device_id="d1", site="s2", ts=TS, ranges=[(0, 1)])),  # another site
        encode(Receipt(device_id="d1", site="s1", ts=TS, ranges=[(0, 99)])),  # unallocated
        b'{"type":"receipt","device_id":"d1","site":"s1","ts":1767225600000,"ranges":[[3,1]]}',
    ],
)
def test_a_bad_receipt_is_counted_and_deletes_nothing(edge: Edge, payload: bytes) -> None:
    edge.append(4)
    edge.pump()
    edge.puback_all()
    assert edge.tracker.offer(payload, next_seq=edge.outbox.next_seq, now_ms=TS) is None
    assert edge.tracker.rejected == 1
    assert edge.stored() == [0, 1, 2, 3]


def test_bad_receipts_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rt = ReceiptTracker(
        device_id="d1", site="s1", timeout_s=30, resend_max_s=60, monotonic=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="edge_agent.receipts"):
        for _ in range(1000):
            rt.offer(b"junk", next_seq=10)
        now[0] = 61.0
        rt.offer(b"\xff", next_seq=10)
    lines = [r.getMessage() for r in caplog.records]
    assert rt.rejected == 1001 and len(lines) == 2
    assert "suppressed=999" in lines[1]


class SubscribeRecorder:
    def __init__(self) -> None:
        self.subscribed: list[tuple[str, int]] = []

    def subscribe(self, topic: str, qos: int) -> tuple[int, int]:
        self.subscribed.append((topic, qos))
        return 0, len(self.subscribed)

    def publish(self, *a: Any, **k: Any) -> None:
        pass


class Flags:
    def __init__(self, present: bool) -> None:
        self.session_present = present


class Ok:
    is_failure = False


def receipt_link(events: queue.Queue[Any], receipt_topic: str) -> MqttLink:
    """An MqttLink with config topic ``cfg``, never started (its callbacks are called)."""
    return MqttLink(
        MqttSettings(),
        client_id="c",
        password="",
        status_topic="st",
        config_topic="cfg",
        will_payload=b"",
        events=events,
        receipt_topic=receipt_topic,
    )


@pytest.mark.parametrize("receipt_topic", [TOPIC, ""])
def test_the_receipt_topic_is_subscribed_on_every_connect(receipt_topic: str) -> None:
    """Like the config topic: a broker that lost its disk forgot the session."""
    events: queue.Queue[Any] = queue.Queue()
    link = receipt_link(events, receipt_topic)
    client = SubscribeRecorder()
    for present in (False, True, False):
        link._on_connect(client, None, Flags(present), Ok(), None)  # type: ignore[arg-type]
    want = [("cfg", 1)] + ([(TOPIC, 0)] if receipt_topic else [])
    assert client.subscribed == want * 3
    msg = type("M", (), {"topic": TOPIC, "payload": b"x", "retain": False})()
    link._on_message(client, None, msg)  # type: ignore[arg-type]
    got = [events.get_nowait() for _ in range(events.qsize())]
    assert [e for e in got if isinstance(e, ReceiptReceived)] == (
        [ReceiptReceived(b"x")] if receipt_topic else []
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("receipt_timeout_s = 0", "outbox.receipt_timeout_s"),
        ("receipt_timeout_s = nan", "outbox.receipt_timeout_s"),
        ("resend_max_s = 5", "outbox.resend_max_s"),
        ("resend_max_s = 100000", "outbox.resend_max_s"),
        ('receipts = "yes"', "outbox.receipts"),
    ],
)
def test_receipt_settings_are_checked_and_errors_name_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        loads_config(f"[outbox]\n{toml}\n")


def test_receipt_settings_have_env_overrides() -> None:
    env = {
        "THERMOWATCH_EDGE__OUTBOX__RECEIPTS": "false",
        "THERMOWATCH_EDGE__OUTBOX__RECEIPT_TIMEOUT_S": "45",
    }
    cfg = loads_config("", env=env)
    assert (cfg.outbox.receipts, cfg.outbox.receipt_timeout_s) == (False, 45.0)
    assert loads_config("").outbox.receipts is True


# The accounting property ----------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("pump"), st.just(0)),
        st.tuples(st.just("drain"), st.integers(1, 4)),
        st.tuples(st.just("puback"), st.integers(0, 3)),
        st.tuples(st.just("refuse"), st.just(0)),
        st.tuples(st.just("receipt"), st.integers(0, 2**16)),
        st.tuples(st.just("reconnect"), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    ),
    max_size=40,
)


class Ledger:
    """Watches an :class:`Edge` and says why each seq left the outbox."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.db = sqlite3.connect(f"file:{edge.outbox.path}?mode=ro", uri=True)
        self.present: set[int] = set()
        self.receipted_ranges: list[tuple[int, int]] = []
        self.pubacked: set[int] = set()  # reading seqs the broker PUBACKed (ok) at least once
        self.sent_gap: dict[int, tuple[int, int]] = {}  # gap row id -> range when sent
        self.gaps: dict[int, tuple[int, int]] = {}  # gap row id -> range (every gap row seen)
        self.left: dict[int, str] = {}  # seq -> why it left

    def observe(self) -> None:
        rows = self.db.execute("SELECT id, kind, seq, last_seq FROM outbox").fetchall()
        now = {seq for _, kind, seq, _ in rows if kind == "reading"}
        for rid, kind, seq, last in rows:
            if kind == "gap":
                self.gaps[rid] = (seq, last)
                sent = self.sent_gap.get(rid)
                assert sent is None or sent == (seq, last), "a sent Gap changed its range"
        for seq in self.present - now:
            if any(a <= seq <= b for a, b in self.receipted_ranges):
                self.left[seq] = "receipt"
            elif seq in self.pubacked:
                self.left[seq] = "released"
            else:  # dropped unsent: the final check wants it in exactly one Gap
                self.left[seq] = "gap"
        self.present = now

    def close(self) -> None:
        self.db.close()


def run_ops(edge: Edge, ledger: Ledger, ops: list[tuple[str, int]]) -> None:
    pub = edge.publisher
    for op, arg in ops:
        if op == "append":
            edge.append(arg)
        elif op == "drain":  # a few rounds of send + PUBACK everything in flight
            for _ in range(arg):
                run_ops(edge, ledger, [("pump", 0), ("puback", 3)])
        elif op == "pump":
            before = set(pub.inflight)
            edge.pump()
            for mid in set(pub.inflight) - before:
                row = pub.inflight[mid]
                got = edge.outbox._conn.execute(
                    "SELECT seq, last_seq FROM outbox WHERE id=? AND kind='gap'", (row,)
                ).fetchone()
                if got is not None:
                    ledger.sent_gap[row] = (got[0], got[1])
        elif op in ("puback", "refuse") and pub.inflight:
            mids = sorted(pub.inflight)[: arg + 1]
            code = 0 if op == "puback" else 135
            rows = [pub.inflight[m] for m in mids]
            acked = pub.settle([Acked(m, code < 0x80, "x", code) for m in mids])
            edge.outbox.ack(acked, defer=True)
            if code == 0:
                for (seq,) in edge.outbox._conn.execute(
                    f"SELECT seq FROM outbox WHERE kind='reading' AND id IN "
                    f"({','.join('?' * len(rows))})",
                    rows,
                ):
                    ledger.pubacked.add(seq)
        elif op == "receipt":
            # The gateway confirms some of what was sent (readings, and whole Gaps).
            sent = sent_seqs([p for _, p in edge.link.sent])
            pool = sorted(set(sent)) + [s for a, b in ledger.sent_gap.values() for s in (a, b)]
            if pool:
                rng = random.Random(arg)
                pick = [s for s in sorted(set(pool)) if rng.random() < 0.5]
                for a, b in ledger.sent_gap.values():  # a Gap is covered whole or not at all
                    inside = [s for s in pick if a <= s <= b]
                    if inside:
                        pick = sorted(set(pick) | set(range(a, b + 1)))
                ranges = seq_ranges(pick)[:256]
                if ranges:
                    ledger.receipted_ranges += ranges
                    edge.receipt(ranges)
        elif op == "reconnect":
            pub.request_resend()
        elif op == "tick":
            edge.now[0] += arg
            if edge.tracker.due(edge.outbox.oldest_awaiting):
                pub.request_resend()
        ledger.observe()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, max_rows=st.integers(4, 12))
# A reconnect's re-send, then overflow: the awaiting rows go without a Gap.
@example(
    ops=[("append", 5), ("drain", 3), ("reconnect", 0), ("pump", 0), ("append", 5)], max_rows=6
)
def test_every_seq_is_stored_receipted_in_one_gap_or_released_after_its_puback(
    ops: list[tuple[str, int]], max_rows: int
) -> None:
    with tempfile.TemporaryDirectory() as d:
        edge = Edge(Path(d) / "o.db", max_rows=max_rows, inflight=3)
        ledger = Ledger(edge)
        try:
            run_ops(edge, ledger, ops)
            edge.outbox.flush_acks()
            ledger.observe()
            stored = set(edge.stored())
            for seq in range(edge.outbox.next_seq):
                in_gaps = sum(a <= seq <= b for a, b in ledger.gaps.values())
                why = {
                    "stored": seq in stored,
                    "receipt": ledger.left.get(seq) == "receipt",
                    "gap": in_gaps == 1,
                    "released": ledger.left.get(seq) == "released",
                }
                assert sum(why.values()) == 1, (seq, why, in_gaps)
                assert in_gaps <= 1
            count = edge.outbox._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            assert edge.outbox._depth == count  # the in-memory depth the bounds use
        finally:
            ledger.close()
            edge.outbox.close()


def test_the_agent_applies_receipts_and_resends_on_connect(tmp_path: Path) -> None:
    agent, link = agent_on_fake_link(tmp_path, outbox="receipts = true")
    try:
        for i in range(3):
            agent.handle_samples([Sample("28-0316a2791aff", TS + i, 4.0, Quality.OK)])
        assert agent.pump() == 3
        for mid, _ in link.sent:
            agent.events.put(Acked(mid, True, "Success"))
        agent.process_events(0.1)
        assert agent.outbox.stats().awaiting_receipt == 3  # PUBACKed, kept
        agent.events.put(
            ReceiptReceived(
                encode(Receipt(device_id="dev-test-1", site="lab", ts=TS, ranges=[(0, 0)]))
            )
        )
        agent.events.put(ReceiptReceived(b"junk"))
        agent.process_events(0.1)
        assert (agent.receipts_applied, agent.receipts_rejected) == (1, 1)
        assert agent.outbox.stats().readings == 2
        agent.events.put(Connected(session_present=False))
        agent.process_events(0.1)
        before = len(link.sent)
        assert agent.pump() == 2  # seqs 1 and 2 again; 0 was receipted
        again = [decode_as(p, Reading, now_ms=TS + 10).seq for _, p in link.sent[before:]]
        assert again == [1, 2]
    finally:
        agent.link = None
        agent.shutdown()


def test_the_outbox_command_shows_rows_awaiting_a_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.__main__ import main

    path = tmp_path / "s" / "outbox.sqlite3"
    e = Edge(path)
    e.append(5)
    e.pump()
    e.puback_all()
    e.receipt([(0, 1)])
    e.outbox.close()  # the deletes and acked_through are written on close at the latest
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[device]\ndevice_id = "d1"\nsite = "s1"\n[outbox]\npath = "{path}"\n')
    assert main(["outbox", "-c", str(cfg), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # seq 4 was never sent (a window of 4): stored, not awaiting
    assert (shown["readings"], shown["awaiting_receipt"], shown["released"]) == (3, 2, 0)


def test_the_age_bound_releases_old_awaiting_rows_without_a_gap(tmp_path: Path) -> None:
    e = Edge(tmp_path / "o.db")
    e.outbox.max_age_s = 10.0
    e.append(3)
    e.pump()
    e.puback_all()
    for _ in range(2):  # at most drop_batch (2 here) per write
        e.outbox.append_readings([lambda seq: ("t", b"r%d" % seq)], now_ms=TS + 20_000)
    st_ = e.outbox.stats()
    assert (st_.released, st_.gaps, st_.dropped) == (3, 0, 0)
    assert e.stored() == [3, 4]
    e.outbox.close()


def test_an_alert_has_no_seq_and_still_goes_on_its_puback(edge: Edge) -> None:
    edge.outbox.append("alert", "thermowatch/s1/d1/alert", b"{}", now_ms=TS)
    edge.append(1)
    edge.pump()
    edge.puback_all()
    edge.outbox.flush_acks()
    kinds = edge.outbox._conn.execute("SELECT kind FROM outbox").fetchall()
    assert kinds == [("reading",)]  # the alert went; the reading awaits its receipt


@pytest.mark.parametrize("receipts", [True, False])
def test_the_link_subscribes_to_receipts_only_when_they_are_on(receipts: bool) -> None:
    from edge_agent.adapters import make_link
    from edge_agent.events import WakeQueue
    from edge_agent.status import Presence

    cfg = loads_config(f"[outbox]\nreceipts = {str(receipts).lower()}\n")
    link = make_link(cfg, WakeQueue(), Presence(cfg.device, clock_ms=lambda: TS))
    want = "thermowatch/lab/dev-test-1/receipt" if receipts else ""
    assert link._receipt_topic == want


def test_a_refused_receipt_subscription_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    link = receipt_link(queue.Queue(), TOPIC)
    client = SubscribeRecorder()
    link._on_connect(client, None, Flags(False), Ok(), None)  # type: ignore[arg-type]
    refused = type("Rc", (), {"is_failure": True, "__str__": lambda self: "Not authorized"})()
    with caplog.at_level(logging.WARNING, logger="edge_agent.mqtt"):
        link._on_subscribe(client, None, 1, [Ok()], None)  # type: ignore[arg-type]  # config
        link._on_subscribe(client, None, 2, [refused], None)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"event=receipt_subscribe_refused topic={TOPIC} reason=Not authorized"]


def test_receipts_are_accepted_under_any_topic_root(tmp_path: Path) -> None:
    from edge_agent.app import EdgeAgent

    cfg = loads_config(
        f'[device]\nstate_dir = "{tmp_path}"\nsite = "s1"\ndevice_id = "d1"\n'
        "[gpio]\nenabled = false\n[sensors]\nrequire_sensor = false\n"
        '[mqtt]\ntopic_root = "plant7"\n'
    )
    agent = EdgeAgent(cfg)
    agent.outbox.open()
    try:
        agent.outbox.append_readings([lambda seq: ("t", b"r")] * 2, now_ms=TS)
        payload = encode(Receipt(device_id="d1", site="s1", ts=TS, ranges=[(0, 1)]))
        assert agent.handle_receipt(payload)
    finally:
        agent.outbox.close()
