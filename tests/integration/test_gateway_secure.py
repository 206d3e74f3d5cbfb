"""The gateway against secured brokers: MQTT over TLS with a client certificate,
Kafka with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) over plaintext and over TLS.

Everything here is private to the test: a certificate authority, server and
client certificates made with ``cryptography``; a Mosquitto whose only
listener is TLS and demands a client certificate; a single-node Kafka (the
stack's cached jars) whose client listeners are SASL_PLAINTEXT and SASL_SSL,
with SCRAM users created when its storage is formatted. The shared stack is
not touched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from deploy.local.errors import StackError
from deploy.local.install import tool
from deploy.local.stack import LocalStack, free_port
from gateway.app import build_gateway
from gateway.config import (
    GatewayConfig,
    GatewaySettings,
    HttpSettings,
    KafkaSettings,
    MqttSettings,
    TlsSettings,
)
from telemetry_contract import kafka_topics
from testsupport.prerequisites import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 180.0
SASL_USER, SASL_PASSWORD = "gw-secure", "s3cret-gw"


def wait_for(pred: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --- certificates -------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    server_pem: Path  # key + chain in one file (Kafka's PEM keystore)
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certs(root: Path) -> Certs:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("thermowatch test CA"))
        .issuer_name(_name("thermowatch test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("127.0.0.1", server=True)
    client, client_key = leaf("thermowatch-gateway", server=False)
    pem = serialization.Encoding.PEM
    certs = Certs(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        server_pem=root / "server-keystore.pem",
        client_cert=root / "client.pem",
        client_key=root / "client.key",
    )
    certs.ca.write_bytes(ca.public_bytes(pem))
    certs.server_cert.write_bytes(server.public_bytes(pem))
    certs.server_key.write_bytes(_key_pem(server_key))
    certs.server_pem.write_bytes(
        _key_pem(server_key) + server.public_bytes(pem) + ca.public_bytes(pem)
    )
    certs.client_cert.write_bytes(client.public_bytes(pem))
    certs.client_key.write_bytes(_key_pem(client_key))
    return certs


# --- private brokers ----------------------------------------------------------------


class Service:
    """A private broker process with its log in the test's directory."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Brokers:
    certs: Certs
    mqtt_port: int
    kafka_sasl_plain: int  # SASL_PLAINTEXT listener
    kafka_sasl_ssl: int  # SASL_SSL listener
    kafka_internal: int  # PLAINTEXT, for the broker itself only


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    # The local stack's own installers: Mosquitto and Java from Debian, the
    # Kafka jars from Maven Central, each only when missing (then cached).
    stack = LocalStack()
    try:
        for name in ("mosquitto", "kafka"):
            stack.service(name).install()
    except StackError as exc:
        require(False, f"the brokers' tools and jars: {exc}")
    libs = stack.layout.cache / "kafka-libs"
    root = tmp_path_factory.mktemp("secure")
    certs = make_certs(root)
    ports = Brokers(certs, free_port(), free_port(), free_port(), free_port())
    controller = free_port()

    mosq_conf = root / "mosquitto.conf"
    mosq_conf.write_text(
        f"""per_listener_settings false
listener {ports.mqtt_port} 127.0.0.1
cafile {certs.ca}
certfile {certs.server_cert}
keyfile {certs.server_key}
require_certificate true
use_identity_as_username true
allow_anonymous false
persistence false
log_dest stderr
{"user root" if os.geteuid() == 0 else ""}
""",
        encoding="utf-8",
    )
    data = root / "kafka-data"
    props = root / "server.properties"
    jaas = {
        "plain": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{SASL_USER}="{SASL_PASSWORD}";'
        ),
        "scram-sha-256": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "scram-sha-512": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"listeners=INTERNAL://127.0.0.1:{ports.kafka_internal},"
        f"SASL_PLAINTEXT://127.0.0.1:{ports.kafka_sasl_plain},"
        f"SASL_SSL://127.0.0.1:{ports.kafka_sasl_ssl},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=INTERNAL://127.0.0.1:{ports.kafka_internal},"
        f"SASL_PLAINTEXT://127.0.0.1:{ports.kafka_sasl_plain},"
        f"SASL_SSL://127.0.0.1:{ports.kafka_sasl_ssl}",
        "listener.security.protocol.map=INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
        "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=INTERNAL",
        "controller.listener.names=CONTROLLER",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"log.dirs={data}",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "auto.create.topics.enable=false",
        "group.initial.rebalance.delay.ms=0",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certs.server_pem}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certs.ca}",
        "ssl.client.auth=none",
    ]
    for listener in ("sasl_plaintext", "sasl_ssl"):
        for mech, conf in jaas.items():
            lines.append(f"listener.name.{listener}.{mech}.sasl.jaas.config={conf}")
    props.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log4j = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka-log4j2.properties"
    java = [
        tool("java"),
        f"-Dlog4j2.configurationFile={log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs}/*",
    ]
    fmt = subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            "tZ9o3Gp0Q1qoxKkF3nM4aA",
            "-c",
            str(props),
            "--standalone",
            "--add-scram",
            f"SCRAM-SHA-256=[name={SASL_USER},password={SASL_PASSWORD}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    mosquitto = Service([tool("mosquitto"), "-c", str(mosq_conf)], root / "mosquitto.log")
    kafka = Service(
        [java[0], "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)],
        root / "kafka.log",
    )
    try:
        wait_for(lambda: port_open(ports.mqtt_port), f"mosquitto TLS\n{mosquitto.tail()}", 60)
        wait_for(
            lambda: port_open(ports.kafka_sasl_plain) and port_open(ports.kafka_sasl_ssl),
            "kafka SASL listeners",
        )
        yield ports
    finally:
        kafka.stop()
        mosquitto.stop()


# --- helpers --------------------------------------------------------------------------


def tls_publish(brokers: Brokers, device: str, messages: list[tuple[str, bytes]]) -> None:
    c = brokers.certs
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"secure-pub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set(ca_certs=str(c.ca), certfile=str(c.client_cert), keyfile=str(c.client_key))
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", brokers.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(30)
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def reading(device: str, site: str, seq: int) -> bytes:
    return json.dumps(
        {
            "type": "reading",
            "schema_version": 1,
            "device_id": device,
            "sensor_id": "host",
            "site": site,
            "seq": seq,
            "ts": int(time.time() * 1000),
            "temp_c": 21.0,
        }
    ).encode()


def config_for(brokers: Brokers, protocol: str, mechanism: str, run: str) -> GatewayConfig:
    c = brokers.certs
    port = brokers.kafka_sasl_ssl if protocol == "SASL_SSL" else brokers.kafka_sasl_plain
    return GatewayConfig(
        gateway=GatewaySettings(id=f"sec-{run}", shutdown_grace_s=2.0),
        mqtt=MqttSettings(
            host="127.0.0.1",
            port=brokers.mqtt_port,
            share_group=f"sec{run}",
            tls=TlsSettings(
                enabled=True,
                ca_file=str(c.ca),
                cert_file=str(c.client_cert),
                key_file=str(c.client_key),
            ),
            reconnect_min_s=0.5,
            reconnect_max_s=2.0,
        ),
        kafka=KafkaSettings(
            bootstrap_servers=(f"127.0.0.1:{port}",),
            topic_prefix=f"sec{run}",
            security_protocol=protocol,  # type: ignore[arg-type]
            sasl_mechanism=mechanism,  # type: ignore[arg-type]
            sasl_username=SASL_USER,
            sasl_password=SASL_PASSWORD,
            ssl_ca_file=str(c.ca) if protocol == "SASL_SSL" else "",
            partitions=1,
            request_timeout_ms=10_000,
        ),
        http=HttpSettings(enabled=False),
    )


async def read_all(cfg: GatewayConfig, topic: str, want: int) -> list[Any]:
    k = cfg.kafka
    opts: dict[str, Any] = {
        "security_protocol": k.security_protocol,
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.sasl_username,
        "sasl_plain_password": k.sasl_password,
    }
    if k.security_protocol == "SASL_SSL":
        opts["ssl_context"] = ssl.create_default_context(cafile=k.ssl_ca_file)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=list(k.bootstrap_servers),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **opts,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(records) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for recs in batches.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
        ("SASL_SSL", "SCRAM-SHA-512"),
    ],
)
async def test_tls_mqtt_to_sasl_kafka(brokers: Brokers, protocol: str, mechanism: str) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = config_for(brokers, protocol, mechanism, run)
    assert cfg.validate() == []
    gateway = build_gateway(cfg)
    task = asyncio.create_task(gateway.run())
    try:
        deadline = time.monotonic() + TIMEOUT
        while not gateway.readiness()[0]:
            assert not task.done(), "gateway exited"
            assert time.monotonic() < deadline, f"not ready: {gateway.readiness()[1]}"
            await asyncio.sleep(0.2)
        device, n = f"sec-{run}", 50
        messages = [
            (f"thermowatch/ss/{device}/telemetry", reading(device, "ss", seq)) for seq in range(n)
        ]
        await asyncio.to_thread(tls_publish, brokers, device, messages)
        records = await read_all(cfg, kafka_topics(cfg.kafka.topic_prefix).telemetry, n)
        assert sorted(json.loads(r.value)["seq"] for r in records) == list(range(n))
        assert all(r.key == device.encode() for r in records)
        await asyncio.to_thread(wait_for, lambda: gateway.in_flight == 0, "acks")
        assert gateway.in_flight == 0  # every message acknowledged over TLS
    finally:
        gateway.stop()
        assert await asyncio.wait_for(task, TIMEOUT) == 0


async def test_wrong_sasl_password_is_never_ready(brokers: Brokers) -> None:
    import msgspec

    cfg = config_for(brokers, "SASL_PLAINTEXT", "SCRAM-SHA-256", uuid.uuid4().hex[:8])
    cfg = msgspec.structs.replace(
        cfg, kafka=msgspec.structs.replace(cfg.kafka, sasl_password="wrong")
    )
    gateway = build_gateway(cfg)
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.sleep(8)
        assert not gateway.readiness()[0]
    finally:
        gateway.stop()
        await asyncio.wait_for(task, TIMEOUT)
