"""The real adapters, built from the config: what ``processor run`` runs.

:func:`build_processor` is the one place that turns a
:class:`~cloud_processor.config.ProcessorConfig` into a wired
:class:`~cloud_processor.app.Processor` (Kafka source and producer, storage
on the configured search backend, notifiers, metrics). Tests that want fakes
construct :class:`~cloud_processor.app.Processor` themselves. Nothing here
connects: clients are opened by ``Processor.start()``.

>>> from cloud_processor.config import ProcessorConfig, WebhookSettings
>>> cfg = ProcessorConfig(webhook=WebhookSettings(url="http://127.0.0.1:9/hook"))
>>> p = build_processor(cfg)
>>> [type(n).__name__ for n in p.notifications.notifiers]
['AlertsTopicNotifier', 'AlertFeed']
>>> p.notifications.notifiers[1].notify_incidents
True
>>> p.storage.backend_name
'opensearch'
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from cloud_processor.app import Processor
from cloud_processor.config import ProcessorConfig
from cloud_processor.dispatch import NotificationDispatcher
from cloud_processor.feed import AlertFeed
from cloud_processor.incidentlog import IncidentLog
from cloud_processor.incidents import IncidentBook
from cloud_processor.kafka import AlertsSource, KafkaProducer, KafkaSource
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import AlertsTopicNotifier
from cloud_processor.ports import Notifier, Producer
from cloud_processor.storage import Storage
from cloud_processor.webhook import WebhookNotifier
from stagekit.search import SearchBackend, make_backend
from stagekit.search.indices import IndexNames
from telemetry_contract import kafka_topics

__all__ = ["build_processor", "default_notifiers", "make_storage"]


def build_processor(
    config: ProcessorConfig,
    *,
    replay_from_ms: int | None = None,
    backend: SearchBackend | None = None,
    clock: Callable[[], float] = time.time,
) -> Processor:
    """A processor on the real adapters: the consumer group (or a replay from
    ``replay_from_ms``, Kafka record time), the configured search backend
    (or ``backend``), the alerts topic and the webhook."""
    metrics = Metrics()
    topics = kafka_topics(config.kafka.topic_prefix)
    producer = KafkaProducer(config.kafka, [topics.alerts, topics.deadletter])
    source = KafkaSource(
        config.kafka,
        [topics.telemetry, topics.edge_alerts, topics.status],
        replay_from_ms=replay_from_ms,
    )
    storage = make_storage(config, backend, metrics)
    notifiers = default_notifiers(
        config, producer, metrics, feed=replay_from_ms is None, storage=storage
    )
    processor = Processor(
        config,
        source=source,
        producer=producer,
        storage=storage,
        notifiers=notifiers,
        metrics=metrics,
        clock=clock,
    )
    for notifier in notifiers:  # "most of a site" counts the devices the rules know
        if isinstance(notifier, AlertFeed) and notifier.incidents is not None:
            notifier.incidents.book.site_size = processor.rules.site_size
    return processor


def default_notifiers(
    config: ProcessorConfig,
    producer: Producer,
    metrics: Metrics,
    *,
    feed: bool = True,
    storage: Storage | None = None,
) -> list[Notifier]:
    """Where alert changes go: the Kafka alerts topic (``kafka.publish_alerts``),
    and, with ``feed`` and a ``webhook.url`` (or incidents kept in ``storage``),
    the webhook's feed, which reads them back from that topic
    (:mod:`cloud_processor.feed`: incidents, webhook; a replay has none: the
    running processor's feed handles what the replay publishes)."""
    notifiers: list[Notifier] = []
    k = config.kafka
    if not k.publish_alerts:
        return notifiers
    alerts = kafka_topics(k.topic_prefix).alerts
    notifiers.append(AlertsTopicNotifier(producer, alerts))
    keep_incidents = config.incidents.enabled and storage is not None
    if feed and (config.webhook.url or keep_incidents):
        incidents = (
            IncidentLog(IncidentBook(config.incidents), storage, metrics=metrics)
            if config.incidents.enabled and storage is not None
            else None
        )
        webhook = WebhookNotifier(
            config.webhook,
            on_result=lambda r: metrics.webhook.labels(r).inc(),
            on_attempt=metrics.webhook_latency.observe,
        )
        group = config.webhook.group_id or f"{k.group_id}-notify"
        settings = msgspec.structs.replace(k, group_id=group, client_id=f"{k.client_id}-notify")
        notifiers.append(
            AlertFeed(
                AlertsSource(settings, [alerts]),
                NotificationDispatcher(webhook, config.webhook, metrics=metrics),
                commit_interval_s=k.commit_interval_s,
                poll_timeout_ms=k.poll_timeout_ms,
                max_batch=k.max_batch,
                max_unresolved=config.webhook.max_unresolved,
                metrics=metrics,
                incidents=incidents,
                notify_incidents=config.webhook.notify == "incidents",
                deliver=bool(config.webhook.url),
            )
        )
    return notifiers


def make_storage(
    config: ProcessorConfig,
    backend: SearchBackend | None = None,
    metrics: Metrics | None = None,
) -> Storage:
    """Storage on ``backend`` (default: the configured one), reporting to ``metrics``."""
    s, m = config.search, metrics or Metrics()
    return Storage(
        backend if backend is not None else make_backend(s),
        IndexNames(s.index_prefix),
        bulk_max_docs=s.bulk_max_docs,
        bulk_concurrency=s.bulk_concurrency,
        retention_days=s.retention_days,
        retry_initial_s=s.retry_initial_s,
        retry_max_s=s.retry_max_s,
        shards=s.shards,
        replicas=s.replicas,
        refresh_interval=s.refresh_interval,
        on_bulk=lambda seconds, _totals: m.bulk_latency.observe(seconds),
        on_state=lambda up: m.search_up.set(1 if up else 0),
    )
