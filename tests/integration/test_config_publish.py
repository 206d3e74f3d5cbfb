"""``thermowatch config publish`` against the shared stack: a signed, retained config."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import paho.mqtt.subscribe as subscribe
import pytest

from deploy.local.mqtt_auth import client_id_for
from deploy.local.stack import LocalStack
from telemetry_contract import DeviceConfig, SignedConfig, decode_as, encode
from telemetry_contract.signing import load_public_key, open_signed_config, trusted_keys
from thermowatch.cli import main

pytestmark = pytest.mark.integration


def test_publish_signs_with_the_stacks_key_and_retains_on_the_devices_config_topic(
    local_stack: LocalStack, stack: dict[str, Any], tmp_path: Path
) -> None:
    mq = stack["mosquitto"]
    site, device = f"cp{uuid.uuid4().hex[:8]}", "dev-test-2"
    topic = f"thermowatch/{site}/{device}/config"
    cfg = DeviceConfig(device_id=device, site=site, version=4, ts=1_767_225_600_000)
    (tmp_path / "c.json").write_bytes(encode(cfg))
    auth = {"username": "admin", "password": mq["users"]["admin"]}
    port, tls = mq["password_port"], {"ca_certs": mq["ca_file"]}  # TLS + password
    ids = iter(client_id_for("admin", f"cp-it-{uuid.uuid4().hex[:6]}-{i}") for i in range(2))
    try:
        assert main(["config", "publish", str(tmp_path / "c.json")]) == 0
        msg = subscribe.simple(
            topic, hostname=mq["host"], port=port, auth=auth, tls=tls, client_id=next(ids)
        )
        envelope = decode_as(msg.payload, SignedConfig, topic=topic)
        assert msg.retain
        public = load_public_key(local_stack.config_signing_key()[1].read_bytes())
        assert open_signed_config(envelope, trusted_keys([public]), topic=topic) == cfg
    finally:
        publish.single(
            topic, b"", qos=1, retain=True, hostname=mq["host"], port=port, auth=auth, tls=tls,
            client_id=next(ids),
        )  # fmt: skip
