"""Prometheus metrics of one gateway, in their own registry.

Counters are the gateway's log of volume (the logs carry only events). A
registry per :class:`Metrics` keeps two gateways in one test process apart.

>>> m = Metrics()
>>> m.received.labels("telemetry").inc()
>>> b"thermowatch_gateway_received_total" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_NS = "thermowatch_gateway"
#: Produce latency buckets, seconds: sub-ms to a Kafka outage.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(f"{_NS}_received", "MQTT messages received", ["kind"], registry=r)
        self.forwarded = Counter(
            f"{_NS}_forwarded", "Messages written to Kafka and acknowledged", ["kind"], registry=r
        )
        self.deadlettered = Counter(
            f"{_NS}_deadlettered",
            "Messages written to the dead-letter topic and acknowledged",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            f"{_NS}_in_flight", "MQTT messages received and not yet acknowledged", registry=r
        )
        self.in_flight_max = Gauge(
            f"{_NS}_in_flight_max",
            "Most MQTT messages ever held unacknowledged at once (compare with "
            "receive_maximum: equal means the in-flight window was exhausted)",
            registry=r,
        )
        self.receive_maximum = Gauge(
            f"{_NS}_receive_maximum",
            "The Receive Maximum announced to the broker: the in-flight window's size",
            registry=r,
        )
        self.unexpected_errors = Counter(
            f"{_NS}_unexpected_errors",
            "Messages dead-lettered after an error the contract does not name (a bug)",
            ["stage"],
            registry=r,
        )
        self.protocol_errors = Counter(
            f"{_NS}_mqtt_protocol_errors",
            "MQTT packets from the broker refused as a protocol error (the connection "
            "is closed with that reason code, MQTT v5 4.13)",
            ["reason"],
            registry=r,
        )
        self.produce_seconds = Histogram(
            f"{_NS}_kafka_produce_seconds",
            "Time from send to Kafka's acknowledgement, per successful attempt",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            f"{_NS}_reconnects", "Reconnections after the first connection", ["target"], registry=r
        )
        self.kafka_errors = Counter(
            f"{_NS}_kafka_errors",
            "Failed Kafka operations (each is retried)",
            ["error"],
            registry=r,
        )
        self.receipts_sent = Counter(
            f"{_NS}_receipts_sent",
            "Receipts published to devices (QoS 0) for seqs Kafka confirmed",
            registry=r,
        )
        self.receipt_bytes = Counter(
            f"{_NS}_receipt_bytes",
            "Bytes of the receipts published (MQTT PUBLISH packets: header, topic, payload)",
            registry=r,
        )
        self.connected = Gauge(
            f"{_NS}_connected", "1 when connected and healthy", ["target"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
