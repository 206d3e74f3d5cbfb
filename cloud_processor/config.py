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
from typing import Annotated, Final, Literal

import msgspec

import stagekit.search
import stagekit.settings
from cloud_processor.incidents import IncidentSettings
from cloud_processor.rules.settings import AlertSettings, RuleGroup, RulesConfig, RuleSettings
from stagekit.address import url_problems
from stagekit.config import load
from stagekit.settings import HttpSettings

__all__ = [
    "ENV_PREFIX",
    "AggregateSettings",
    "AlertSettings",
    "HttpSettings",
    "IncidentSettings",
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
    max_batch: Annotated[int, msgspec.Meta(ge=1)] = 5000
    poll_timeout_ms: int = 500
    #: Offsets are committed at most this often, always after the writes.
    commit_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    #: How long the group waits for a member that stopped heartbeating (a
    #: process killed, a host gone) before its partitions go to the others:
    #: most of the takeover time after a kill. 10 s, Kafka's own default
    #: before 3.0; a stopped processor leaves at once anyway. Within the
    #: brokers' group.min/max.session.timeout.ms (6 s, 30 min by default).
    session_timeout_ms: Annotated[int, msgspec.Meta(ge=6_000, le=1_800_000)] = 10_000
    #: Publish every alert change to ``<topic_prefix>.alerts``.
    publish_alerts: bool = True
    #: Partitions and copies (on as many brokers) of the topics the processor
    #: creates when missing (alerts, dead letters); an existing topic keeps its own.
    partitions: Annotated[int, msgspec.Meta(ge=1)] = 6
    replication_factor: Annotated[int, msgspec.Meta(ge=1)] = 1


class SearchSettings(stagekit.search.SearchSettings, frozen=True, forbid_unknown_fields=True):
    """The search server (connection: the shared block) and the index layout."""

    #: Primary shards of every index created from the templates (readings,
    #: aggregates, alerts, incidents); an existing index keeps its count, so a
    #: change reaches the monthly indices from the next month on.
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    #: Copies of each shard on other nodes; 0 on one node (a replica never
    #: shares its primary's node: one more than the nodes keeps indices yellow).
    replicas: Annotated[int, msgspec.Meta(ge=0, le=32)] = 0
    refresh_interval: str = "5s"
    #: Documents per bulk request, and bulk requests in flight at once.
    bulk_max_docs: Annotated[int, msgspec.Meta(ge=1)] = 2500
    bulk_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 2
    #: Backoff of retried requests (equal jitter), also while the server is down.
    retry_initial_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    retry_max_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    #: Keep monthly readings/aggregates indices at least this many days (0:
    #: for ever): the processor installs an ILM or ISM policy deleting each one
    #: ``retention_days + 31`` days after its creation (a month at a time, see
    #: :mod:`stagekit.search.lifecycle`); without either, run
    #: ``thermowatch processor retention`` daily.
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 400


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where alert changes are POSTed ("" disables it), and how hard.

    Changes reach the webhook from the Kafka alerts topic, read by a consumer
    group of its own (:mod:`cloud_processor.feed`, durable across crashes),
    through a bounded queue with its own worker
    (:mod:`cloud_processor.dispatch`), never on the write path: repeated
    changes of one alert within ``coalesce_s`` become one notification, and
    per-device and global token buckets limit the rate.
    """

    url: str = ""
    format: Literal["json", "slack"] = "json"
    #: What is POSTed: one notification per incident change that is news
    #: (opened, escalated, resolved: :mod:`cloud_processor.incidents`), or
    #: every alert change as before.
    notify: Literal["incidents", "alerts"] = "incidents"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    backoff_initial_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Global limit: at most this many POSTs per second (token bucket) ...
    rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 5.0
    #: ... with bursts of this many.
    burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10
    #: Per-device limit: at most this many notifications per second per device ...
    device_rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 0.2
    #: ... with bursts of this many.
    device_burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 3
    #: Changes of one alert key (device, rule) within this many seconds of its
    #: last notification become one notification with the latest state (0: off).
    coalesce_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    #: Alert keys waiting to be notified, at most (more: counted, logged, dropped).
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    #: Notifications in flight at once (changes of one alert or incident are
    #: still sent one after the other, in order).
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: On shutdown, the waiting notifications get this long to go out.
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 5.0
    #: Bytes of a response body read at most (the rest is never read).
    max_response_bytes: Annotated[int, msgspec.Meta(ge=0, le=16_777_216)] = 65_536
    #: Device-controlled text (messages, ids) is cut to this many characters.
    max_text_chars: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 500
    #: Consumer group reading the alerts topic for the webhook ("" =
    #: ``<kafka.group_id>-notify``); its offsets advance only past resolved changes.
    group_id: str = ""
    #: Changes read from the alerts topic and not resolved yet, at most (then
    #: reading waits for the queue).
    max_unresolved: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    #: Shared secret of the ``X-Thermowatch-Signature`` HMAC-SHA256 header
    #: ("" = requests are not signed; a warning is logged at start).
    secret: str = ""


class AggregateSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One-minute aggregates: how far from now a reading still reshapes its window, and
    how long windows stay in memory."""

    #: A reading whose window is further than this from processing time (in
    #: the past or the future) is stored but not aggregated (counted in
    #: ``readings_not_aggregated_total``): a window recomputed from it could
    #: ask the search server for history of any age. 7 days covers an edge
    #: outbox replaying a long outage.
    recompute_window_s: Annotated[float, msgspec.Meta(ge=60, le=400 * 86_400)] = 7 * 86_400.0
    #: Windows are folded in memory from the readings as they are stored and
    #: written from there, and kept this long after they end; a reading later
    #: than that (or a window this process cannot have seen whole, e.g. just
    #: after it took over a partition) is recomputed from the stored readings
    #: by a query. 0: every window is recomputed by query (the behaviour
    #: before this setting). Memory: ~415 bytes per window in memory.
    live_hold_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 120.0


class ProcessorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole processor configuration."""

    kafka: KafkaSettings = KafkaSettings()
    search: SearchSettings = SearchSettings()
    rules: RulesConfig = RulesConfig()
    alerts: AlertSettings = AlertSettings()
    incidents: IncidentSettings = IncidentSettings()
    webhook: WebhookSettings = WebhookSettings()
    http: HttpSettings = HttpSettings()
    aggregates: AggregateSettings = AggregateSettings()
    #: Optional device positions, ``"s1-d01" = [lat, lon]`` (geo_point).
    locations: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)

    def validate(self) -> list[str]:
        """Cross-field problems as ``section.key: problem``."""
        problems: list[str] = []
        k, s = self.kafka, self.search
        problems += k.problems("kafka") + s.problems("search") + self.http.problems("http")
        if self.webhook.url:  # the message masks the URL's path: often its only secret
            problems += url_problems("webhook.url", self.webhook.url)
        if self.webhook.url and not k.publish_alerts:
            problems.append(
                "kafka.publish_alerts: must be true when webhook.url is set "
                "(the webhook is fed from the alerts topic)"
            )
        for name, (lat, lon) in self.locations.items():
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                problems.append(f"locations.{name}: not a [lat, lon] pair, got [{lat}, {lon}]")
        problems += self.rules.check("rules")
        return problems


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> ProcessorConfig:
    """Load and validate the processor configuration (``ConfigError`` names the key)."""
    return load(
        ProcessorConfig, path, env=os.environ if env is None else env, env_prefix=ENV_PREFIX
    )
