"""thermowatch edge agent: sensors -> local detection and alarms -> durable outbox -> MQTT.

Runs on a Raspberry Pi under systemd (``thermowatch edge run``). From sensor
to broker: :mod:`~edge_agent.sensors` and :mod:`~edge_agent.sensor_pool`
(DS18B20 w1 sysfs and host thermal zone; :mod:`~edge_agent.w1` parses and
judges), :mod:`~edge_agent.pipeline` (judge, alarm, store, with the pure
cores :mod:`~edge_agent.detect` and :mod:`~edge_agent.alerts`),
:mod:`~edge_agent.outbox` (SQLite WAL store-and-forward),
:mod:`~edge_agent.publisher` and :mod:`~edge_agent.mqtt` (paho adapter);
:mod:`~edge_agent.app` wires them (adapters from :mod:`~edge_agent.adapters`).
Nothing is imported here, so ``import edge_agent`` does no I/O and pulls in no
heavy dependency.
"""

__all__: list[str] = []
