"""Typed, frozen configuration of the live web view (``thermowatch web``).

Loaded once at start-up by :func:`load_config` (TOML file plus
``THERMOWATCH_WEB__SECTION__KEY`` environment overrides); every problem names
its key. ``sample.toml`` beside this module shows every default.

>>> from stagekit.config import loads
>>> cfg = loads(WebConfig, "[http]\\nport = 9000\\n")
>>> cfg.http.host, cfg.http.port
('127.0.0.1', 9000)
>>> try:
...     loads(WebConfig, "[http]\\nmax_clients = 0\\n")
... except ValueError as exc:
...     print(exc)
http.max_clients: must be at least 1, got 0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final

import msgspec

import stagekit.search
import stagekit.settings
from stagekit.address import host_problems
from stagekit.config import load

__all__ = [
    "ENV_PREFIX",
    "HttpSettings",
    "KafkaSettings",
    "SearchSettings",
    "ViewSettings",
    "WebConfig",
    "load_config",
]

ENV_PREFIX: Final = "THERMOWATCH_WEB"


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the page is served, and how the event stream behaves."""

    #: Loopback by default: the page has no authentication of its own.
    host: str = "127.0.0.1"
    port: int = 8088
    #: Server-sent event streams open at once; more are answered 503.
    max_clients: Annotated[int, msgspec.Meta(ge=1)] = 32
    #: Changes are pushed at most this often (coalesced in between).
    push_interval_s: float = 0.25
    #: A comment line is sent this often on an idle stream (proxies, dead peers).
    heartbeat_s: float = 15.0


class SearchSettings(stagekit.search.SearchSettings, frozen=True, forbid_unknown_fields=True):
    """The search server the processor writes to (history and re-sync); the
    connection keys are the shared block's, ``index_prefix`` must be the processor's."""

    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: The view is reloaded from the search server this often (Kafka is the fast path).
    refresh_s: float = 15.0
    #: The incidents are read this often (the processor writes them to the search
    #: server only; one small query).
    incidents_refresh_s: float = 2.0
    #: Devices with a reading within this window are listed.
    lookback_s: float = 3600.0
    max_devices: Annotated[int, msgspec.Meta(ge=1)] = 500
    max_alerts: Annotated[int, msgspec.Meta(ge=1)] = 200


class KafkaSettings(stagekit.settings.KafkaSettings, frozen=True, forbid_unknown_fields=True):
    """Live updates: the alerts, status and (optionally) telemetry topics.

    The connection keys (TLS, SASL) are the shared block's; ``topic_prefix``
    must be the processor's. An empty ``bootstrap_servers`` disables Kafka:
    the view then follows the search server only.
    """

    bootstrap_servers: tuple[str, ...] | str = "127.0.0.1:19092"
    client_id: str = "thermowatch-web"
    #: Follow the telemetry topic too, so temperatures move within a second.
    live_readings: bool = True
    #: On start, alert changes this old are read again from the alerts topic.
    alert_replay_s: float = 300.0
    #: Wait between attempts while Kafka or the topics are missing.
    retry_s: float = 5.0


class ViewSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the page shows."""

    #: Readings kept per device for the sparkline.
    sparkline_points: Annotated[int, msgspec.Meta(ge=1)] = 60
    #: A device without a reading for this long is shown offline.
    offline_after_s: float = 120.0
    #: An open alert missing from the search server is dropped after this long
    #: (the processor publishes before it writes, so a fresh one may be missing).
    alert_grace_s: float = 30.0
    #: Only these device ids are shown (empty: every device); ``thermowatch demo``
    #: sets its fleet, so devices run by hand on the same broker stay off its page.
    devices: list[str] = msgspec.field(default_factory=list)


class WebConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole web view configuration."""

    http: HttpSettings = HttpSettings()
    search: SearchSettings = SearchSettings()
    kafka: KafkaSettings = KafkaSettings()
    view: ViewSettings = ViewSettings()

    def validate(self) -> list[str]:
        """Cross-field problems as ``section.key: problem``."""
        problems: list[str] = []
        h, s, k, v = self.http, self.search, self.kafka, self.view
        problems += host_problems("http.host", h.host)
        if not 0 <= h.port <= 65535:
            problems.append(f"http.port: must be 0..65535, got {h.port}")
        for name, seconds in (
            ("http.push_interval_s", h.push_interval_s),
            ("http.heartbeat_s", h.heartbeat_s),
            ("search.refresh_s", s.refresh_s),
            ("search.incidents_refresh_s", s.incidents_refresh_s),
            ("search.lookback_s", s.lookback_s),
            ("kafka.retry_s", k.retry_s),
            ("view.offline_after_s", v.offline_after_s),
        ):
            if seconds <= 0:
                problems.append(f"{name}: must be positive, got {seconds}")
        if h.push_interval_s > 1.0:
            problems.append(
                f"http.push_interval_s: must be at most 1.0 (updates within a second), "
                f"got {h.push_interval_s}"
            )
        problems += s.problems("search") + k.problems("kafka", required=False)
        if k.alert_replay_s < 0:
            problems.append(f"kafka.alert_replay_s: must be >= 0, got {k.alert_replay_s}")
        return problems


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> WebConfig:
    """Load and validate the web view configuration (``ConfigError`` names the key)."""
    return load(WebConfig, path, env=os.environ if env is None else env, env_prefix=ENV_PREFIX)
