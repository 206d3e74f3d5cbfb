"""``gateway retire``: a removed replica's share of the stream is not stranded.

Mosquitto 2.0 keeps queueing a shared-subscription member's share in its
persistent session while that member is offline. This test shows that with
the real Mosquitto and Kafka (a stopped gateway's share stays in its session),
then retires the stopped gateway and checks that every message is in Kafka
and that its session is gone (the broker stops queueing for it).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry_contract import kafka_topics
from testsupport.mqtt_tls import stack_tls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _load_e2e() -> Any:
    # The e2e module's helpers (gateway subprocess, publisher, Kafka reader);
    # loaded by path because tests are imported with --import-mode=importlib.
    path = Path(__file__).with_name("test_gateway_e2e.py")
    spec = importlib.util.spec_from_file_location("_gateway_e2e_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e()
env = e2e.env  # fixtures
gateways = e2e.gateways
REPO = e2e.REPO
TIMEOUT = e2e.TIMEOUT


def session_present(host: str, port: int, password: str, client_id: str) -> bool:
    """Connect with ``client_id`` (clean start off, session expiry 0): does a session exist?

    With expiry 0 the probe leaves no session behind.
    """
    result: list[bool] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        assert not reason.is_failure, reason
        result.append(bool(flags.session_present))
        done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,  # whatever arrives is not acknowledged: nothing is consumed
    )
    client.username_pw_set("gateway", password)
    tls = stack_tls("gateway")  # a service: TLS and its password
    tls.apply(client)
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(host, tls.port or port, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert done.wait(30), "probe could not connect"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_retire_drains_a_stopped_gateways_session_into_kafka_and_ends_it(
    env: Any, tmp_path: Path, gateways: list[Any]
) -> None:
    device, password = env.device("ret")
    a = e2e.make_gateway(env, tmp_path, gateways, f"ra-{env.run}")
    b = e2e.make_gateway(env, tmp_path, gateways, f"rb-{env.run}")
    a.start()
    b.start()
    a.wait_ready()
    b.wait_ready()
    a_client_id = f"gateway:{a.gateway_id}"
    assert a.stop() == 0  # replica removed; its session (and share) stays on the broker
    topics = kafka_topics(a.prefix)
    total = 600
    pub = e2e.Publisher(env.mqtt_host, env.mqtt_port, device, password)
    try:
        with e2e.reading_kafka(env.kafka, [topics.telemetry]) as reader:
            infos = [
                pub.publish(f"thermowatch/sr/{device}/telemetry", e2e.reading(device, "sr", seq))
                for seq in range(total)
            ]
            e2e.wait_published(infos)
            e2e.wait_for(
                lambda: b.metric("thermowatch_gateway_forwarded_total") >= total // 4,
                "the live gateway forwarding its share",
            )
            time.sleep(3)
            stranded = set(range(total)) - set(e2e.seqs_of(reader.snapshot(), device))
            # The premise: Mosquitto queued the stopped member's share in its session.
            assert stranded, "broker delivered everything to the live member"

            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "retire",
                    "--config",
                    str(a.write_config()),
                    "--idle-s",
                    "2",
                    "--timeout-s",
                    str(TIMEOUT),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=TIMEOUT + 60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "session_ended=True" in done.stdout, done.stdout
            e2e.wait_for(
                lambda: set(e2e.seqs_of(reader.snapshot(), device)) == set(range(total)),
                "every seq in Kafka after the retirement",
            )

            # The session is gone: the broker no longer queues a share for it, so
            # new messages all reach the live gateway.
            assert not session_present(
                env.mqtt_host, env.mqtt_port, env.users["gateway"], a_client_id
            )
            more = [
                pub.publish(f"thermowatch/sr/{device}/telemetry", e2e.reading(device, "sr", seq))
                for seq in range(total, total + 200)
            ]
            e2e.wait_published(more)
            e2e.wait_for(
                lambda: set(e2e.seqs_of(reader.snapshot(), device)) == set(range(total + 200)),
                "new messages all forwarded by the remaining gateway",
            )
    finally:
        pub.close()
    assert b.alive() and b.ready()


def test_retire_without_a_session_ends_cleanly(
    env: Any, tmp_path: Path, gateways: list[Any]
) -> None:
    never = e2e.make_gateway(env, tmp_path, gateways, f"rn-{env.run}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "retire",
            "--config",
            str(never.write_config()),
            "--idle-s",
            "0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "received=0 session_ended=True" in done.stdout
    client_id = f"gateway:{never.gateway_id}"
    assert not session_present(env.mqtt_host, env.mqtt_port, env.users["gateway"], client_id)
