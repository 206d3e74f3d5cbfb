"""stagekit.ratelog: log lines about hostile input are bounded per key and interval."""

from __future__ import annotations

import logging

import pytest

from stagekit.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_line_per_key_then_one_per_interval_with_the_held_back_count() -> None:
    clock = Clock()
    book = RateLimitedLog(lines=1, per_s=10.0, clock=clock)
    assert book.take("a") == 0
    assert [book.take("a") for _ in range(5)] == [None] * 5
    assert book.take("b") == 0  # per key
    clock.now = 9.9
    assert book.take("a") is None
    clock.now = 10.0
    assert book.take("a") == 6
    assert book.take("a") is None
    assert book.suppressed == 7


def test_n_lines_per_interval() -> None:
    clock = Clock()
    book = RateLimitedLog(lines=10, per_s=10.0, clock=clock)
    got = [book.take() for _ in range(1_000)]
    assert got[:10] == [0] * 10 and got[10:] == [None] * 990
    clock.now = 10.0
    assert book.take() == 990


def test_key_memory_is_bounded_oldest_forgotten_first() -> None:
    book = RateLimitedLog(lines=1, per_s=10.0, max_keys=3, clock=Clock())
    for key in "abc":
        book.take(key)
    assert book.take("a") is None  # remembered: held back
    book.take("d")  # forgets "a", the oldest
    assert len(book._keys) == 3
    assert book.take("a") == 0


def test_log_appends_the_held_back_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    book = RateLimitedLog(lines=1, per_s=10.0, clock=clock)
    logger = logging.getLogger("test.ratelog")
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for i in range(100):
            book.log(logger, logging.WARNING, "event=refused n=%d", i, key="refused")
        clock.now = 10.0
        assert book.log(logger, logging.WARNING, "event=refused n=%d", 100, key="refused")
    assert [r.getMessage() for r in caplog.records] == [
        "event=refused n=0 suppressed=0",
        "event=refused n=100 suppressed=99",
    ]


@pytest.mark.parametrize("kwargs", [{"lines": 0}, {"per_s": 0.0}, {"max_keys": 0}])
def test_a_limit_that_would_log_nothing_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(**kwargs)  # type: ignore[arg-type]
