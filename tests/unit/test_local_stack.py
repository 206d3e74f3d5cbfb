"""The local stack without starting anything: the service registry, ports, the
``status --json`` and ``endpoints()`` shapes, and the doctests of ``deploy.local``
(which pytest's ``testpaths`` does not collect)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from deploy.local.services import (
    KNOWN,
    OPTIONAL_SERVICES,
    REGISTRY,
    SERVICES,
    Service,
    check_names,
)
from deploy.local.stack import LocalStack, StackError, free_port

DOCTESTED = [
    "deploy.local.credentials",
    "deploy.local.layout",
    "deploy.local.mqtt_auth",
    "deploy.local.artemis_auth",
    "deploy.local.process",
    "deploy.local.services",
    "deploy.local.services.kafka",
    "deploy.local.stack",
]
PORT_ENVS = {
    "mosquitto": "THERMOWATCH_MQTT_PORT",
    "kafka": "THERMOWATCH_KAFKA_PORT",
    "search": "THERMOWATCH_SEARCH_PORT",
    "elasticsearch": "THERMOWATCH_ELASTIC_PORT",
    "artemis": "THERMOWATCH_ARTEMIS_PORT",
}


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PORT_ENVS.values():
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("module", DOCTESTED)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_registry_names_order_and_defaults() -> None:
    assert SERVICES == ("mosquitto", "kafka", "search")
    assert OPTIONAL_SERVICES == ("elasticsearch", "artemis")
    assert (*SERVICES, *OPTIONAL_SERVICES) == KNOWN
    assert {cls.name: cls.port_env for cls in REGISTRY} == PORT_ENVS
    assert {cls.name: cls.default_port for cls in REGISTRY} == {
        "mosquitto": 18830,
        "kafka": 19092,
        "search": 19200,
        "elasticsearch": 19201,
        "artemis": 18883,
    }


@pytest.mark.parametrize("cls", REGISTRY, ids=lambda cls: cls.name)
def test_every_service_conforms(cls: type[Service], tmp_path: Path) -> None:
    # Free ports: a shared stack on the default ports must not answer the probes.
    ports = {name: free_port(span=100) for name in KNOWN}
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache", ports=ports)
    svc = stack.service(cls.name)
    assert isinstance(svc, cls)
    assert svc.cmdline_marker and svc.port_env.startswith("THERMOWATCH_")
    assert svc.process.pid_file == tmp_path / "stack" / "run" / f"{cls.name}.pid"
    assert svc.process.log_file == tmp_path / "stack" / "logs" / f"{cls.name}.log"
    assert set(svc.address()) <= {"bootstrap", "url", "ca_file", *KAFKA_CLIENT}
    assert not stack.is_healthy(cls.name, timeout=0.1)  # nothing listens in a new stack


def test_construction_does_no_io(tmp_path: Path) -> None:
    LocalStack(tmp_path / "stack", tmp_path / "cache")
    assert not (tmp_path / "stack").exists() and not (tmp_path / "cache").exists()


#: What ``status --json`` says of each default service's client listener.
MOSQUITTO_SECURITY = {"tls": True, "auth": "certificate+password"}
KAFKA_SECURITY = {"tls": True, "auth": "scram-sha-512"}
#: How a Kafka client connects (``address()``, in ``status --json`` too): no passwords there.
KAFKA_CLIENT = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}
SEARCH_SECURITY = {"tls": True, "auth": "basic"}


def test_status_shape_of_a_stopped_stack(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, mqtt_port=1883, kafka_port=9092, search_port=9200)
    search_ca = str(stack.root / "search-tls" / "ca.pem")
    assert stack.status() == {
        "mosquitto": {"host": "127.0.0.1", "port": 1883, "pid": None, **MOSQUITTO_SECURITY},
        "kafka": {
            "host": "127.0.0.1",
            "port": 9092,
            "pid": None,
            "bootstrap": "127.0.0.1:9092",
            **KAFKA_CLIENT,
            "ca_file": str(tmp_path / "kafka-tls" / "ca.pem"),
            **KAFKA_SECURITY,
        },
        "search": {
            "host": "127.0.0.1",
            "port": 9200,
            "pid": None,
            "url": "https://127.0.0.1:9200",
            "ca_file": search_ca,
            **SEARCH_SECURITY,
        },
    }
    assert list(stack.status(["elasticsearch", "kafka"])) == ["kafka", "elasticsearch"]
    assert stack.status(["elasticsearch"])["elasticsearch"]["url"] == "http://127.0.0.1:19201"


def test_endpoints_name_every_service_and_the_mqtt_users(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    endpoints = stack.endpoints()
    assert list(endpoints) == list(KNOWN)
    assert set(endpoints["mosquitto"]) == {
        "host", "port", "users", "tls", "password_port", "ca_file", "certs_dir"
    }  # fmt: skip
    assert endpoints["mosquitto"]["password_port"] == endpoints["mosquitto"]["port"] + 1
    assert endpoints["mosquitto"]["users"] == stack.credentials()
    assert {"admin", "gateway", "config-publisher", "dev-test-1", "s3-d10"} <= set(
        stack.credentials()
    )
    assert "processor" not in stack.credentials()  # retired: it could read and write everything
    assert endpoints["kafka"]["bootstrap"] == "127.0.0.1:19092"
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_ports_from_arguments_environment_and_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERMOWATCH_KAFKA_PORT", "29092")
    monkeypatch.setenv("THERMOWATCH_SEARCH_PORT", "")
    stack = LocalStack(tmp_path, mqtt_port=28830, ports={"elasticsearch": 29201})
    assert [stack.port(n) for n in KNOWN] == [28830, 29092, 19200, 29201, 18883]


@pytest.mark.parametrize("raw", ["abc", "0", "65536"])
def test_a_bad_port_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("THERMOWATCH_MQTT_PORT", raw)
    with pytest.raises(StackError, match="THERMOWATCH_MQTT_PORT: must be"):
        LocalStack(tmp_path)


def test_unknown_service_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"unknown service\(s\) bogus; known: mosquitto, kafka"):
        LocalStack(tmp_path).status(["bogus"])
    assert check_names([]) == list(SERVICES)


def test_down_of_a_stack_that_never_ran(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack")
    assert stack.down() == {
        "search": "not running",
        "kafka": "not running",
        "mosquitto": "not running",
    }
    assert stack.log_tail("kafka") == []
    assert not stack.kill("kafka")


def test_a_broker_started_from_an_older_config_template_is_seen_as_changed(
    tmp_path: Path,
) -> None:
    # A checkout upgraded under a running stack (new broker limits): `up`
    # restarts the broker instead of testing against the old limits.
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache")
    broker = stack.service("mosquitto")
    assert not broker.config_changed()  # never started: nothing to compare
    stack.run_dir.mkdir(parents=True)
    conf = stack.run_dir / "mosquitto.conf"
    broker.launch()
    assert conf.is_file()
    assert not broker.config_changed()
    conf.write_text(conf.read_text() + "# an older template\n")
    assert broker.config_changed()
    assert not stack.service("kafka").config_changed()


def test_broker_listeners_are_tls_by_default_plaintext_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("THERMOWATCH_MQTT_PLAINTEXT", raising=False)
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache", mqtt_port=1883)
    broker = stack.service("mosquitto")
    stack.run_dir.mkdir(parents=True)
    broker.launch()
    lines = (stack.run_dir / "mosquitto.conf").read_text().splitlines()
    listeners = [line for line in lines if line.startswith("listener ")]
    assert listeners == ["listener 1883 127.0.0.1", "listener 1884 127.0.0.1"]
    # The client port requires a certificate from the installation's CA, names the
    # user after it and reads the CRL; both listeners have the server certificate.
    first = lines[lines.index(listeners[0]) : lines.index(listeners[1])]
    for setting in ("require_certificate true", "use_identity_as_username true"):
        assert setting in first
    assert f"crlfile {tmp_path / 'stack/pki/crl.pem'}" in first
    assert lines.count(f"certfile {tmp_path / 'stack/pki/server.crt'}") == 2
    assert "allow_anonymous false" in lines
    assert (tmp_path / "stack/pki/ca.key").stat().st_mode & 0o777 == 0o600
    assert not any("plaintext" in r.message for r in caplog.records)

    monkeypatch.setenv("THERMOWATCH_MQTT_PLAINTEXT", "1")
    assert broker.config_changed()  # `up` restarts a running broker with the new listener
    with caplog.at_level("WARNING"):
        broker.launch()
    lines = (stack.run_dir / "mosquitto.conf").read_text().splitlines()
    assert "listener 1885 127.0.0.1" in lines
    assert any("plaintext listener on" in r.message for r in caplog.records)
    assert broker.security() == {"tls": False, "auth": "certificate+password"}
    assert stack.endpoints()["mosquitto"]["plain_port"] == 1885
    monkeypatch.setenv("THERMOWATCH_MQTT_PLAINTEXT", "maybe")  # a typo never means "off"
    with pytest.raises(StackError, match=r"^THERMOWATCH_MQTT_PLAINTEXT: must be 1 or 0"):
        broker.launch()


def test_free_ports_stay_outside_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import deploy.local.process as process

    # A range that leaves only the ports above it: every pick must land there.
    monkeypatch.setattr(process, "ephemeral_port_range", lambda: (20000, 60999))
    picks = [process.free_port(span=1) for _ in range(50)]
    assert all(p >= 61000 and p + 1 <= 65535 for p in picks), picks


def test_the_stacks_default_ports_are_outside_linuxs_default_ephemeral_range() -> None:
    from deploy.local.process import DEFAULT_EPHEMERAL_RANGE
    from deploy.local.stack import (
        DEFAULT_ELASTIC_PORT,
        DEFAULT_KAFKA_PORT,
        DEFAULT_MQTT_PORT,
        DEFAULT_SEARCH_PORT,
    )

    low, high = DEFAULT_EPHEMERAL_RANGE
    for port in (DEFAULT_MQTT_PORT, DEFAULT_KAFKA_PORT, DEFAULT_SEARCH_PORT, DEFAULT_ELASTIC_PORT):
        # Kafka's controller on + 1, a search node's transport on + 100.
        assert all(not low <= p <= high for p in (port, port + 1, port + 100)), port


def test_a_port_in_the_ephemeral_range_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from deploy.local.process import ephemeral_port_range

    low, _high = ephemeral_port_range()
    with caplog.at_level("WARNING", logger="deploy.local.services.base"):
        LocalStack(stack_dir=tmp_path, kafka_port=low + 10)
    assert f"service=kafka port={low + 10}" in caplog.text
    assert "THERMOWATCH_KAFKA_PORT" in caplog.text


def test_write_private_never_reuses_a_planted_tmp_file(tmp_path: Path) -> None:
    """A world-readable file (or a symlink) left where the tmp file goes is
    replaced, not written through: the result is 0600 and the target untouched."""
    import os

    from deploy.local.layout import write_private

    target = tmp_path / "secret.json"
    bait = tmp_path / "elsewhere"
    bait.write_text("untouched")
    planted = tmp_path / f".secret.json.{os.getpid()}.tmp"
    planted.symlink_to(bait)
    write_private(target, "s3cret")
    assert target.read_text() == "s3cret" and bait.read_text() == "untouched"
    assert target.stat().st_mode & 0o777 == 0o600


def test_maven_zip_unpacks_once_and_a_refused_download_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    from deploy.local import install
    from deploy.local.services.artemis import _check_sha256

    calls: list[tuple[str, ...]] = []

    def fake_mvn(*args: str, what: str) -> None:  # what Maven's copy goal leaves
        calls.append(args)
        out = Path(next(a for a in args if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        out.mkdir(parents=True)
        with zipfile.ZipFile(out / "dist-1.0-bin.zip", "w") as zf:
            zf.writestr("dist-1.0/bin/run", "#!/bin/sh\n")

    monkeypatch.setattr(install, "mvn", fake_mvn)
    with pytest.raises(StackError, match=r"artemis: dist-1.0-bin.zip has SHA-256 [0-9a-f]{64}"):
        install.maven_zip(tmp_path, "g:a:1.0:zip:bin", "dist-1.0", "1", check=_check_sha256)
    assert list(tmp_path.iterdir()) == []  # no half-unpacked folder, no staging left
    home = install.maven_zip(tmp_path, "g:a:1.0:zip:bin", "dist-1.0", "1", strict_checksums=True)
    assert (home / "bin" / "run").read_text() == "#!/bin/sh\n"
    assert calls[-1][0] == "-C"
    assert install.maven_zip(tmp_path, "g:a:1.0:zip:bin", "dist-1.0", "1") == home
    assert len(calls) == 2  # the second call found the marker
    assert [p.name for p in tmp_path.iterdir()] == ["dist-1.0"]
