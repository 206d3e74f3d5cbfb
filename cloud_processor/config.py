"""Typed, frozen configuration of the cloud processor.

Loaded once at start-up by :func:`load_config` (TOML file plus
``THERMOWATCH_PROCESSOR__SECTION__KEY`` environment overrides); every problem
names its key. ``sample.toml`` beside this module shows every default.

Fleet rules are configured once under ``[rules]`` and refined per site or per
device group under ``[rules.groups.<name>]``: a group lists ``sites`` and/or
``devices`` and sets only the keys it changes. Later groups win over earlier
ones, device matches over site matches.

>>> from stagekit.config import loads
>>> cfg = loads(ProcessorConfig, '''
... [rules]
... threshold_high_c = 8.0
... [rules.groups.freezers]
... sites = ["s1"]
... threshold_high_c = -15.0
... ''')
>>> cfg.rules.for_device("s1-d01", "s1").threshold_high_c
-15.0
>>> cfg.rules.for_device("s2-d01", "s2").threshold_high_c
8.0
>>> try:
...     loads(ProcessorConfig, "[search]\\nbackend = 'solr'\\n")
... except ValueError as exc:
...     print(exc)
search.backend: must be "elasticsearch" or "opensearch", got "solr"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

import stagekit.search
import stagekit.settings
from stagekit.config import load
from stagekit.settings import HttpSettings

__all__ = [
    "ENV_PREFIX",
    "AlertSettings",
    "HttpSettings",
    "KafkaSettings",
    "ProcessorConfig",
    "RuleGroup",
    "RuleSettings",
    "RulesConfig",
    "SearchSettings",
    "WebhookSettings",
    "load_config",
]

ENV_PREFIX: Final = "THERMOWATCH_PROCESSOR"


class KafkaSettings(stagekit.settings.KafkaSettings, frozen=True, forbid_unknown_fields=True):
    """Where to consume from and how (connection, TLS and SASL: the shared block)."""

    bootstrap_servers: tuple[str, ...] | str = "127.0.0.1:19092"
    client_id: str = "thermowatch-processor"
    group_id: str = "thermowatch-processor"
    #: Records fetched per poll (one bulk request at most this large).
    max_batch: int = 5000
    poll_timeout_ms: int = 500
    #: Offsets are committed at most this often, always after the writes.
    commit_interval_s: float = 5.0
    session_timeout_ms: int = 30_000
    #: Publish every alert change to ``<topic_prefix>.alerts``.
    publish_alerts: bool = True


class SearchSettings(stagekit.search.SearchSettings, frozen=True, forbid_unknown_fields=True):
    """The search server (connection: the shared block) and the index layout."""

    shards: int = 1
    replicas: int = 0
    refresh_interval: str = "5s"
    #: Documents per bulk request, and bulk requests in flight at once.
    bulk_max_docs: int = 2500
    bulk_concurrency: int = 2
    #: Backoff of retried requests (equal jitter), also while the server is down.
    retry_initial_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    retry_max_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    #: Monthly reading/aggregate indices whose month ended longer ago are
    #: deleted by ``thermowatch processor retention``.
    retention_days: int = 400


class AlertSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Alert lifecycle: lateness, flapping."""

    #: An event older than the newest event time seen minus this is late.
    allowed_lateness_s: float = 120.0
    #: An event older than processing time minus this is late too (a backlog
    #: replayed after an outage, or ``processor replay``).
    max_event_age_s: float = 600.0
    #: An alert that opened this many times within ``flap_window_s`` is flapping.
    flap_max_opens: int = 3
    flap_window_s: float = 900.0
    #: A flapping alert resolves only after its clear condition held this long.
    flap_hold_s: float = 300.0
    #: Resolved alerts loaded at start (to recognise replayed changes).
    restore_resolved_s: float = 86_400.0


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where alert changes are POSTed ("" disables it)."""

    url: str = ""
    format: Literal["json", "slack"] = "json"
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_initial_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: At most this many POSTs per second (token bucket).
    rate_per_s: float = 5.0
    burst: int = 10


class RuleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fleet rule parameters (null disables a threshold)."""

    threshold_high_c: float | None = None
    critical_high_c: float | None = None
    threshold_low_c: float | None = None
    critical_low_c: float | None = None
    #: A threshold alert clears only this far back inside the limit.
    hysteresis_c: float = 1.0
    #: The limit must be crossed for this long (event time) before opening.
    min_duration_s: float = 60.0
    #: Rate of change limit in °C per minute over ``rate_window_s``.
    rate_max_c_per_min: float | None = None
    rate_clear_c_per_min: float | None = None
    rate_window_s: float = 60.0
    #: No reading for this long (processing time): stale sensor.
    stale_after_s: float = 300.0
    #: Fleet outlier: robust z-score among the site's devices in the window.
    outlier_z: float = 4.0
    outlier_clear_z: float = 2.5
    outlier_min_peers: int = 4
    outlier_window_s: float = 120.0
    #: Floor of the MAD (°C) so that identical peers do not make z infinite.
    outlier_min_mad_c: float = 0.25
    #: Sensor-fault storm: this many non-ok readings within the window.
    fault_storm_count: int = 5
    fault_storm_window_s: float = 60.0


class RuleGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Overrides for some sites and/or devices (unset keys keep the default)."""

    sites: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)
    threshold_high_c: float | None = None
    critical_high_c: float | None = None
    threshold_low_c: float | None = None
    critical_low_c: float | None = None
    hysteresis_c: float | None = None
    min_duration_s: float | None = None
    rate_max_c_per_min: float | None = None
    rate_clear_c_per_min: float | None = None
    rate_window_s: float | None = None
    stale_after_s: float | None = None
    outlier_z: float | None = None
    outlier_clear_z: float | None = None
    outlier_min_peers: int | None = None
    outlier_window_s: float | None = None
    outlier_min_mad_c: float | None = None
    fault_storm_count: int | None = None
    fault_storm_window_s: float | None = None


_OVERRIDABLE: Final = tuple(f for f in RuleSettings.__struct_fields__)


class RulesConfig(RuleSettings, frozen=True, forbid_unknown_fields=True):
    """Default rule settings plus named groups of overrides."""

    groups: dict[str, RuleGroup] = msgspec.field(default_factory=dict)
    #: Reorder stage (fleet-wide, not per group): a reading that overtook a
    #: lower seq of its device waits at most this long (processing time) for
    #: the missing seqs before the rules see it anyway; 0 disables waiting.
    reorder_wait_ms: int = 200
    #: Readings held for reordering, at most, over all devices and per device
    #: (when full, the oldest hole is given up and its device's readings released).
    reorder_max_held: int = 10_000
    reorder_max_held_per_device: int = 64

    def for_device(self, device_id: str, site: str) -> RuleSettings:
        """Effective settings of one device: defaults, then site groups, then device groups."""
        values: dict[str, Any] = {f: getattr(self, f) for f in _OVERRIDABLE}
        for match_devices in (False, True):
            for group in self.groups.values():
                hit = device_id in group.devices if match_devices else site in group.sites
                if not hit:
                    continue
                for f in _OVERRIDABLE:
                    v = getattr(group, f)
                    if v is not None:
                        values[f] = v
        return RuleSettings(**values)


class ProcessorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole processor configuration."""

    kafka: KafkaSettings = KafkaSettings()
    search: SearchSettings = SearchSettings()
    rules: RulesConfig = RulesConfig()
    alerts: AlertSettings = AlertSettings()
    webhook: WebhookSettings = WebhookSettings()
    http: HttpSettings = HttpSettings()
    #: Optional device positions, ``"s1-d01" = [lat, lon]`` (geo_point).
    locations: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)

    def validate(self) -> list[str]:
        """Cross-field problems as ``section.key: problem``."""
        problems: list[str] = []
        k, s = self.kafka, self.search
        problems += k.problems("kafka") + s.problems("search")
        if k.max_batch < 1:
            problems.append(f"kafka.max_batch: must be at least 1, got {k.max_batch}")
        if k.commit_interval_s <= 0:
            problems.append(f"kafka.commit_interval_s: must be positive, got {k.commit_interval_s}")
        if s.bulk_concurrency < 1:
            problems.append(
                f"search.bulk_concurrency: must be at least 1, got {s.bulk_concurrency}"
            )
        if s.bulk_max_docs < 1:
            problems.append(f"search.bulk_max_docs: must be at least 1, got {s.bulk_max_docs}")
        if self.webhook.rate_per_s <= 0:
            problems.append(f"webhook.rate_per_s: must be positive, got {self.webhook.rate_per_s}")
        if self.webhook.url and not self.webhook.url.startswith(("http://", "https://")):
            problems.append(f"webhook.url: must be an http(s) URL, got {self.webhook.url!r}")
        for name, (lat, lon) in self.locations.items():
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                problems.append(f"locations.{name}: not a [lat, lon] pair, got [{lat}, {lon}]")
        problems += _check_rules("rules", self.rules)
        r = self.rules
        if not 0 <= r.reorder_wait_ms <= 60_000:
            problems.append(
                f"rules.reorder_wait_ms: must be between 0 and 60000, got {r.reorder_wait_ms}"
            )
        if r.reorder_max_held < 1:
            problems.append(f"rules.reorder_max_held: must be at least 1, got {r.reorder_max_held}")
        if not 1 <= r.reorder_max_held_per_device <= r.reorder_max_held:
            problems.append(
                f"rules.reorder_max_held_per_device: must be between 1 and "
                f"reorder_max_held ({r.reorder_max_held}), got {r.reorder_max_held_per_device}"
            )
        for gname, group in self.rules.groups.items():
            if not group.sites and not group.devices:
                problems.append(f"rules.groups.{gname}: lists neither sites nor devices")
        return problems


def _check_rules(where: str, r: RuleSettings) -> list[str]:
    out: list[str] = []
    if r.hysteresis_c < 0:
        out.append(f"{where}.hysteresis_c: must be >= 0, got {r.hysteresis_c}")
    if (
        r.threshold_high_c is not None
        and r.threshold_low_c is not None
        and r.threshold_low_c >= r.threshold_high_c
    ):
        out.append(
            f"{where}.threshold_low_c: must be below threshold_high_c "
            f"({r.threshold_high_c}), got {r.threshold_low_c}"
        )
    if r.outlier_clear_z > r.outlier_z:
        out.append(
            f"{where}.outlier_clear_z: must not exceed outlier_z ({r.outlier_z}), "
            f"got {r.outlier_clear_z}"
        )
    if r.outlier_min_peers < 3:
        out.append(f"{where}.outlier_min_peers: must be at least 3, got {r.outlier_min_peers}")
    return out


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> ProcessorConfig:
    """Load and validate the processor configuration (``ConfigError`` names the key)."""
    return load(
        ProcessorConfig, path, env=os.environ if env is None else env, env_prefix=ENV_PREFIX
    )
