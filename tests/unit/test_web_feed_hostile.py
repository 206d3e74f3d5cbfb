"""The web view's fold of the live feed is total (issue 14).

Any record on the alerts, status or telemetry topic is folded or skipped with
one warning line (escaped, bounded); the view can still be encoded for the
page; and when folding one record fails anyway, the app logs one line and the
feed goes on with the next record.
"""

from __future__ import annotations

import logging
import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagekit.ratelog import RateLimitedLog
from telemetry_contract import (
    Quality,
    Reading,
    encode,
)
from testsupport.hostile import CLASSES, Hostile
from thermowatch.web.app import WebApp
from thermowatch.web.config import HttpSettings, KafkaSettings, WebConfig
from thermowatch.web.view import FleetView, fold_record

T0 = 1_767_225_600_000
KINDS = ("alerts", "status", "telemetry")
ENC = msgspec.json.Encoder()


def _reading(seq: int) -> bytes:
    return encode(
        Reading(
            device_id="d1",
            sensor_id="host",
            site="s1",
            seq=seq,
            ts=T0,
            temp_c=4.0,
            quality=Quality.OK,
        )
    )


@pytest.mark.parametrize("klass", CLASSES)
@given(rng=st.randoms(use_true_random=False), kind=st.sampled_from(KINDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_record_is_folded_or_skipped(klass: str, rng: random.Random, kind: str) -> None:
    view = FleetView()
    fold_record(view, kind, Hostile(rng).make(klass), now_ms=T0)
    ENC.encode(view.snapshot(T0))  # what the page is sent
    ENC.encode(view.delta(T0))
    assert fold_record(view, "telemetry", _reading(1), now_ms=T0)  # and the feed goes on


@given(st.binary(max_size=500), st.sampled_from(KINDS))
@settings(max_examples=200)
def test_random_bytes_are_skipped(raw: bytes, kind: str) -> None:
    fold_record(FleetView(), kind, raw, now_ms=T0)


def test_a_refused_record_is_logged_escaped_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    bad = b'{"\\ud800\\u202e' + b"k" * 20_000 + b'": NaN}'
    budget = RateLimitedLog(lines=10)
    with caplog.at_level(logging.WARNING, logger="thermowatch.web.view"):
        assert not fold_record(FleetView(), "alerts", bad[:60_000], now_ms=T0, refused_log=budget)
        assert not fold_record(
            FleetView(), "telemetry", b'{"a.b": NaN}', now_ms=T0, refused_log=budget
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all(line.startswith("event=feed_record_skipped kind=") for line in lines)
    # The contract escaped the field name; quoting the error escapes its backslashes again.
    assert 'error="\\\\ud800\\\\u202e' in lines[0] and len(lines[0]) < 1500
    assert all(line.isprintable() and line.endswith('" suppressed=0') for line in lines)
    assert "reason=non_finite" in lines[1]


def test_a_flood_of_refused_records_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 refused records through the live feed's entry: 10 lines, then one saying 990 held."""
    app = WebApp(WebConfig(http=HttpSettings(port=0), kafka=KafkaSettings(bootstrap_servers="")))
    now = [0.0]
    app.refused_log = RateLimitedLog(lines=10, per_s=10.0, clock=lambda: now[0])
    hostile = b'{"type": "reading", "\\ud800\\n' + b"k" * 150 + b'": NaN}'
    with caplog.at_level(logging.WARNING, logger="thermowatch.web.view"):
        for _ in range(1_000):
            app._on_record("telemetry", hostile)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 10
        assert app.refused_log.suppressed == 990
        now[0] = 10.0
        app._on_record("alerts", b"\xff")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and lines[-1].endswith(" suppressed=990")
    assert all(line.isprintable() and "\n" not in line and len(line) < 600 for line in lines)
    app._on_record("telemetry", _reading(1))  # and the feed goes on
    assert app.view.device_ids() == ["d1"]


def test_a_failure_folding_one_record_does_not_end_the_feed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = WebApp(WebConfig(http=HttpSettings(port=0), kafka=KafkaSettings(bootstrap_servers="")))

    def broken(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("boom \ud800 " + "x" * 5000)

    monkeypatch.setattr(app.view, "on_reading", broken)
    with caplog.at_level(logging.ERROR, logger="thermowatch.web.app"):
        app._on_record("telemetry", _reading(1))  # raised out of the feed's task before
    assert app.feed_errors == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("event=feed_record_failed kind=telemetry size=")
    assert "\\ud800" in line and len(line) < 700
    monkeypatch.undo()
    app._on_record("telemetry", _reading(2))
    assert app.view.device_ids() == ["d1"]
