"""Prometheus metrics of the processor (served by :mod:`stagekit.health`).

Each :class:`Metrics` owns its registry, so several processors (tests) can
live in one interpreter. ``/healthz`` answers 200 while the run loop is alive;
``/readyz`` answers 200 only when the search server answered the last request
and the consumer has joined its group.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Histogram buckets (seconds) of the request latencies: bulk writes, webhook POSTs.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The processor's metrics (names start with ``thermowatch_processor_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        p = "thermowatch_processor_"
        r = self.registry
        self.consumer_lag = Gauge(
            p + "consumer_lag",
            "Records behind the partition end.",
            ["topic", "partition"],
            registry=r,
        )
        self.records = Counter(
            p + "records_total", "Kafka records consumed, by message type.", ["type"], registry=r
        )
        self.invalid = Counter(
            p + "invalid_records_total", "Records that broke the contract.", registry=r
        )
        self.docs = Counter(
            p + "documents_total",
            "Documents written, by index kind and result.",
            ["index", "result"],
            registry=r,
        )
        self.bulk_latency = Histogram(
            p + "bulk_latency_seconds",
            "Latency of one bulk request.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.webhook_latency = Histogram(
            p + "webhook_latency_seconds",
            "Duration of one webhook POST attempt (answered or not).",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.alerts = Counter(
            p + "alerts_total",
            "Alert changes, by change and rule.",
            ["change", "rule"],
            registry=r,
        )
        self.active_alerts = Gauge(p + "active_alerts", "Alerts currently open.", registry=r)
        self.commits = Counter(p + "commits_total", "Offset commits.", registry=r)
        self.search_up = Gauge(p + "search_up", "1 when the search server answers.", registry=r)
        self.reorder_held = Gauge(
            p + "reorder_held",
            "Readings held back until a lower seq of their device arrives.",
            registry=r,
        )
        self.reorder_given_up = Counter(
            p + "reorder_given_up_total",
            "Seqs the reorder stage stopped waiting for (their readings are judged late).",
            registry=r,
        )
        # Hostile input: skipped records, bounded device state, late readings.
        self.record_errors = Counter(
            p + "record_errors_total",
            "Records skipped because handling them raised (besides contract errors), by error.",
            ["error"],
            registry=r,
        )
        self.devices = Gauge(
            p + "devices", "Devices whose state is kept (rules.max_devices bounds it).", registry=r
        )
        self.evicted = Counter(
            p + "devices_evicted_total",
            "Devices whose state was dropped (idle, or over rules.max_devices).",
            registry=r,
        )
        self.evicted_alerts = Counter(
            p + "alerts_resolved_by_eviction_total",
            "Open alerts resolved because their device was evicted over rules.max_devices.",
            registry=r,
        )
        self.not_aggregated = Counter(
            p + "readings_not_aggregated_total",
            "Readings stored but outside aggregates.recompute_window_s of now, by side.",
            ["side"],
            registry=r,
        )
        self.webhook = Counter(
            p + "webhook_total", "Webhook deliveries by result.", ["result"], registry=r
        )
        self.notifications = Counter(
            p + "notifications_total",
            "Alert changes offered to the webhook queue, by what became of them.",
            ["result"],
            registry=r,
        )
        self.notifications_unresolved = Gauge(
            p + "notifications_unresolved",
            "Alert changes read from the alerts topic for the webhook and not resolved "
            "yet (its consumer group commits below the first of them).",
            registry=r,
        )
        self.notifications_undecodable = Counter(
            p + "notifications_undecodable_total",
            "Records of the alerts topic the webhook's feed could not decode (skipped).",
            registry=r,
        )
        self.incidents = Counter(
            p + "incident_changes_total",
            "Incident changes stored in the incidents index, by change.",
            ["change"],
            registry=r,
        )
        self.incident_notifications = Counter(
            p + "incident_notifications_total",
            "Incident changes offered to the webhook (opened, escalated, resolved), by change.",
            ["change"],
            registry=r,
        )
        self.open_incidents = Gauge(p + "open_incidents", "Incidents currently open.", registry=r)
        self.notifications_pending = Gauge(
            p + "notifications_pending",
            "Webhook notifications waiting (one per alert key).",
            registry=r,
        )

    def render(self) -> bytes:
        """Text exposition format."""
        return generate_latest(self.registry)
