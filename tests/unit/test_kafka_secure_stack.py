"""The local stack's Kafka config is secure by default; its secrets and certificates are private.

Pure checks of what the Kafka service renders and writes (no broker): the
broker's behaviour is proved against the real one in
``tests/integration/test_kafka_security.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from deploy.local.kafka_tls import ensure_broker_tls
from deploy.local.process import free_port
from deploy.local.services.kafka import (
    KAFKA_ACLS,
    KAFKA_PLAINTEXT_ENV,
    KAFKA_USERS,
    Kafka,
    security_lines,
)
from deploy.local.stack import LocalStack
from stagekit.kafka import connection_keys, settings_for, warn_if_insecure
from stagekit.settings import KafkaSettings


def _kafka(tmp_path: Path) -> Kafka:
    svc = LocalStack(tmp_path / "stack", tmp_path / "cache", kafka_port=free_port()).service(
        "kafka"
    )
    assert isinstance(svc, Kafka)
    return svc


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_default_listeners_are_sasl_ssl_with_scram_only() -> None:
    props = _props(
        security_lines(
            "127.0.0.1",
            9092,
            9093,
            keystore=Path("/k.p12"),
            ca_file=Path("/ca.pem"),
            key_password="kp",
            broker_password="bp",
        )
    )
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert protocols == {"CLIENT": "SASL_SSL", "CONTROLLER": "SSL"}
    assert "PLAINTEXT" not in props["listeners"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"  # no PLAIN
    assert props["inter.broker.listener.name"] == "CLIENT"
    assert "CONTROLLER://127.0.0.1:9093" in props["listeners"]  # loopback only
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    supers = props["super.users"].split(";")
    assert supers[:2] == ["User:broker", "User:admin"] and len(supers) == 3  # + the node's cert
    assert "allow.everyone.if.no.acl.found" not in props  # default: false


def test_acls_give_each_service_only_its_operations() -> None:
    ops: dict[tuple[str, str], set[str]] = {}
    for user, resource, _pattern, _name, op in KAFKA_ACLS:
        ops.setdefault((user, resource), set()).add(op)
    assert ops[("gateway", "TOPIC")] == {"DESCRIBE", "WRITE", "CREATE"}  # never READ
    assert ops[("web", "TOPIC")] == {"DESCRIBE", "READ"}  # never WRITE
    assert ("web", "GROUP") not in ops and ("gateway", "GROUP") not in ops
    assert {u for u, *_ in KAFKA_ACLS} == set(KAFKA_USERS) - {"admin"}  # admin: super user


def test_plaintext_only_when_asked_and_status_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = _kafka(tmp_path)
    assert svc.security() == {"tls": True, "auth": "scram-sha-512"}
    assert svc.address()["security_protocol"] == "SASL_SSL"
    monkeypatch.setenv(KAFKA_PLAINTEXT_ENV, "1")
    svc = _kafka(tmp_path)
    assert svc.security() == {"tls": False, "auth": "none"}
    assert svc.address() == {"bootstrap": svc.bootstrap, "security_protocol": "PLAINTEXT"}
    assert "users" not in svc.endpoint()
    monkeypatch.setenv(KAFKA_PLAINTEXT_ENV, "0")
    assert _kafka(tmp_path).security()["tls"] is True


def test_plaintext_start_logs_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KAFKA_PLAINTEXT_ENV, "yes")
    svc = _kafka(tmp_path)
    monkeypatch.setattr(svc, "_format", lambda java, props: None)
    monkeypatch.setattr("deploy.local.services.kafka.tool", lambda name: f"/usr/bin/{name}")
    svc.layout.run_dir.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, "deploy.local.services.kafka"):
        svc.launch()
    assert "PLAINTEXT without authentication" in caplog.text
    props = _props((svc.layout.run_dir / "kafka-server.properties").read_text())
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in props)


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    svc = _kafka(tmp_path)
    first = svc.secrets()
    assert set(KAFKA_USERS) <= set(first) and len(set(first.values())) == len(first)
    assert svc.secrets() == first
    assert svc.secrets_file.stat().st_mode & 0o777 == 0o600
    ep = svc.endpoint()
    assert ep["users"] == {u: first[u] for u in KAFKA_USERS}  # not the broker's own
    gateway = settings_for(ep, "gateway")
    assert (gateway.security_protocol, gateway.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (gateway.sasl_username, gateway.sasl_password) == ("gateway", first["gateway"])
    assert gateway.ssl_ca_file == str(svc.ca_file)


def test_rendered_server_config_is_private_and_holds_the_tls_material(tmp_path: Path) -> None:
    svc = _kafka(tmp_path)
    props = _props(svc._props_text())
    assert Path(props["ssl.keystore.location"]).stat().st_mode & 0o777 == 0o600
    assert props["ssl.truststore.location"] == str(svc.ca_file)
    assert svc.secrets()["broker"] in props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert not svc.config_changed()  # nothing running yet: nothing to compare


def test_connection_keys_name_a_missing_user() -> None:
    ep = {"bootstrap": "k:1", "security_protocol": "SASL_SSL", "users": {"admin": "pw"}}
    with pytest.raises(KeyError, match="no password for user 'web'"):
        connection_keys(ep, "web")
    assert settings_for("k:1").security_protocol == "PLAINTEXT"  # a string: explicit plaintext
    assert settings_for(ep, topic_prefix="t").topic_prefix == "t"


def test_broker_certificate_names_every_host_and_chains_to_the_ca(tmp_path: Path) -> None:
    tls = ensure_broker_tls(tmp_path, ["127.0.0.1", "localhost"], "pw")
    key, cert, chain = pkcs12.load_key_and_certificates(tls.keystore_file.read_bytes(), b"pw")
    assert key is not None and cert is not None
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert [c.subject for c in chain] == [ca.subject]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for private in ("ca-key.pem", "broker.p12"):
        assert (tmp_path / private).stat().st_mode & 0o777 == 0o600
    # Same hosts: kept; another host: re-issued by the same CA.
    before = tls.keystore_file.read_bytes()
    assert (
        ensure_broker_tls(tmp_path, ["127.0.0.1", "localhost"], "pw").keystore_file.read_bytes()
        == before
    )
    ensure_broker_tls(tmp_path, ["127.0.0.1", "kafka.example"], "pw")
    assert tls.keystore_file.read_bytes() != before
    assert x509.load_pem_x509_certificate(tls.ca_file.read_bytes()) == ca


def test_a_stage_warns_at_start_about_a_plaintext_kafka(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.stage")
    with caplog.at_level(logging.WARNING, "test.stage"):
        warn_if_insecure(KafkaSettings(bootstrap_servers="k:9092"), log)
        assert "event=kafka_insecure" in caplog.text and "no TLS, no authentication" in caplog.text
        caplog.clear()
        secure = KafkaSettings(security_protocol="SASL_SSL", sasl_username="gateway")
        warn_if_insecure(secure, log)
        assert caplog.text == ""


def test_demo_config_files_are_created_private(tmp_path: Path) -> None:
    from thermowatch.demo.configs import write_toml

    path = tmp_path / "run" / "gateway.toml"
    write_toml(path, {"kafka": {"sasl_password": "secret"}})
    assert path.stat().st_mode & 0o777 == 0o600
    assert 'sasl_password = "secret"' in path.read_text()
