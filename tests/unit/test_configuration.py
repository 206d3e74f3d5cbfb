"""The shared config loader: errors name the key; env overrides; secrets masked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from stagekit.config import ConfigError, dump_toml, load, loads


class Mqtt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    qos: Literal[0, 1] = 1
    password: str = ""


class Outbox(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_rows: Annotated[int, msgspec.Meta(ge=1)] = 1000
    max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0


class Cfg(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    device_id: str
    mqtt: Mqtt = Mqtt()
    outbox: Outbox = Outbox()
    tags: list[str] = msgspec.field(default_factory=list)

    def validate(self) -> list[str]:
        if self.mqtt.qos == 0 and self.outbox.max_rows > 0 and self.device_id == "strict":
            return ["mqtt.qos: must be 1 when the outbox is used"]
        return []


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('device_id="d"\n[mqtt]\nqos = 2', "mqtt.qos: must be 0 or 1, got 2"),
        ('device_id="d"\n[mqtt]\nport = 0', "mqtt.port: must be at least 1, got 0"),
        ('device_id="d"\n[mqtt]\nport = "x"', 'mqtt.port: must be an integer, got "x"'),
        ('device_id="d"\n[mqtt]\nprot = 1', "mqtt.prot: unknown key"),
        ("[mqtt]\nqos = 1", "device_id: required, not set"),
        ('device_id="d"\n[outbox]\nmax_age_s = 0', "outbox.max_age_s: must be greater than 0"),
        ('device_id="d"\nmqtt = 3', "mqtt: must be a table, got 3"),
        ('device_id="strict"\n[mqtt]\nqos = 0', "mqtt.qos: must be 1 when the outbox is used"),
        ("device_id = ", "not valid TOML"),
    ],
)
def test_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(Cfg, toml)
    assert str(info.value).startswith(message)


def test_env_overrides_are_typed_and_nested() -> None:
    env = {
        "TW__MQTT__PORT": "1884",
        "TW__MQTT__HOST": "broker.local",
        "TW__TAGS": '["a", "b"]',
        "OTHER__MQTT__PORT": "9",
    }
    cfg = loads(Cfg, 'device_id = "d"\n[mqtt]\nport = 1', env=env, env_prefix="TW")
    assert (cfg.mqtt.port, cfg.mqtt.host, cfg.tags) == (1884, "broker.local", ["a", "b"])


def test_env_override_errors_name_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"^mqtt\.qos \(from TW__MQTT__QOS\): must be 0 or 1, got 5"
    ):
        loads(Cfg, 'device_id = "d"', env={"TW__MQTT__QOS": "5"}, env_prefix="TW")


def test_config_is_frozen() -> None:
    cfg = loads(Cfg, 'device_id = "d"')
    with pytest.raises(AttributeError):
        cfg.device_id = "x"  # type: ignore[misc]


def test_load_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(Cfg, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "d"\n[mqtt]\nqos = 7\n')
    with pytest.raises(ConfigError, match=rf"^{bad}: mqtt\.qos: must be 0 or 1, got 7$"):
        load(Cfg, bad)


def test_dump_masks_secrets_and_round_trips() -> None:
    cfg = loads(Cfg, 'device_id = "d"\n[mqtt]\npassword = "hunter2"')
    text = dump_toml(cfg)
    assert "hunter2" not in text
    assert 'password = "********"' in text
    again = loads(Cfg, text.replace('"********"', '"hunter2"'))
    assert again == cfg


def test_print_config_hides_a_webhook_urls_path_and_any_urls_user_info() -> None:
    # A Slack webhook URL's path is its credential; a search URL keeps host and port.
    from cloud_processor.config import ProcessorConfig

    cfg = loads(
        ProcessorConfig,
        '[webhook]\nurl = "https://hooks.slack.com/services/T0/B0/SECRETPATH"\n'
        '[search]\nurl = "http://admin:hunter2@127.0.0.1:19200"\n',
    )
    text = dump_toml(cfg)
    assert "SECRETPATH" not in text
    assert "hunter2" not in text
    assert 'url = "https://hooks.slack.com/********"' in text
    assert 'url = "http://********@127.0.0.1:19200"' in text
