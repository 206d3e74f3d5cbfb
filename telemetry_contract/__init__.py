"""The thermowatch message contract, shared by every stage.

Define each message once (:mod:`telemetry_contract.messages`), encode and
decode it with one codec that raises one error type
(:mod:`telemetry_contract.codec`), and address it with one topic scheme
(:mod:`telemetry_contract.topics`). JSON Schema files exported from the same
definitions live in ``telemetry_contract/schemas/``.
"""

from telemetry_contract.alerts import (
    Alert,
    AlertChange,
    AlertChangeMessage,
    AlertStatus,
    ChangeKind,
    Rule,
    alert_change_doc,
    alert_fields,
    decode_alert_change,
    encode_alert_change,
)
from telemetry_contract.codec import (
    MAX_FUTURE_MS,
    MAX_PAYLOAD_BYTES,
    decode,
    decode_as,
    encode,
    to_builtins,
)
from telemetry_contract.errors import ContractError, Reason
from telemetry_contract.messages import (
    MAX_TEMP_C,
    MESSAGE_TYPES,
    MIN_TEMP_C,
    SCHEMA_VERSION,
    AlertState,
    DeadLetter,
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    GapReason,
    Message,
    Quality,
    Reading,
    Severity,
)
from telemetry_contract.topics import (
    KafkaTopics,
    MqttTopic,
    TopicKind,
    kafka_key,
    kafka_topic_for,
    kafka_topics,
    message_types_for,
    mqtt_filter,
    mqtt_topic,
    parse_mqtt_topic,
)

__all__ = [
    "MAX_FUTURE_MS",
    "MAX_PAYLOAD_BYTES",
    "MAX_TEMP_C",
    "MESSAGE_TYPES",
    "MIN_TEMP_C",
    "SCHEMA_VERSION",
    "Alert",
    "AlertChange",
    "AlertChangeMessage",
    "AlertState",
    "AlertStatus",
    "ChangeKind",
    "ContractError",
    "DeadLetter",
    "DeviceConfig",
    "DeviceState",
    "DeviceStatus",
    "EdgeAlert",
    "EdgeAlertKind",
    "Gap",
    "GapReason",
    "KafkaTopics",
    "Message",
    "MqttTopic",
    "Quality",
    "Reading",
    "Reason",
    "Rule",
    "Severity",
    "TopicKind",
    "alert_change_doc",
    "alert_fields",
    "decode",
    "decode_alert_change",
    "decode_as",
    "encode",
    "encode_alert_change",
    "kafka_key",
    "kafka_topic_for",
    "kafka_topics",
    "message_types_for",
    "mqtt_filter",
    "mqtt_topic",
    "parse_mqtt_topic",
    "to_builtins",
]
