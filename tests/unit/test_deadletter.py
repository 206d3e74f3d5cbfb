"""The dead-letter builder is total and bounded (issue 14).

Whatever the payload and whatever the strings (lone surrogates, control
characters, RTL marks, 64 MiB), :func:`dead_letter` returns a letter whose
encoding is at most its limit and decodes with the contract, and the payload
is cut before it is copied: memory is measured with tracemalloc, not time.
"""

from __future__ import annotations

import base64
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry_contract import DeadLetter, Reason, decode
from telemetry_contract.deadletter import DEADLETTER_LIMIT, MIN_DEADLETTER_LIMIT, dead_letter
from testsupport.hostile import CLASSES, Hostile, hostile_text

# Every code point, lone surrogates included (st.text leaves them out by default).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
long_text = st.one_of(any_text, st.builds(lambda c, n: c * n, any_text, st.integers(0, 30_000)))
payloads = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 20_000)),
    st.text(max_size=6000).map(lambda t: t.encode()),
)


def _check(payload: bytes, letter: DeadLetter, value: bytes, limit: int) -> None:
    assert len(value) <= limit
    assert decode(value, max_bytes=max(limit, DEADLETTER_LIMIT)) == letter
    kept = (
        letter.payload.encode()
        if letter.payload_encoding == "utf-8"
        else base64.b64decode(letter.payload)
    )
    assert payload.startswith(kept)
    assert (len(kept) < len(payload)) == ("payload cut to the first" in letter.detail)


@given(payloads, long_text, long_text, long_text, st.integers(-(2**70), 2**70))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_dead_letter_never_raises_and_never_exceeds_its_limit(
    payload: bytes, detail: str, topic: str, gateway: str, received: int
) -> None:
    letter, value = dead_letter(
        payload,
        Reason.NOT_JSON,
        detail,
        source_topic=topic,
        received_ms=received,
        gateway_id=gateway,
    )
    _check(payload, letter, value, DEADLETTER_LIMIT)
    assert letter.detail.isprintable() and letter.source_topic.isprintable()


@given(payloads, any_text, st.integers(MIN_DEADLETTER_LIMIT, 40_000))
@settings(max_examples=200, deadline=None)
def test_any_limit_is_kept(payload: bytes, detail: str, limit: int) -> None:
    letter, value = dead_letter(
        payload, Reason.TOO_LARGE, detail, source_topic="t", received_ms=1, limit=limit
    )
    _check(payload, letter, value, limit)


@pytest.mark.parametrize("klass", CLASSES)
@given(rng=st.randoms(use_true_random=False))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_payloads_make_bounded_letters(klass: str, rng: random.Random) -> None:
    payload = Hostile(rng).make(klass)
    letter, value = dead_letter(
        payload,
        Reason.INVALID_VALUE,
        hostile_text(rng),
        source_topic=hostile_text(rng),
        received_ms=1,
        gateway_id=hostile_text(rng),
    )
    _check(payload, letter, value, DEADLETTER_LIMIT)


def test_the_surrogate_error_of_issue_14_becomes_a_dead_letter() -> None:
    payload = b'{"\\ud800": NaN}'
    with pytest.raises(Exception) as caught:
        decode(payload)
    letter, value = dead_letter(
        payload, Reason.NON_FINITE, str(caught.value), source_topic="t", received_ms=1
    )
    assert letter.detail == "\\ud800: must be a finite number, got NaN"
    assert decode(value) == letter


@pytest.mark.parametrize(
    ("payload", "encoding"),
    [
        (b"x" * 70_000, "utf-8"),
        (b"\x01" * 70_000, "utf-8"),  # 6 bytes each once escaped
        (b'"\\' * 35_000, "utf-8"),  # 2 bytes each
        (b"\xff" * 70_000, "base64"),
        ("é".encode() * 35_000, "utf-8"),  # cut on a character boundary, not turned to base64
        ("\U0001f525".encode() * 17_500 + b"x", "utf-8"),
    ],
)
def test_a_cut_payload_fills_the_letter_and_keeps_its_encoding(
    payload: bytes, encoding: str
) -> None:
    letter, value = dead_letter(payload, Reason.TOO_LARGE, "big", source_topic="t", received_ms=1)
    assert letter.payload_encoding == encoding
    _check(payload, letter, value, DEADLETTER_LIMIT)
    assert len(value) > DEADLETTER_LIMIT // 3  # the room is used, not wasted


def test_a_64_mib_payload_costs_o_limit_memory() -> None:
    # Before: 2.5-3.7x the payload (a copy, its decode, its encoding): 246 MB
    # for 64 MiB. Now only what can fit is copied out of the payload.
    long = "d" * 100_000
    for payload in (b"x" * (64 << 20), b"\xff" * (64 << 20), b"\x01" * (64 << 20)):
        tracemalloc.start()
        try:
            letter, value = dead_letter(
                payload, Reason.TOO_LARGE, long, source_topic=long, received_ms=1, gateway_id=long
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(value) <= DEADLETTER_LIMIT
        # O(limit), not O(payload): ~4x the limit; ~9x when every byte is escaped (\u0001)
        assert peak < 16 * DEADLETTER_LIMIT, peak
        del payload, letter, value


def test_a_limit_below_the_minimum_is_raised_to_it() -> None:
    _, value = dead_letter(
        b"x" * 5000, Reason.TOO_LARGE, "d" * 5000, source_topic="t" * 5000, received_ms=1, limit=10
    )
    assert len(value) <= MIN_DEADLETTER_LIMIT
