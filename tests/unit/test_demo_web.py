"""The demo's web view and terminal view (issue 18, item 2).

The web view the demo starts reads the stack's own addresses and the run's
names and shows only the run's devices (MQTT topics are shared between runs
and hand-run devices); a source that is down is one short log line, never a
traceback per poll. The terminal view keeps log lines out of its frame,
device ids whole at 80 columns, and every closing hint on one line.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagekit.config import loads
from telemetry_contract import DeviceState, DeviceStatus, Reading, encode
from thermowatch.demo.configs import web_config
from thermowatch.demo.live import LiveState, render, route_logs
from thermowatch.demo.monitor import OpenAlert
from thermowatch.demo.report import MEASURES, next_steps, print_next_steps, print_summary
from thermowatch.demo.run import DemoRun, demo_sites
from thermowatch.demo.web import DemoWeb, hold_web, start_web
from thermowatch.web.app import WebApp
from thermowatch.web.config import KafkaSettings, WebConfig
from thermowatch.web.kafka import LiveFeed
from thermowatch.web.view import fold_record

T0 = 1_767_225_600_000
#: A stack configured away from the defaults (``stack.toml`` ports).
ENDPOINTS: dict[str, Any] = {
    "mosquitto": {"host": "127.0.0.1", "port": 28830, "users": {"gateway": "pw"}},
    "kafka": {"host": "127.0.0.1", "port": 29092, "bootstrap": "127.0.0.1:29092"},
    "search": {"host": "127.0.0.1", "port": 29200, "url": "http://127.0.0.1:29200"},
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run(tmp_path: Path, root: str = "run") -> DemoRun:
    return DemoRun("20261205031500ab12", tmp_path / root, tmp_path / "w1", demo_sites(), 150.0)


def _config(run: DemoRun, port: int = 0) -> WebConfig:
    import tomli_w

    return loads(WebConfig, tomli_w.dumps(web_config(run, ENDPOINTS, port)))


def test_web_config_reads_the_stacks_addresses_and_the_runs_names(tmp_path: Path) -> None:
    run = _run(tmp_path)
    cfg = _config(run, port=8123)
    assert cfg.validate() == []
    assert cfg.http.host == "127.0.0.1" and cfg.http.port == 8123
    assert cfg.kafka.servers == ("127.0.0.1:29092",)
    assert cfg.kafka.topic_prefix == run.kafka_prefix
    assert cfg.search.url == "http://127.0.0.1:29200"
    assert cfg.search.index_prefix == run.index_prefix
    assert cfg.view.devices == run.devices


def _reading(device: str, site: str, seq: int) -> bytes:
    return encode(
        Reading(device_id=device, sensor_id="host", site=site, seq=seq, ts=T0, temp_c=4.0)
    )


def _alert(device: str) -> dict[str, Any]:
    return {
        "alert_id": f"{device}.threshold_high.1",
        "device_id": device,
        "site": "x",
        "rule": "threshold_high",
        "severity": "critical",
        "status": "open",
        "version": 1,
        "opened_at": T0,
        "updated_at": T0,
        "message": "temp_c 30 >= 8",
    }


def test_the_demos_view_shows_only_the_runs_devices(tmp_path: Path) -> None:
    """A hand-run device (or another run's) reaches the run's topics through its
    gateway: its readings, status and alerts stay off the run's page."""
    app = WebApp(_config(_run(tmp_path)))
    view = app.view
    for dev, site in (("s1-d01", "s1"), ("bench-7", "lab"), ("s9-d01", "s9")):
        fold_record(view, "telemetry", _reading(dev, site, 1), now_ms=T0)
        status = DeviceStatus(device_id=dev, site=site, ts=T0, state=DeviceState.OFFLINE)
        fold_record(view, "status", encode(status), now_ms=T0)
        view.on_alert(_alert(dev), now_ms=T0)
    view.sync_alerts([_alert("bench-7"), _alert("s2-d03")], now_ms=T0)
    snap = view.snapshot(T0)
    assert [d["device_id"] for d in snap["devices"]] == ["s1-d01", "s2-d03"]
    assert sorted(a["device_id"] for a in snap["alerts"]) == ["s1-d01", "s2-d03"]


def test_without_a_device_list_every_device_is_shown() -> None:
    app = WebApp(WebConfig())
    fold_record(app.view, "telemetry", _reading("bench-7", "lab", 1), now_ms=T0)
    assert app.view.device_ids() == ["bench-7"]


async def test_kafka_down_is_one_log_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every retry that finds Kafka down is counted; the log gets one line, no traceback."""
    from aiokafka.errors import KafkaConnectionError

    stop = asyncio.Event()
    feed = LiveFeed(KafkaSettings(bootstrap_servers="127.0.0.1:1", retry_s=0.001), print)
    attempts = 0

    async def down(_stop: asyncio.Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 20:
            stop.set()
        raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1:1")

    feed._follow = down  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO):
        await feed.run(stop)
    lines = [r for r in caplog.records if "kafka_unavailable" in r.getMessage()]
    assert feed.failures == 20
    assert len(lines) == 1
    assert "servers=127.0.0.1:1" in lines[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


def test_the_web_child_serves_one_url_and_logs_no_traceback_when_sources_are_down(
    tmp_path: Path,
) -> None:
    """Started as the demo starts it, against a stack that is not there: it serves,
    says so once, and its log holds the refusal as one line, not a traceback."""
    from urllib.request import urlopen

    run = _run(tmp_path)
    closed = {
        **ENDPOINTS,
        "kafka": {"bootstrap": "127.0.0.1:9"},
        "search": {"url": "http://127.0.0.1:9"},
    }
    web = start_web(run, closed)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", web.url), web.url
        with urlopen(web.url + "healthz", timeout=10) as resp:
            health = resp.read().decode()
        assert '"search":false' in health
    finally:
        assert web.stop() == 0
    text = (run.run_dir / "logs" / "web.log").read_text()
    assert "Traceback" not in text, text
    assert text.count("event=search_unavailable") == 1, text
    assert (run.run_dir / "web.toml").stat().st_mode & 0o077 == 0


def test_a_taken_web_port_is_an_error_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="the web view exited") as err:
            start_web(_run(tmp_path), ENDPOINTS, port=port)
    assert str(port) in str(err.value)


def test_a_web_port_out_of_range_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from thermowatch.cli import main

    assert main(["demo", "--web-port", "70000"]) == 2
    assert "--web-port: must be 0..65535, got 70000" in capsys.readouterr().err


class _FakeWeb:
    url = "http://127.0.0.1:41234/"

    def __init__(self) -> None:
        self.stopped = 0
        self.waited = 0
        self.alive = True

    def wait(self) -> None:
        self.waited += 1

    def stop(self) -> int:
        self.stopped += 1
        return 0


def test_hold_web_waits_in_a_terminal_and_stops_at_once_without_one() -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=40)
    fake = _FakeWeb()
    hold_web(console, fake, interactive=False)  # type: ignore[arg-type]
    assert (fake.waited, fake.stopped, out.getvalue()) == (0, 1, "")
    fake = _FakeWeb()
    hold_web(console, fake, interactive=True)  # type: ignore[arg-type]
    assert (fake.waited, fake.stopped) == (1, 1)
    # one line, however narrow the terminal
    assert out.getvalue() == "web view still at http://127.0.0.1:41234/ — Ctrl-C to stop\n"
    assert isinstance(DemoWeb, type)


def test_ctrl_c_while_the_web_view_is_held_stops_it_and_ends_quietly() -> None:
    from rich.console import Console

    fake = _FakeWeb()

    def interrupted() -> None:
        raise KeyboardInterrupt

    fake.wait = interrupted  # type: ignore[method-assign]
    hold_web(Console(file=io.StringIO()), fake, interactive=True)  # type: ignore[arg-type]
    assert fake.stopped == 1


def _alerts(ids: list[str]) -> list[OpenAlert]:
    return [
        OpenAlert(d, "rate_of_change", "critical", T0 + i, "rise 12.5 °C/min >= 6.0 °C/min " * 2)
        for i, d in enumerate(ids)
    ]


def test_live_view_keeps_device_ids_whole_at_80_columns(tmp_path: Path) -> None:
    from rich.console import Console

    run = _run(tmp_path)
    ids = [f"s3-d{n:02d}" for n in range(1, 11)] + ["warehouse-north-freezer-12"]
    state = LiveState(elapsed=42, stored=12_345, rate=30.0, lag=17, alerts=_alerts(ids))
    state.events = [f"03:15:{n:02d} step {n} " + "x" * 90 for n in range(8)]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render(run, state))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    shown = ids[:8]
    for dev in shown:
        assert any(re.search(rf"(^|\W){re.escape(dev)}(\W|$)", line) for line in lines), dev
    assert f"… and {len(ids) - 8} more" in text
    assert "s3-…" not in text
    assert any("consumer lag 17" in line for line in lines)


def test_live_view_with_the_longest_id_first(tmp_path: Path) -> None:
    from rich.console import Console

    ids = ["warehouse-north-freezer-12", "s1-d01"]
    state = LiveState(alerts=_alerts(ids))
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render(_run(tmp_path), state))
    text = console.export_text()
    for dev in ids:
        assert dev in text
    assert "… and" not in text


def _summary() -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(MEASURES, 0)
    out["run_id"] = "20261205031500ab12"
    out["alert_latency_ms"] = {"p50": 1200, "max": None}
    out["incidents"] = [
        {
            "kind": "door_open",
            "device_id": "warehouse-north-freezer-12",
            "alerted": True,
            "latency_ms": 12_000,
            "rules": ["threshold_high", "rate_of_change", "fleet_outlier"],
        }
    ]
    return out


def test_final_report_has_every_hint_on_one_line_at_80_columns(tmp_path: Path) -> None:
    from rich.console import Console

    run = _run(tmp_path, "a-rather-long-stack-directory/of/someone/demo/20261205031500ab12")
    console = Console(width=80, record=True, file=io.StringIO())
    print_summary(console, _summary())
    print_next_steps(console, run)
    lines = console.export_text().splitlines()
    assert any("warehouse-north-freezer-12" in line for line in lines)
    hints = [f"{what}: {command}" for what, command in next_steps(run)]
    assert max(len(h) for h in hints) > 80  # rich would have wrapped them
    for hint in hints:
        assert hint in lines, (hint, lines)


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in saved:
            root.removeHandler(h)
            h.close()
    for h in saved:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def test_log_lines_go_to_the_run_log_and_above_the_live_frame(
    tmp_path: Path, root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console
    from rich.live import Live

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    # What the demo's entry point had: a handler on the stream of its start.
    root.addHandler(logging.StreamHandler(err))
    log_file = tmp_path / "logs" / "demo.log"
    route_logs(log_file)
    assert not any(type(h) is logging.StreamHandler for h in root.handlers)

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    lg = logging.getLogger("thermowatch.test_demo_web")
    with Live("FRAME-LINE status 1", console=console, refresh_per_second=20) as live:
        lg.info("event=quiet_detail")
        lg.warning("event=view_refresh_failed error=x")
        live.update("FRAME-LINE status 2")
    assert err.getvalue() == ""  # redirected above the frame, not written under it
    plain = ANSI.sub("", out.getvalue().replace("\r", "\n"))
    warn = [line for line in plain.split("\n") if "view_refresh_failed" in line]
    assert len(warn) == 1, plain
    assert "FRAME" not in warn[0]
    assert warn[0].rstrip().endswith("event=view_refresh_failed error=x")
    head = [line for line in plain.split("\n") if "WARNING thermowatch.test_demo_web" in line]
    assert len(head) == 1 and "FRAME" not in head[0], plain
    assert "quiet_detail" not in plain
    logged = log_file.read_text()
    assert "event=quiet_detail" in logged and "event=view_refresh_failed" in logged
    # the last frame is shown once, after the log line
    assert plain.rstrip().endswith("FRAME-LINE status 2")
    # called again (the next phase), it replaces its own handlers
    route_logs(None, console_level=logging.INFO)
    ours = [h for h in root.handlers if getattr(h, "_thermowatch_demo", False)]
    assert len(ours) == 1 and ours[0].level == logging.INFO


def test_hints_name_the_program_the_user_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thermowatch.demo.report import command_name

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    exe = venv_bin / "thermowatch"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    # Not on PATH (make demo with an externally managed python3): the venv's path.
    assert command_name(str(exe), path="/usr/bin:/bin") == ".venv/bin/thermowatch"
    # On PATH (an activated venv, pipx): the name alone.
    assert command_name(str(exe), path=str(venv_bin)) == "thermowatch"
    run = _run(tmp_path)
    steps = dict(next_steps(run, ".venv/bin/thermowatch"))
    assert steps["Count again"].startswith(".venv/bin/thermowatch demo account --run-dir ")
    assert steps["Web view again"].startswith(".venv/bin/thermowatch web run -c ")


def test_dashboards_hint_follows_the_search_server(tmp_path: Path) -> None:
    import dataclasses

    run = _run(tmp_path)
    assert "demo --search elasticsearch" in dict(next_steps(run, "thermowatch"))["Dashboards"]
    on_es = dataclasses.replace(run, search_backend="elasticsearch")
    hint = dict(next_steps(on_es, "thermowatch"))["Dashboards"]
    assert (
        hint == f"thermowatch kibana import --url http://localhost:5601 --prefix {run.index_prefix}"
    )
