"""The container deployment (``deploy/compose.yaml``) is closed by default.

Docker does not run here, so these are checks of the file itself: what it
publishes, where its secrets come from, and that the search server's security
is on. docs/security.md ("Container deployment") says what is not TLS yet.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from testsupport.prerequisites import require

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
#: ``${NAME:?message}``: compose refuses to start while NAME is unset or empty.
REQUIRED_VAR = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    require(importlib.util.find_spec("yaml") is not None, "pyyaml (the dev extra)")
    yaml = importlib.import_module("yaml")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    result: dict[str, Any] = compose["services"]
    return result


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def test_every_published_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    published = [
        (name, str(port)) for name, svc in services.items() for port in svc.get("ports", [])
    ]
    assert published, "the file publishes no port: the test reads the wrong file"
    open_ports = [(name, p) for name, p in published if not p.startswith("127.0.0.1:")]
    assert not open_ports, f"published on every interface: {open_ports}"


def test_no_secret_has_a_default_value(services: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "change-me" not in text
    secrets = {
        (name, key): value
        for name, svc in services.items()
        for key, value in _environment(svc).items()
        if key.endswith("PASSWORD") and not value.startswith("$$")
    }
    assert secrets, "no password setting found: the test reads the wrong file"
    defaulted = {k: v for k, v in secrets.items() if not REQUIRED_VAR.match(v)}
    assert not defaulted, f"passwords that are not required from deploy/.env: {defaulted}"


def test_the_search_server_requires_authentication_and_every_client_logs_in(
    services: dict[str, Any],
) -> None:
    search = _environment(services["elasticsearch"])
    assert search["xpack.security.enabled"] == "true"
    assert REQUIRED_VAR.match(search["ELASTIC_PASSWORD"])
    kibana = _environment(services["kibana"])
    assert kibana["ELASTICSEARCH_USERNAME"] == "kibana_system"
    processor = _environment(services["processor"])
    assert processor["THERMOWATCH_PROCESSOR__SEARCH__PASSWORD"]


def test_mqtt_refuses_anonymous_clients() -> None:
    conf = (COMPOSE.parent / "docker" / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    lines = {line.strip() for line in conf.splitlines() if not line.lstrip().startswith("#")}
    assert "allow_anonymous false" in lines
