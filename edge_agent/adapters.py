"""The agent's adapters built from its configuration: the defaults of ``EdgeAgent``.

:class:`~edge_agent.app.EdgeAgent` takes every adapter in its constructor
(sensor pool, outbox, GPIO outputs, MQTT link, systemd notifier, clock);
each one not given is made here. Tests give fakes (a fake MQTT link, mock
pins, a fake clock) instead of reaching into the agent. Nothing here does
I/O: adapters open their files, pins and connections in ``start()``; only
:func:`make_outputs` loads the GPIO pin factory, so that a machine without
GPIO is told what to do before anything is written to disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from edge_agent.config import EdgeConfig
from edge_agent.events import WakeQueue
from edge_agent.gpio import Outputs, resolve_pin_factory
from edge_agent.mqtt import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.sensor_pool import SensorPool
from edge_agent.sensors import Sample
from edge_agent.status import Presence
from telemetry_contract import TopicKind

__all__ = [
    "SPREAD_AFTER_S",
    "make_link",
    "make_outbox",
    "make_outputs",
    "make_pool",
    "read_sensors_once",
]

#: Reads of a round run one after another on one thread while each takes less
#: than this; a slower one (a real 1-Wire conversion, a hung bus) makes the pool
#: give every waiting read its own thread (see SensorPool).
SPREAD_AFTER_S: Final = 0.02


def make_outbox(config: EdgeConfig, *, clock_ms: Callable[[], int]) -> Outbox:
    """The device's outbox at ``outbox.path`` (default: in ``device.state_dir``)."""
    o = config.outbox
    return Outbox(
        config.outbox_path,
        device_id=config.device.device_id,
        site=config.device.site,
        telemetry_topic=config.topic(TopicKind.TELEMETRY),
        max_rows=o.max_rows,
        max_age_s=o.max_age_s,
        synchronous=o.synchronous,
        receipts=o.receipts,
        clock_ms=clock_ms,
    )


def make_pool(config: EdgeConfig, events: WakeQueue, *, clock_ms: Callable[[], int]) -> SensorPool:
    """The sensors of ``[sensors]``; samples collect in ``events``, one wake-up per round."""
    s = config.sensors
    return SensorPool(
        w1_root=s.w1_root if s.w1_enabled else None,
        host_file=s.host_file if s.host_enabled else None,
        on_sample=events.samples.append,
        on_round_done=events.wake,
        read_timeout_s=s.read_timeout_s,
        retries=s.retries,
        retry_delay_s=s.retry_delay_s,
        min_c=s.min_plausible_c,
        max_c=s.max_plausible_c,
        stuck_after=s.stuck_after,
        clock_ms=clock_ms,
        spread_after_s=SPREAD_AFTER_S,
    )


def make_outputs(config: EdgeConfig, *, pin_factory: Any = None) -> Outputs:
    """The GPIO outputs of ``[gpio]`` (``pin_factory`` overrides ``gpio.pin_factory``).

    Raises ``NoPinFactoryError`` (with what to do) when no pin factory loads.
    """
    return Outputs(config.gpio, pin_factory=resolve_pin_factory(config.gpio, pin_factory))


def make_link(config: EdgeConfig, events: WakeQueue, presence: Presence) -> MqttLink:
    """The MQTT link of ``[mqtt]``; its will and online status come from ``presence``.

    Reads ``mqtt.password_file``, so call it when starting, not before.
    """
    return MqttLink(
        config.mqtt,
        client_id=config.client_id,
        password=config.mqtt_password(),
        status_topic=config.topic(TopicKind.STATUS),
        config_topic=config.topic(TopicKind.CONFIG),
        will_payload=presence.will_for_new_connection,
        events=events,
        receipt_topic=config.topic(TopicKind.RECEIPT) if config.outbox.receipts else "",
    )


def read_sensors_once(config: EdgeConfig) -> list[Sample]:
    """Read every sensor of ``[sensors]`` once, sorted by id (``once --dry-run``).

    Raises ``NoSensorError`` when there is none; a read still running after
    ``sensors.read_timeout_s`` (plus 1 s) is left out.
    """
    got: list[Sample] = []
    s = config.sensors
    pool = SensorPool(
        w1_root=s.w1_root if s.w1_enabled else None,
        host_file=s.host_file if s.host_enabled else None,
        on_sample=got.append,
        read_timeout_s=s.read_timeout_s,
        retries=s.retries,
        retry_delay_s=s.retry_delay_s,
        min_c=s.min_plausible_c,
        max_c=s.max_plausible_c,
    )
    try:
        ids = pool.start()
        pool.round()
        deadline = time.monotonic() + s.read_timeout_s + 1
        while len(got) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        pool.close()
    return sorted(got, key=lambda x: x.sensor_id)
