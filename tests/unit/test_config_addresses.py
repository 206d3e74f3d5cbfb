"""Hosts, ports and server URLs in every stage's config; environment overrides named in errors."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.config import ProcessorConfig
from edge_agent.config import EdgeConfig
from gateway.config import GatewayConfig
from stagekit.address import host_problem, server_problems, url_problems
from stagekit.config import ConfigError, loads
from thermowatch.web.config import WebConfig


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "0.0.0.0", "::1", "fe80::1", "localhost", "mosquitto", "broker-1.example.org",
     "example.org.", "a" * 63, "10-0-0-1.nip.io"],
)  # fmt: skip
def test_hosts_accepted(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    "host",
    ["bad host!!", "", " ", "mqtt://x", "-broker", "broker-", "a" * 64, "under_score", "1.2.3.999",
     "1883", "[::1]", "host:1883", "a..b", "x/y"],
)  # fmt: skip
def test_hosts_refused(host: str) -> None:
    assert host_problem(host) is not None


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses())
def test_every_ip_literal_is_a_host(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert host_problem(str(ip)) is None


_LABEL = st.from_regex(r"\A[a-z](?:[a-z0-9-]{0,20}[a-z0-9])?\Z")


@settings(max_examples=100, deadline=None)
@given(st.lists(_LABEL, min_size=1, max_size=4))
def test_every_name_of_rfc1123_labels_is_a_host(labels: list[str]) -> None:
    assert host_problem(".".join(labels)) is None


SERVER, URL = "kafka.bootstrap_servers", "search.url"
CHECKS: dict[str, Callable[[str, str], list[str]]] = {SERVER: server_problems, URL: url_problems}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (SERVER, "k1:9092", None),
        (SERVER, "[::1]:9092", None),
        (SERVER, "10.0.0.5:19092", None),
        (SERVER, "k1", "expected host:port"),
        (SERVER, "k1:0", "port must be in 1..65535"),
        (SERVER, "k1:70000", "port must be in 1..65535"),
        (SERVER, "bad host:9092", "not a host name or IP address: 'bad host'"),
        (SERVER, "::1:9092", "IPv6 host goes in brackets"),
        (SERVER, "kafka://k1:9092", "no scheme"),
        (URL, "http://127.0.0.1:19200", None),
        (URL, "https://search.example.org", None),
        (URL, "http://[::1]:9200/", None),
        (URL, "http://u:pw@search:9200", None),
        (URL, "search:9200", "must start with http:// or https://"),
        (URL, "ftp://search", "must start with http:// or https://"),
        (URL, "http://bad host!!:9200", "not a host name or IP address: 'bad host!!'"),
        (URL, "http://:9200", "not a host name or IP address: ''"),
        (URL, "http://search:0", "port must be in 1..65535"),
        (URL, "http://search:99999", "port must be in 1..65535"),
        (URL, "http://search:port", "port must be in 1..65535"),
    ],
)
def test_servers_and_urls(key: str, value: str, problem: str | None) -> None:
    """Kafka's host:port entries and search URLs: none, or one problem naming the key."""
    got = CHECKS[key](key, value)
    if problem is None:
        assert got == []
    else:
        assert len(got) == 1 and got[0].startswith(f"{key}: "), got
        assert problem in got[0]


def test_a_url_problem_does_not_show_the_password() -> None:
    (got,) = url_problems("search.url", "http://u:s3cret@search:0")
    assert "s3cret" not in got


NOT_HOST = "not a host name or IP address"
BAD = "'bad host!!'"
KS = "kafka.bootstrap_servers"
CASES: list[tuple[type[msgspec.Struct], str, str]] = [
    (EdgeConfig, '[mqtt]\nhost = "bad host!!"\n', f"mqtt.host: {NOT_HOST}: {BAD}"),
    (EdgeConfig, '[mqtt]\nhost = "mqtt://broker"\n', "without mqtt://"),
    (EdgeConfig, "[mqtt]\nport = 70000\n", "mqtt.port: must be in 1..65535, got 70000"),
    (GatewayConfig, '[mqtt]\nhost = "bad host!!"\n', f"mqtt.host: {NOT_HOST}: {BAD}"),
    (GatewayConfig, '[mqtt]\nhost = ""\n', f"mqtt.host: {NOT_HOST}: '' (empty)"),
    (GatewayConfig, "[mqtt]\nport = 0\n", "mqtt.port: must be at least 1, got 0"),
    (GatewayConfig, '[mqtt]\nhost = "broker:1883"\n', "(give the port in its own key)"),
    (GatewayConfig, '[http]\nhost = "0.0.0.0!"\n', f"http.host: {NOT_HOST}"),
    (GatewayConfig, f'[kafka]\n{KS[6:]} = ["k1:9092", "k 2:9092"]\n', f"{KS}: {NOT_HOST}"),
    (GatewayConfig, f'[kafka]\n{KS[6:]} = "k1:65536"\n', f"{KS}: port must be in 1..65535"),
    (ProcessorConfig, '[search]\nurl = "http://bad host!!:9200"\n', f"search.url: {NOT_HOST}"),
    (ProcessorConfig, '[http]\nhost = "local host"\n', f"http.host: {NOT_HOST}"),
    (ProcessorConfig, f'[kafka]\n{KS[6:]} = "k1"\n', f"{KS}: expected host:port"),
    (
        ProcessorConfig,
        '[webhook]\nurl = "https://hooks bad/T0/B0/XYZ"\n',
        f"webhook.url: {NOT_HOST}",
    ),
    (WebConfig, '[http]\nhost = "bad host!!"\n', f"http.host: {NOT_HOST}"),
    (WebConfig, '[search]\nurl = "http://search:0"\n', "search.url: port must be in 1..65535"),
    (WebConfig, f'[kafka]\n{KS[6:]} = "k1:x"\n', f"{KS}: expected host:port"),
]


@pytest.mark.parametrize(("cls", "text", "problem"), CASES)
def test_every_stage_checks_its_addresses(
    cls: type[msgspec.Struct], text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        loads(cls, text)
    assert problem in str(exc.value)


def test_webhook_problem_masks_the_secret_path() -> None:
    with pytest.raises(ConfigError) as exc:
        loads(ProcessorConfig, '[webhook]\nurl = "https://hooks bad/T0/B0/XYZ"\n')
    assert "XYZ" not in str(exc.value)


@pytest.mark.parametrize("cls", [EdgeConfig, GatewayConfig, ProcessorConfig, WebConfig])
def test_default_addresses_pass(cls: type[msgspec.Struct]) -> None:
    loads(cls, "")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "THERMOWATCH_GATEWAY__MQTT__PORT",
            "abc",
            'mqtt.port (from THERMOWATCH_GATEWAY__MQTT__PORT): must be an integer, got "abc"',
        ),
        (
            "THERMOWATCH_GATEWAY__MQTT__PORT",
            "0",
            "mqtt.port (from THERMOWATCH_GATEWAY__MQTT__PORT): must be at least 1, got 0",
        ),
        (
            "THERMOWATCH_GATEWAY__MQTT__HOST",
            "bad host!!",
            "mqtt.host (from THERMOWATCH_GATEWAY__MQTT__HOST): "
            "not a host name or IP address: 'bad host!!'",
        ),
        (
            "THERMOWATCH_GATEWAY__MQTT__PROT",
            "1884",
            "mqtt.prot (from THERMOWATCH_GATEWAY__MQTT__PROT): unknown key",
        ),
        (
            "THERMOWATCH_GATEWAY__MQQT__PORT",
            "1884",
            "mqqt (from THERMOWATCH_GATEWAY__MQQT__PORT): unknown key",
        ),
        (
            "THERMOWATCH_GATEWAY__KAFKA__BOOTSTRAP_SERVERS",
            '["k1:9092", "k2"]',
            "kafka.bootstrap_servers (from THERMOWATCH_GATEWAY__KAFKA__BOOTSTRAP_SERVERS): "
            "expected host:port, got 'k2'",
        ),
    ],
)
def test_a_bad_override_names_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        loads(
            GatewayConfig,
            "[mqtt]\nport = 1883\n",
            env={name: value},
            env_prefix="THERMOWATCH_GATEWAY",
        )
    assert str(exc.value).startswith(message)


def test_a_bad_file_value_names_no_variable() -> None:
    env = {"THERMOWATCH_GATEWAY__MQTT__HOST": "broker"}
    with pytest.raises(ConfigError) as exc:
        loads(GatewayConfig, "[mqtt]\nport = 0\n", env=env, env_prefix="THERMOWATCH_GATEWAY")
    assert str(exc.value) == "mqtt.port: must be at least 1, got 0"
