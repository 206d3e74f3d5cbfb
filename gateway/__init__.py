"""thermowatch gateway: MQTT (shared subscriptions, QoS 1) to Kafka, at least once.

The pure core is :func:`gateway.bridge.bridge`; :class:`gateway.app.Gateway`
runs it between a message source and a record sink (the ports of
:mod:`gateway.ports`), given in its constructor: :func:`gateway.app.build_gateway`
gives it the MQTT adapter (:mod:`gateway.mqtt`) and the Kafka adapter
(:mod:`gateway.kafka`). Run it with ``thermowatch gateway run --config FILE``.
"""

from gateway.bridge import KafkaRecord, bridge, dead_letter
from gateway.config import GatewayConfig, load_config

__all__ = ["GatewayConfig", "KafkaRecord", "bridge", "dead_letter", "load_config"]
