"""Processor configuration: sample parses, defaults match, errors name the key; CLI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from cloud_processor.__main__ import parse_timestamp
from cloud_processor.config import ProcessorConfig, load_config
from stagekit.config import ConfigError, loads
from thermowatch.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "cloud_processor" / "sample.toml"


def test_sample_parses_to_the_defaults() -> None:
    assert load_config(SAMPLE, env={}) == ProcessorConfig()


def test_sample_comments_show_the_code_defaults() -> None:
    defaults = ProcessorConfig()
    section = ""
    checked = 0
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"(?:# )?\[([a-z_.]+)\]", line.strip()):
            section = m[1]
            continue
        m = re.fullmatch(r"# ([a-z_]+) = (.+)", line)
        if not m or "." in section:
            continue
        value = tomllib.loads(f"v = {m[2]}")["v"]
        current = getattr(getattr(defaults, section), m[1])
        if isinstance(current, tuple):  # a TOML array
            current = list(current)
        if current is None:
            continue  # an example of an optional setting, not a default
        assert current == value, f"{section}.{m[1]}"
        checked += 1
    assert checked > 40


def test_uncommented_sample_example_is_valid() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    enabled = re.sub(r'^# ((?:[a-z_]+|"[^"]+") = .*|\[.*\])$', r"\1", text, flags=re.M)
    cfg = loads(ProcessorConfig, enabled)
    assert cfg.rules.groups["freezers"].threshold_high_c == -15.0
    assert cfg.locations["s1-d01"] == (52.52, 13.405)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[kafka]\nmax_batch = 0\n", "kafka.max_batch: must be at least 1, got 0"),
        ("[kafka]\nreplication_factor = 0\n", "kafka.replication_factor: must be at least 1"),
        ("[kafka]\npartitions = 0\n", "kafka.partitions: must be at least 1, got 0"),
        ("[search]\nurls = ['https://a:1', 'b:2']\n", "search.urls[1]: must start with http://"),
        ("[search]\nurl = 'localhost:9200'\n", "search.url: must start with http://"),
        ("[search]\nindex_prefix = 'Bad Prefix'\n", "search.index_prefix: must be lower case"),
        ("[rules]\nthreshold_low_c = 9.0\nthreshold_high_c = 8.0\n", "rules.threshold_low_c"),
        ("[rules.groups.x]\nthreshold_high_c = 1.0\n", "rules.groups.x: lists neither"),
        ("[webhook]\nformat = 'teams'\n", 'webhook.format: must be "json" or "slack"'),
        ("[locations]\nd1 = [100.0, 0.0]\n", "locations.d1: not a [lat, lon] pair"),
        ("[rules]\ntypo = 1\n", "rules.typo: unknown key"),
        (
            "[rules.groups.freezers]\nsites = ['s1']\nthresold_high_c = 1.0\n",
            "rules.groups.freezers.thresold_high_c: unknown key",
        ),
        (
            "[rules.groups.a]\nsites = ['s1']\n"
            "[rules.groups.b]\nsites = ['s2']\nhysteresis_c = -1.0\n",
            "rules.groups.b.hysteresis_c: must be at least 0",
        ),
        ("[rules]\nhysteresis_c = -0.5\n", "rules.hysteresis_c: must be at least 0"),
        ("[rules]\noutlier_min_peers = 2\n", "rules.outlier_min_peers: must be at least 3, got 2"),
        ("[rules]\noutlier_z = 2.0\n", "rules.outlier_clear_z: must not exceed outlier_z (2.0)"),
        ("[alerts]\nflap_max_opens = 0\n", "alerts.flap_max_opens: must be at least 1, got 0"),
        ("[webhook]\nqueue_max = 0\n", "webhook.queue_max: must be at least 1, got 0"),
        ("[webhook]\ndevice_rate_per_s = 0\n", "webhook.device_rate_per_s: must be greater"),
        ("[webhook]\ndevice_burst = 0\n", "webhook.device_burst: must be at least 1, got 0"),
        ("[webhook]\nrate_per_s = 20000.0\n", "webhook.rate_per_s: must be at most 10000"),
        ("[webhook]\ncoalesce_s = -1.0\n", "webhook.coalesce_s: must be at least 0"),
        ("[webhook]\ndrain_timeout_s = 301.0\n", "webhook.drain_timeout_s: must be at most 300"),
        ("[webhook]\nmax_text_chars = 8\n", "webhook.max_text_chars: must be at least 16, got 8"),
        ("[webhook]\nmax_response_bytes = -1\n", "webhook.max_response_bytes: must be at least 0"),
        ("[webhook]\nmax_unresolved = 0\n", "webhook.max_unresolved: must be at least 1, got 0"),
        (
            "[kafka]\npublish_alerts = false\n[webhook]\nurl = 'http://h/x'\n",
            "kafka.publish_alerts: must be true when webhook.url is set",
        ),
    ],
)
def test_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(ProcessorConfig, toml)
    assert message in str(err.value)


def test_environment_overrides() -> None:
    cfg = load_config(None, env={"THERMOWATCH_PROCESSOR__SEARCH__INDEX_PREFIX": "x-"})
    assert cfg.search.index_prefix == "x-"


def test_cli_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["processor", "check-config", "-c", str(SAMPLE)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nmax_batch = 0\n", encoding="utf-8")
    assert main(["processor", "check-config", "-c", str(bad)]) == 1
    assert "kafka.max_batch: must be at least 1, got 0" in capsys.readouterr().err


def test_parse_timestamp() -> None:
    assert parse_timestamp("2026-01-01T00:00:00+00:00") == 1_767_225_600_000
    assert parse_timestamp("2026-01-01T00:00:00") == 1_767_225_600_000


def test_rule_groups_take_every_rule_setting_and_nothing_else() -> None:
    """RuleGroup is derived from RuleSettings: same keys, each optional."""
    from cloud_processor.config import RuleGroup, RuleSettings

    assert RuleGroup.__struct_fields__ == ("sites", "devices", *RuleSettings.__struct_fields__)
    assert RuleGroup().overrides() == {}
    group = RuleGroup(sites=["s1"], fault_storm_count=2, threshold_low_c=-30.0)
    assert group.overrides() == {"threshold_low_c": -30.0, "fault_storm_count": 2}
