"""The message definitions: every payload that crosses a process boundary.

Each message is a frozen :class:`msgspec.Struct` carrying a ``type`` tag, a
``schema_version`` and an event time ``ts`` in UTC milliseconds since the Unix
epoch. Field constraints (ranges, patterns) live here, in the types, so the
decoder enforces them and the exported JSON Schema states them for firmware
written in other languages.

Version policy: a payload must name ``schema_version`` 1. Adding, renaming or
removing a field, or widening a constraint, is a new schema version; unknown
fields are rejected so that a typo in firmware is caught at the first hop
instead of silently dropping data.

>>> r = Reading(device_id="s1-d01", sensor_id="28-0316a2791aff", site="s1",
...             seq=7, ts=1_767_225_600_000, temp_c=4.25)
>>> r.quality
<Quality.OK: 'ok'>
>>> r.temp_c
4.25
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_DETECTOR_PARAMS",
    "MAX_RECEIPT_RANGES",
    "MAX_TEMP_C",
    "MESSAGE_TYPES",
    "MIN_TEMP_C",
    "MIN_TS_MS",
    "SCHEMA_VERSION",
    "AlertState",
    "DeadLetter",
    "DeviceConfig",
    "DeviceState",
    "DeviceStatus",
    "EdgeAlert",
    "EdgeAlertKind",
    "Gap",
    "GapReason",
    "Message",
    "Quality",
    "Reading",
    "Receipt",
    "Severity",
    "SignedConfig",
]

#: The only schema version this build reads and writes.
SCHEMA_VERSION: Final = 1
#: DS18B20 datasheet range; anything outside is not a measurement.
MIN_TEMP_C: Final = -55.0
MAX_TEMP_C: Final = 125.0
#: 2020-01-01T00:00:00Z. Earlier event times mean an unset device clock (a Pi
#: without RTC boots in 1970 until NTP syncs), not real data.
MIN_TS_MS: Final = 1_577_836_800_000
#: Device ids and sites become MQTT topic levels and Elasticsearch keywords:
#: no ``/``, ``+``, ``#`` or whitespace. The patterns end in ``$(?!\n)``
#: because Python's ``$`` also matches before a trailing newline (``"host\n"``
#: would pass); ECMA regex, which the JSON Schema files use, reads the same
#: text as plain end of input, so both give the same answer.
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$(?!\n)"
SENSOR_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$(?!\n)"

SchemaVersion = Annotated[
    Literal[1], msgspec.Meta(description="Contract version; this build supports 1.")
]
DeviceId = Annotated[
    str,
    msgspec.Meta(
        pattern=DEVICE_ID_PATTERN,
        description="Device identity; equals the MQTT username and topic level.",
    ),
]
Site = Annotated[
    str, msgspec.Meta(pattern=DEVICE_ID_PATTERN, description="Site the device belongs to.")
]
SensorId = Annotated[
    str,
    msgspec.Meta(
        pattern=SENSOR_ID_PATTERN,
        description="1-Wire id such as 28-0316a2791aff, or 'host' for the board's own sensor.",
    ),
]
Seq = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=2**53 - 1,
        description="Per-device sequence number, strictly increasing, never reused.",
    ),
]
TimestampMs = Annotated[
    int,
    msgspec.Meta(
        ge=MIN_TS_MS,
        le=2**53 - 1,
        description="Event time, UTC milliseconds since the Unix epoch.",
    ),
]
TempC = Annotated[
    float,
    msgspec.Meta(ge=MIN_TEMP_C, le=MAX_TEMP_C, description="Temperature in degrees Celsius."),
]
Score = Annotated[float, msgspec.Meta(ge=0.0, description="Anomaly score, >= 0.")]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Quality(enum.Enum):
    """How far a reading can be trusted.

    Only ``ok`` readings may drive an alarm or train a detector: a CRC failure
    means the bits on the wire were corrupted, ``85.0`` °C straight after power
    on is the DS18B20's reset value rather than a measurement, and the other
    flags mark values that are physically implausible, frozen or absent.
    """

    OK = "ok"
    CRC_ERROR = "crc_error"
    POWER_ON_RESET = "power_on_reset"
    OUT_OF_RANGE = "out_of_range"
    STUCK = "stuck"
    DISCONNECTED = "disconnected"


class Severity(enum.Enum):
    """Alert severity, ordered info < warning < critical."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(enum.Enum):
    """Edge alert transition: raised when the condition starts, cleared when it ends."""

    RAISED = "raised"
    CLEARED = "cleared"


class EdgeAlertKind(enum.Enum):
    """What an edge alert is about."""

    ANOMALY = "anomaly"
    SENSOR_FAULT = "sensor_fault"
    THRESHOLD = "threshold"
    CONFIG_REJECTED = "config_rejected"


class DeviceState(enum.Enum):
    """Connection state published (retained) on the status topic."""

    ONLINE = "online"
    OFFLINE = "offline"


class GapReason(enum.Enum):
    """Why the edge had to drop readings it had already taken."""

    OUTBOX_FULL = "outbox_full"
    OUTBOX_EXPIRED = "outbox_expired"
    DISK_FULL = "disk_full"


class _Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=False,
    tag_field="type",
):
    """Base of every message: tagged with ``type``, strict, immutable."""


class Reading(_Message, tag="reading", kw_only=True, frozen=True):
    """One temperature sample from one sensor, with the edge's verdict on it.

    ``temp_c`` is null when the sensor gave nothing usable (``crc_error``,
    ``power_on_reset``, ``out_of_range``, ``disconnected``); it is required
    when ``quality`` is ``ok``. The edge verdict fields are null when no
    detector ran (warm-up, or a reading that was not ``ok``).
    """

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    sensor_id: SensorId
    site: Site
    seq: Seq
    ts: TimestampMs
    temp_c: TempC | None
    quality: Quality = Quality.OK
    anomaly_score: Score | None = None
    is_anomaly: bool = False
    detector: Name | None = None

    def __post_init__(self) -> None:
        if self.quality is Quality.OK and self.temp_c is None:
            raise ValueError("temp_c: required when quality is 'ok', got null")
        if self.is_anomaly and self.quality is not Quality.OK:
            raise ValueError(
                f"is_anomaly: only an 'ok' reading can be anomalous, quality is "
                f"'{self.quality.value}'"
            )


class EdgeAlert(_Message, tag="edge_alert", kw_only=True, frozen=True):
    """An alert raised or cleared by the edge agent itself (works offline)."""

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    sensor_id: SensorId | None = None
    alert_id: Annotated[str, msgspec.Meta(pattern=SENSOR_ID_PATTERN)]
    ts: TimestampMs
    kind: EdgeAlertKind
    state: AlertState = AlertState.RAISED
    severity: Severity = Severity.WARNING
    message: ShortText = ""
    reading_seq: Seq | None = None
    temp_c: TempC | None = None
    anomaly_score: Score | None = None


class DeviceStatus(_Message, tag="device_status", kw_only=True, frozen=True):
    """Online/offline state of a device; retained, and the MQTT last will."""

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    ts: TimestampMs
    state: DeviceState
    agent_version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    config_version: Annotated[int, msgspec.Meta(ge=0)] = 0
    sensors: list[SensorId] = msgspec.field(default_factory=list)
    reason: ShortText = ""


DetectorParam = float | int | bool | ShortText
#: Most detector parameters a config may carry (the detectors take a handful).
MAX_DETECTOR_PARAMS: Final = 32


class DeviceConfig(_Message, tag="device_config", kw_only=True, frozen=True):
    """Configuration pushed from the cloud to one device (retained, versioned).

    A null field means "keep what the device has". The device applies a config
    only if its ``version`` is newer than the one it runs.
    """

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    version: Annotated[int, msgspec.Meta(ge=1, description="Monotonic config version.")]
    ts: TimestampMs
    sampling_interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600.0)] | None = None
    alarm_high_c: TempC | None = None
    alarm_low_c: TempC | None = None
    detector: Name | None = None
    detector_params: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], DetectorParam],
        msgspec.Meta(max_length=MAX_DETECTOR_PARAMS),
    ] = msgspec.field(default_factory=dict)
    buzzer_enabled: bool | None = None
    relay_enabled: bool | None = None

    def __post_init__(self) -> None:
        if (
            self.alarm_high_c is not None
            and self.alarm_low_c is not None
            and self.alarm_low_c >= self.alarm_high_c
        ):
            raise ValueError(
                f"alarm_low_c: must be below alarm_high_c ({self.alarm_high_c}), "
                f"got {self.alarm_low_c}"
            )


#: A key id: the first 16 hex digits of the SHA-256 of the raw public key.
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$(?!\n)"
#: Length of an Ed25519 signature, in bytes.
SIGNATURE_BYTES: Final = 64


class SignedConfig(_Message, tag="signed_config", kw_only=True, frozen=True):
    """A ``DeviceConfig`` signed by the config publisher (Ed25519): what the config topic carries.

    ``config`` holds the exact bytes of the encoded ``DeviceConfig`` (base64 in
    JSON); they are signed as they are, never re-serialised, so signer and
    verifier need no canonical JSON. What is signed is
    :func:`telemetry_contract.signing.signed_bytes`: a fixed context, the key
    id and these bytes. The config inside names its device, site and version,
    so a signed config cannot be replayed to another device, and the agent
    refuses a version that is not newer. ``device_id`` and ``site`` repeat the
    inner config's for routing and the topic check; the verifier requires them
    equal.
    """

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    key_id: Annotated[
        str,
        msgspec.Meta(
            pattern=KEY_ID_PATTERN,
            description="Which publisher key signed: first 16 hex digits of SHA-256(raw key).",
        ),
    ]
    config: Annotated[
        bytes,
        msgspec.Meta(max_length=12 * 1024, description="The encoded DeviceConfig, verbatim."),
    ]
    signature: Annotated[
        bytes,
        msgspec.Meta(
            min_length=SIGNATURE_BYTES,
            max_length=SIGNATURE_BYTES,
            description="Ed25519 signature of the signed bytes.",
        ),
    ]


class Gap(_Message, tag="gap", kw_only=True, frozen=True):
    """The edge dropped seqs ``first_seq``..``last_seq`` (inclusive), and why.

    Exact accounting uses this: every seq a device ever assigned is either
    stored or covered by exactly one gap.
    """

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    ts: TimestampMs
    first_seq: Seq
    last_seq: Seq
    reason: GapReason
    message: ShortText = ""

    def __post_init__(self) -> None:
        if self.last_seq < self.first_seq:
            raise ValueError(
                f"last_seq: must be >= first_seq ({self.first_seq}), got {self.last_seq}"
            )

    @property
    def count(self) -> int:
        """Number of readings lost.

        >>> Gap(device_id="d", site="s", ts=1_767_225_600_000, first_seq=10,
        ...     last_seq=14, reason=GapReason.OUTBOX_FULL).count
        5
        """
        return self.last_seq - self.first_seq + 1


#: Most seq ranges one receipt carries (a gateway sends more as several receipts).
MAX_RECEIPT_RANGES: Final = 256
SeqRange = Annotated[
    tuple[Seq, Seq],
    msgspec.Meta(description="Inclusive seq range [first, last], first <= last."),
]


class Receipt(_Message, tag="receipt", kw_only=True, frozen=True):
    """Gateway to device: the records with these seqs are in Kafka (acks=all).

    Sent on the device's ``receipt`` topic after Kafka confirmed them. A
    reading (and a :class:`Gap`, by its ``first_seq``..``last_seq``) stays in
    the device's outbox until a receipt covers it, so a broker that loses what
    it acknowledged (a crash before its disk write) costs a re-send, never a
    reading. Ranges are inclusive, ascending and do not overlap.
    """

    schema_version: SchemaVersion = 1
    device_id: DeviceId
    site: Site
    ts: TimestampMs
    ranges: Annotated[list[SeqRange], msgspec.Meta(min_length=1, max_length=MAX_RECEIPT_RANGES)]
    gateway_id: Annotated[str, msgspec.Meta(max_length=128)] = ""

    def __post_init__(self) -> None:
        last = -1
        for i, (first, end) in enumerate(self.ranges):
            if end < first:
                raise ValueError(f"ranges[{i}]: last must be >= first ({first}), got {end}")
            if first <= last:
                raise ValueError(
                    f"ranges[{i}]: must start after the previous range's last ({last}), got {first}"
                )
            last = end

    def covers(self, seq: int) -> bool:
        """Whether ``seq`` is in one of the ranges.

        >>> r = Receipt(device_id="d", site="s", ts=1_767_225_600_000,
        ...             ranges=[(0, 4), (7, 7)])
        >>> [r.covers(s) for s in (0, 4, 5, 7, 8)]
        [True, True, False, True, False]
        """
        return any(first <= seq <= last for first, last in self.ranges)


class DeadLetter(_Message, tag="dead_letter", kw_only=True, frozen=True):
    """A payload a stage refused, kept whole with the reason (built by
    :func:`telemetry_contract.deadletter.dead_letter`).

    The gateway writes one for an MQTT payload (``source_topic`` is the MQTT
    topic, ``gateway_id`` the gateway), the processor for a Kafka record that
    breaks the contract (``source_topic`` is the Kafka topic, ``gateway_id``
    empty).
    """

    schema_version: SchemaVersion = 1
    reason: Name
    detail: Annotated[str, msgspec.Meta(max_length=4096)]
    source_topic: Annotated[str, msgspec.Meta(max_length=1024)]
    received_ts: Annotated[int, msgspec.Meta(ge=0)]
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    gateway_id: Annotated[str, msgspec.Meta(max_length=128)] = ""


Message = (
    Reading | EdgeAlert | DeviceStatus | DeviceConfig | SignedConfig | Gap | Receipt | DeadLetter
)

#: Message classes by their ``type`` tag.
MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    "reading": Reading,
    "edge_alert": EdgeAlert,
    "device_status": DeviceStatus,
    "device_config": DeviceConfig,
    "signed_config": SignedConfig,
    "gap": Gap,
    "receipt": Receipt,
    "dead_letter": DeadLetter,
}
