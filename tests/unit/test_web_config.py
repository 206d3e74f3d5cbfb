"""Web view configuration: sample parses, defaults match, errors name the key; CLI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from stagekit.config import ConfigError, loads
from thermowatch.cli import main
from thermowatch.web.app import load_assets
from thermowatch.web.config import WebConfig, load_config

SAMPLE = Path(__file__).resolve().parents[2] / "thermowatch" / "web" / "sample.toml"


def test_sample_parses_to_the_defaults() -> None:
    assert load_config(SAMPLE, env={}) == WebConfig()


def test_sample_comments_show_the_code_defaults() -> None:
    defaults = WebConfig()
    section = ""
    checked = 0
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\[([a-z_]+)\]", line.strip()):
            section = m[1]
            continue
        m = re.fullmatch(r"# ([a-z_]+) = (.+)", line)
        if not m:
            continue
        value = tomllib.loads(f"v = {m[2]}")["v"]
        current = getattr(getattr(defaults, section), m[1])
        if isinstance(current, tuple):  # a TOML array
            current = list(current)
        assert current == value, f"{section}.{m[1]}"
        checked += 1
    fields = sum(len(getattr(defaults, s).__struct_fields__) for s in WebConfig.__struct_fields__)
    assert checked == fields


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[http]\nport = 70000\n", "http.port: must be 0..65535, got 70000"),
        ("[http]\npush_interval_s = 2.0\n", "http.push_interval_s: must be at most 1.0"),
        ("[search]\nurl = 'localhost:9200'\n", "search.url: must start with http://"),
        ("[search]\nindex_prefix = 'A B'\n", "search.index_prefix: must be lower case"),
        ("[view]\nsparkline_points = 0\n", "view.sparkline_points: must be at least 1, got 0"),
        ("[kafka]\nretry_s = 0\n", "kafka.retry_s: must be positive, got 0"),
        ("[http]\nprot = 1\n", "prot"),
    ],
)
def test_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(WebConfig, toml)
    assert message in str(info.value)


def test_environment_overrides_the_file() -> None:
    cfg = load_config(SAMPLE, env={"THERMOWATCH_WEB__HTTP__PORT": "9999"})
    assert cfg.http.port == 9999


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "check-config", "-c", str(SAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nmax_clients = 0\n")
    assert main(["web", "check-config", "-c", str(bad)]) == 1
    assert "http.max_clients: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["web", "check-config", "--show"]) == 0
    assert 'host = "127.0.0.1"' in capsys.readouterr().out


def test_page_assets_ship_with_the_package() -> None:
    assets = load_assets()
    assert set(assets) == {"/index.html", "/app.js", "/app.css"}
    js = assets["/app.js"].body.decode()
    assert "innerHTML" not in js.replace("never innerHTML", "")
    assert b"<script" in assets["/index.html"].body and b"onclick" not in assets["/index.html"].body
