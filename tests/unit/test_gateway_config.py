"""Gateway config: the sample parses to the defaults, errors name the key, CLI exit codes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from gateway.__main__ import main
from gateway.config import GatewayConfig, load_config
from stagekit.config import ConfigError, loads

SAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "sample.toml"


def _uncommented_sample() -> str:
    """The sample with every ``# key = value`` line made live."""
    lines = []
    for line in SAMPLE.read_text().splitlines():
        m = re.fullmatch(r"# ([a-z_]+ = .+)", line)
        lines.append(m.group(1) if m else line)
    return "\n".join(lines)


def test_sample_parses_and_is_all_defaults() -> None:
    assert load_config(SAMPLE, env={}) == GatewayConfig()


def test_sample_shows_every_default_with_its_value() -> None:
    shown = tomllib.loads(_uncommented_sample())
    assert msgspec.convert(shown, GatewayConfig) == GatewayConfig()
    defaults = msgspec.to_builtins(GatewayConfig())
    for section, values in defaults.items():
        for key, value in values.items():
            if isinstance(value, dict):
                assert set(shown[section][key]) == set(value), f"{section}.{key}"
            else:
                assert key in shown[section], f"{section}.{key} missing from sample.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nport = 0\n", "mqtt.port: must be at least 1, got 0"),
        ('[kafka]\ncompression = "brotli"\n', "kafka.compression: must be"),
        ("[kafka]\nenable_idempotence = false\n", "kafka.enable_idempotence: must be true"),
        ('[kafka]\nbootstrap_servers = ["nohost"]\n', "kafka.bootstrap_servers: expected"),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', "kafka.sasl_username: required"),
        ('[mqtt]\nshare_group = "a/b"\n', "mqtt.share_group: must be empty or match"),
        ('[mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n', "mqtt.tls.ca_file: no such file"),
        ("[mqtt]\nkinds = []\n", "mqtt.kinds: must name at least one"),
        ("[mqtt]\nqos = 1\n", "mqtt.qos: unknown key"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        loads(GatewayConfig, text)


def test_environment_overrides() -> None:
    cfg = load_config(
        None,
        env={
            "THERMOWATCH_GATEWAY__MQTT__HOST": "mosquitto",
            "THERMOWATCH_GATEWAY__KAFKA__BOOTSTRAP_SERVERS": '["kafka:9092"]',
            "THERMOWATCH_GATEWAY__GATEWAY__ID": "gw-7",
        },
    )
    assert cfg.mqtt.host == "mosquitto"
    assert cfg.kafka.bootstrap_servers == ("kafka:9092",)
    assert cfg.mqtt_client_id == "gateway:gw-7"


def test_kafka_servers_as_one_comma_separated_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shared [kafka] block takes a list or one string (an environment
    # override is naturally a string); the gateway reads the servers, not the letters.
    cfg = load_config(
        None, env={"THERMOWATCH_GATEWAY__KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092"}
    )
    assert cfg.kafka.servers == ("k1:9092", "k2:9092")
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\nbootstrap_servers = "k1:9092,k2:9092"\n')
    assert main(["check-config", "--config", str(path)]) == 0
    assert "-> kafka k1:9092,k2:9092 " in capsys.readouterr().out


def test_gateway_id_defaults_to_a_valid_host_name() -> None:
    cfg = GatewayConfig()
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", cfg.gateway_id)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[gateway]\nid = "gw-1"\n[mqtt]\nport = 1884\n')
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok: gateway gw-1" in capsys.readouterr().out

    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nreceive_maximum = 70000\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    assert "mqtt.receive_maximum: must be at most 65535, got 70000" in capsys.readouterr().err


def test_print_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\npassword = "hunter2"\n')
    assert main(["print-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "********" in out


def test_registered_in_thermowatch_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from thermowatch.cli import main as thermowatch_main

    assert thermowatch_main(["gateway", "check-config"]) == 0
    assert "ok: gateway" in capsys.readouterr().out


def test_kafka_security_options(tmp_path: Path) -> None:
    import ssl

    from gateway.config import KafkaSettings
    from gateway.kafka import kafka_client_options

    opts = kafka_client_options(
        KafkaSettings(
            bootstrap_servers=("k1:9093", "k2:9093"),
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="gateway",
            sasl_password="pw",
        )
    )
    assert opts["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert opts["security_protocol"] == "SASL_SSL"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"]) == ("SCRAM-SHA-512", "gateway")
    plain = kafka_client_options(KafkaSettings())
    assert "ssl_context" not in plain and "sasl_mechanism" not in plain


def test_an_empty_share_group_subscribes_without_sharing() -> None:
    from gateway.metrics import Metrics
    from gateway.mqtt import MqttSource

    plain = loads(GatewayConfig, '[mqtt]\nshare_group = ""\n')
    shared = loads(GatewayConfig, "")
    for cfg, expected in ((plain, ""), (shared, "$share/gateways/")):
        source = MqttSource(cfg, Metrics())
        assert source.filters == [
            f"{expected}thermowatch/+/+/{kind}" for kind in ("telemetry", "alert", "status")
        ]
