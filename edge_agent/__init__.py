"""thermowatch edge agent: sensors -> local detection and alarms -> durable outbox -> MQTT.

Runs on a Raspberry Pi under systemd (``thermowatch edge run``). Modules:
:mod:`~edge_agent.config` (typed config), :mod:`~edge_agent.sensors` (DS18B20
w1 sysfs and host thermal zone readers), :mod:`~edge_agent.detect` (pure core:
river detectors, alert logic), :mod:`~edge_agent.outbox` (SQLite WAL
store-and-forward), :mod:`~edge_agent.mqtt` (paho adapter),
:mod:`~edge_agent.gpio` (gpiozero adapter), :mod:`~edge_agent.simulate` (fake
w1 sysfs fleet), :mod:`~edge_agent.app` (wiring and run loop). Nothing is
imported here, so ``import edge_agent`` does no I/O and pulls in no heavy
dependency.
"""

__all__: list[str] = []
