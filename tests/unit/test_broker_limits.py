"""The broker limits we ship: present, equal in both configs, consistent with the gateway.

The values and why: deploy/local/mosquitto.conf. The integration test
tests/integration/test_gateway_hostile.py runs Mosquitto with the shipped
template and checks the broker enforces them (a 20 MiB publish is refused).
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import PACKET_HEADROOM, GatewayConfig
from telemetry_contract import MAX_PAYLOAD_BYTES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = [DEPLOY / "local" / "mosquitto.conf", DEPLOY / "docker" / "mosquitto" / "mosquitto.conf"]
LIMITS = (
    "max_packet_size",
    "max_queued_messages",
    "max_queued_bytes",
    "max_inflight_messages",
    "persistent_client_expiration",
    "set_tcp_nodelay",
)


def options(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value
    return out


def _bytes(value: str) -> int:
    return int(value)


def test_both_shipped_configs_set_every_limit_to_the_same_value() -> None:
    local, docker = (options(p) for p in CONFIGS)
    for key in LIMITS:
        assert key in local and key in docker, key
        assert local[key] == docker[key], key


def test_the_broker_limits_fit_the_contract_and_the_gateway() -> None:
    broker = options(CONFIGS[0])
    max_packet = _bytes(broker["max_packet_size"])
    # A valid message always fits, with its topic and properties...
    assert max_packet >= MAX_PAYLOAD_BYTES + PACKET_HEADROOM
    # ...a 20 MiB publish does not...
    assert max_packet < 20 * 1024 * 1024
    # ...and the gateway accepts anything the broker accepted (else the broker
    # would drop, for the gateway, what it acknowledged to a device).
    assert GatewayConfig().mqtt.max_packet_size >= max_packet
    # The queue holds the whole backlog of the count limit when readings are
    # ~200 bytes; the byte limit binds only for large messages.
    assert _bytes(broker["max_queued_bytes"]) >= 200 * int(broker["max_queued_messages"])
    # Sessions outlive the gateway's own session expiry (7 days).
    assert broker["persistent_client_expiration"] == "14d"
    assert GatewayConfig().mqtt.session_expiry_s < 14 * 24 * 3600


def test_a_gateway_max_packet_size_below_a_valid_payload_is_a_config_error() -> None:
    from stagekit.config import ConfigError, loads

    try:
        loads(GatewayConfig, "[mqtt]\nmax_packet_size = 4096\n")
    except ConfigError as exc:
        assert "mqtt.max_packet_size: must be at least bridge.max_payload_bytes" in str(exc)
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("a 4 KiB max_packet_size was accepted")


def test_the_broker_writes_without_nagle_delay() -> None:
    # Else a TLS 1.3 client's CONNACK waits ~40 ms (docs: deploy/local/mosquitto.conf).
    assert options(CONFIGS[0])["set_tcp_nodelay"] == "true"
