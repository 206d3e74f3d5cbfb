"""Every stage's own HTTP listener (metrics, health, the web view) defaults to loopback.

``/metrics`` names devices and sites and the web view shows readings: reaching
them from another machine is a choice the config makes (``http.host``), never
a default. The container images set 0.0.0.0 explicitly.
"""

from __future__ import annotations

import ipaddress

import pytest

from cloud_processor.config import ProcessorConfig
from gateway.config import GatewayConfig
from thermowatch.web.config import WebConfig


@pytest.mark.parametrize(
    ("stage", "host"),
    [
        ("gateway", GatewayConfig().http.host),
        ("processor", ProcessorConfig().http.host),
        ("web view", WebConfig().http.host),
    ],
)
def test_http_listeners_default_to_loopback(stage: str, host: str) -> None:
    assert ipaddress.ip_address(host).is_loopback, f"{stage}: http.host defaults to {host}"
