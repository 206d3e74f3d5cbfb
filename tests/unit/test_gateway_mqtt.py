"""The gateway's MQTT source subscribes again on every accepted connection.

Also when the broker says the session is present: Mosquitto before 2.0.12
("Fix $share subscriptions not being recovered for durable clients that
reconnect", ChangeLog 2.0.12) keeps the queued messages of a resumed session
but drops its *shared* subscriptions, so a gateway that trusted
``session_present`` would get its backlog and then nothing more (Debian 12
ships 2.0.11). A plain subscription survives there; the re-subscribe is
harmless on every broker (MQTT v5 3.8.4: it replaces the existing one).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.mqtt import MqttSource


class _Client:
    """What ``_handle_connect`` uses of paho's client: ``subscribe``."""

    def __init__(self) -> None:
        self.subscribed: list[list[str]] = []

    def subscribe(self, topics: list[tuple[str, Any]]) -> tuple[int, int]:
        self.subscribed.append([topic for topic, _options in topics])
        return 0, len(self.subscribed)


@pytest.mark.parametrize("session_present", [False, True])
def test_every_accepted_connection_subscribes_even_to_a_resumed_session(
    session_present: bool,
) -> None:
    source = MqttSource(GatewayConfig(), Metrics())
    client = _Client()
    accepted = ReasonCode(PacketTypes.CONNACK, "Success")
    for _connection in (1, 2):
        flags = SimpleNamespace(session_present=session_present)
        source._handle_connect(client, None, flags, accepted, None)  # type: ignore[arg-type]
    assert source.filters[0].startswith("$share/gateways/")
    assert client.subscribed == [source.filters, source.filters]
    assert source.session_present is session_present


def test_a_retiring_gateway_subscribes_to_nothing() -> None:
    source = MqttSource(GatewayConfig(), Metrics(), subscribe=False)
    client = _Client()
    flags = SimpleNamespace(session_present=True)
    source._handle_connect(client, None, flags, ReasonCode(PacketTypes.CONNACK, "Success"), None)  # type: ignore[arg-type]
    assert client.subscribed == []
