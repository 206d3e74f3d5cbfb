"""Typed, frozen configuration of the edge agent, validated at start-up.

Load it with :func:`load_config` (TOML file plus ``THERMOWATCH_EDGE__SECTION__KEY``
environment overrides). Every default is shown, commented, in ``sample.toml``.
The cloud may change part of it at run time with a ``DeviceConfig`` message
(see :func:`apply_device_config`); the rest needs a restart.

>>> cfg = loads_config('[device]\\ndevice_id = "s1-d01"\\nsite = "s1"\\n')
>>> cfg.device.device_id, cfg.sampling.interval_s, cfg.outbox.synchronous
('s1-d01', 1.0, 'FULL')
>>> loads_config('[mqtt]\\nqos = 2\\n')
Traceback (most recent call last):
...
stagekit.config.ConfigError: mqtt.qos: must be 1, got 2
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.profiles import PROFILES
from stagekit import config as configuration
from stagekit.address import host_problems, port_problems
from telemetry_contract import MAX_TEMP_C, MIN_TEMP_C, DeviceConfig, TopicKind, mqtt_topic
from telemetry_contract.messages import DEVICE_ID_PATTERN
from telemetry_contract.signing import SignatureError, load_public_key, trusted_keys

__all__ = [
    "AlarmSettings",
    "DetectorSettings",
    "DeviceSettings",
    "EdgeConfig",
    "GpioSettings",
    "MqttSettings",
    "OutboxSettings",
    "RemoteConfigSettings",
    "SamplingSettings",
    "SensorsSettings",
    "apply_device_config",
    "config_summary",
    "load_config",
    "loads_config",
]

ENV_PREFIX = "THERMOWATCH_EDGE"
_ID = re.compile(DEVICE_ID_PATTERN)

DetectorParam = float | int | bool | str


class DeviceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who this agent is and where it keeps its state."""

    #: Agent identity: the MQTT username and topic level.
    device_id: str = "dev-test-1"
    site: str = "lab"
    #: Outbox, detector state; systemd's StateDirectory= sets $STATE_DIRECTORY.
    state_dir: str = "/var/lib/thermowatch-edge"


class SensorsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where to find sensors and how hard to try reading them."""

    w1_enabled: bool = True
    #: Root of the kernel's w1 devices (a fake tree in tests and the simulator).
    w1_root: str = "/sys/bus/w1/devices"
    host_enabled: bool = False
    #: The file gpiozero's CPUTemperature reads (millidegrees Celsius).
    host_file: str = "/sys/class/thermal/thermal_zone0/temp"
    #: Extra attempts after a CRC error, a power-on reset or an implausible value.
    retries: int = 2
    retry_delay_s: float = 0.05
    #: A read still running after this long is reported ``disconnected`` (hung bus).
    read_timeout_s: float = 5.0
    #: Values outside this range are ``out_of_range``; the DS18B20 range by default.
    min_plausible_c: float = MIN_TEMP_C
    max_plausible_c: float = MAX_TEMP_C
    #: A DS18B20 whose value has not moved by one LSB (0.0625 °C) for this many
    #: consecutive readings is reported ``stuck`` (a live room always jitters). 0: off.
    #: A count, not a time: a healthy probe's runs are set by its noise per reading
    #: (simulated corpus: at most 37 in a row at 1 Hz, 18 at 10 s, i.e. 3 min); 120 is
    #: about 3 times the longest (2 min at 1 Hz). Before issue 17: 600.
    stuck_after: int = 120
    #: Refuse to start when no sensor is found (False: wait for hot-plug).
    require_sensor: bool = True


class SamplingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_s: float = 1.0


class AlarmSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Local alarm: thresholds and which outputs sound it."""

    high_c: float | None = None
    low_c: float | None = None
    buzzer_enabled: bool = True
    relay_enabled: bool = False
    #: Consecutive normal readings before an anomaly alert is cleared.
    clear_after: int = 5
    #: A sensor fault alert needs this many consecutive bad readings (or two spanning
    #: fault_after_s, or this many within 2 × fault_after_s): one failed read is not a fault.
    fault_after: int = 3
    fault_after_s: float = 30.0


class DetectorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which online detector runs per sensor (see :mod:`edge_agent.detect`)."""

    #: ``thermal`` is built for equipment temperatures; ``context`` scores best on NAB
    #: (docs/benchmarks.md), for generic streams; ``zscore`` finds change points fast
    #: (``hst`` was removed).
    name: str = "thermal"
    #: The equipment (edge_agent/profiles.py): hard limits, alarm delays, physical bounds.
    #: generic, freezer, cold_room, fridge or server_room.
    profile: str = "generic"
    #: Detector parameters, e.g. ``{target_false_alarms_per_week = 0.5}``.
    params: dict[str, DetectorParam] = msgspec.field(default_factory=dict)
    #: Model state is saved this often and on shutdown.
    save_interval_s: float = 300.0


class GpioSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """LEDs, buzzer, relay and button (BCM pin numbers; 0 or negative: not fitted)."""

    enabled: bool = True
    #: "" lets gpiozero choose (lgpio on a Pi); or lgpio, rpigpio, pigpio, native, mock.
    pin_factory: str = ""
    status_led_pin: int = 17
    alarm_led_pin: int = 27
    buzzer_pin: int = 22
    relay_pin: int = 0
    button_pin: int = 0
    #: Relay energised = heater cut (True), or the opposite wiring (False).
    relay_active_high: bool = True


class OutboxSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The durable SQLite (WAL) outbox between sensors and broker."""

    #: Default: <device.state_dir>/outbox.sqlite3.
    path: str = ""
    #: Bound on stored messages; the oldest readings are dropped beyond it (a Gap says which).
    max_rows: int = 500_000
    #: Readings older than this are dropped (a Gap says which). 0: no age limit.
    max_age_s: float = 14 * 86400.0
    #: FULL: every commit is fsynced (survives power loss). NORMAL: survives kill -9 only.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: On SIGTERM, wait this long for the broker to acknowledge the backlog.
    flush_timeout_s: float = 5.0
    #: Keep a reading after the broker's PUBACK until the gateway's receipt says Kafka
    #: has it (false: delete it on PUBACK, for a gateway that sends no receipts).
    receipts: bool = True
    #: Send what is stored again when the oldest reading awaiting a receipt has waited
    #: this long (many normal round trips: a gateway confirms within about a second).
    receipt_timeout_s: float = 30.0
    #: Longest wait between such re-sends while receipts keep not coming (the backoff's cap).
    resend_max_s: float = 600.0


class MqttSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    #: Read the password from this file instead (keeps it out of the config).
    password_file: str = ""
    qos: Literal[1] = 1
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    #: Stable per device (persistent session). Default: the user name (else the
    #: device id), the only client id the broker accepts for a device (docs/security.md).
    client_id: str = ""
    keepalive_s: int = 30
    #: 0 (default): the broker keeps no session once the device is gone. A device
    #: needs none (its outbox re-sends what was not acknowledged, it subscribes
    #: again at every connect, its config is retained), and a device session that
    #: outlives its connection on a certificate listener crashes Mosquitto 2.0.11:
    #: every reload (a device added or removed) disconnects it a second time and
    #: corrupts the broker's session-expiry list (docs/security.md).
    session_expiry_s: int = 0
    #: MQTT 5 Will Delay Interval: the broker publishes the last will this many
    #: seconds after the connection is lost (at once when the session ends
    #: first). Artemis, unlike Mosquitto, holds the will of a session with
    #: ``session_expiry_s`` above 0 until that session expires (days) when the
    #: will has no delay; 1 s makes it publish the will promptly (deploy/local/README.md).
    will_delay_s: int = 1
    #: Messages handed to the MQTT client and not yet acknowledged.
    max_inflight: int = 64
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    topic_root: str = "thermowatch"
    #: A PUBACK with reason 16 "No matching subscribers" means the broker had
    #: nobody to give the reading to and dropped it (no gateway session yet, or
    #: one the broker lost, e.g. Mosquitto 2.0 forgets shared subscriptions
    #: across a restart). True: keep the row and send it again, like a refusal.
    resend_unrouted: bool = True


class RemoteConfigSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which remote configs (the ``config`` topic) the agent accepts (docs/security.md).

    Only configs signed by the config publisher's key are applied: with no
    ``public_key_file`` every remote config is refused, unless ``allow_unsigned``.
    """

    #: The config publisher's Ed25519 public key (PEM), from the device bundle.
    public_key_file: str = ""
    #: More trusted publisher keys, e.g. the next one while keys are rotated.
    extra_public_key_files: list[str] = msgspec.field(default_factory=list)
    #: Apply unsigned configs too (insecure: anyone who can publish on the config
    #: topic controls the device). A warning is logged at start.
    allow_unsigned: bool = False
    #: Let a remote config turn the buzzer or relay off, or widen the hard limits
    #: (raise ``alarm.high_c``, lower ``alarm.low_c``) beyond this file's.
    allow_safety_changes: bool = False

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """The publisher keys by key id (empty: none configured).

        Raises :class:`~stagekit.config.ConfigError` naming the key of a file
        that cannot be read or holds no Ed25519 public key.
        """
        names = [("remote_config.public_key_file", self.public_key_file)] + [
            (f"remote_config.extra_public_key_files[{i}]", f)
            for i, f in enumerate(self.extra_public_key_files)
        ]
        keys = []
        for name, path in names:
            if not path:
                continue
            try:
                pem = Path(path).read_bytes()
            except OSError as exc:
                raise configuration.ConfigError(
                    f"{name}: cannot read {path} ({exc.strerror})"
                ) from None
            try:
                keys.append(load_public_key(pem, name=name))
            except SignatureError as exc:
                raise configuration.ConfigError(str(exc)) from None
        return trusted_keys(keys)


class EdgeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole edge agent configuration."""

    device: DeviceSettings = DeviceSettings()
    sensors: SensorsSettings = SensorsSettings()
    sampling: SamplingSettings = SamplingSettings()
    alarm: AlarmSettings = AlarmSettings()
    detector: DetectorSettings = DetectorSettings()
    gpio: GpioSettings = GpioSettings()
    outbox: OutboxSettings = OutboxSettings()
    mqtt: MqttSettings = MqttSettings()
    remote_config: RemoteConfigSettings = RemoteConfigSettings()

    def validate(self) -> list[str]:
        """Cross-field problems as ``section.key: problem`` (empty when valid)."""
        from edge_agent.detect import DetectorSpecError, check_detector

        p: list[str] = []
        for key, value in (("device_id", self.device.device_id), ("site", self.device.site)):
            if not _ID.fullmatch(value):
                p.append(f"device.{key}: must match {DEVICE_ID_PATTERN}, got {value!r}")
        if not 0.1 <= self.sampling.interval_s <= 3600:  # NaN fails too
            p.append(f"sampling.interval_s: must be in 0.1..3600, got {self.sampling.interval_s}")
        s = self.sensors
        if s.retries < 0:
            p.append(f"sensors.retries: must be >= 0, got {s.retries}")
        if s.stuck_after < 0:
            p.append(f"sensors.stuck_after: must be >= 0 (0 disables), got {s.stuck_after}")
        if s.read_timeout_s <= 0:
            p.append(f"sensors.read_timeout_s: must be > 0, got {s.read_timeout_s}")
        if s.min_plausible_c >= s.max_plausible_c:
            p.append(
                f"sensors.min_plausible_c: must be below max_plausible_c "
                f"({s.max_plausible_c}), got {s.min_plausible_c}"
            )
        a = self.alarm
        for key, limit in (("high_c", a.high_c), ("low_c", a.low_c)):
            if limit is not None and not MIN_TEMP_C <= limit <= MAX_TEMP_C:  # NaN fails too
                p.append(f"alarm.{key}: must be in {MIN_TEMP_C:g}..{MAX_TEMP_C:g}, got {limit}")
        if a.high_c is not None and a.low_c is not None and a.low_c >= a.high_c:
            p.append(f"alarm.low_c: must be below alarm.high_c ({a.high_c}), got {a.low_c}")
        if not 1 <= a.clear_after <= 100_000:
            p.append(f"alarm.clear_after: must be in 1..100000, got {a.clear_after}")
        if not 1 <= a.fault_after <= 100_000:
            p.append(f"alarm.fault_after: must be in 1..100000, got {a.fault_after}")
        if not 0 <= a.fault_after_s <= 3600:  # NaN fails too
            p.append(f"alarm.fault_after_s: must be in 0..3600, got {a.fault_after_s}")
        if self.detector.profile not in PROFILES:
            known = ", ".join(sorted(PROFILES))
            got = self.detector.profile
            p.append(f"detector.profile: unknown profile {got!r} (known: {known})")
        try:
            check_detector(self.detector.name, self.detector.params)
        except DetectorSpecError as exc:
            p.append(f"detector.{exc.key}: {exc.problem}")
        m, o = self.mqtt, self.outbox
        p += host_problems("mqtt.host", m.host) + port_problems("mqtt.port", m.port)
        if not 1 <= m.max_inflight <= 65535:
            p.append(f"mqtt.max_inflight: must be in 1..65535, got {m.max_inflight}")
        if not 0 <= m.will_delay_s <= 86400:
            p.append(f"mqtt.will_delay_s: must be in 0..86400, got {m.will_delay_s}")
        if m.reconnect_min_s <= 0 or m.reconnect_max_s < m.reconnect_min_s:
            p.append(
                f"mqtt.reconnect_max_s: must be >= reconnect_min_s > 0, got "
                f"{m.reconnect_min_s}..{m.reconnect_max_s}"
            )
        if m.password and m.password_file:
            p.append("mqtt.password_file: set either password or password_file, not both")
        if (m.cert_file == "") != (m.key_file == ""):
            p.append("mqtt.key_file: cert_file and key_file go together")
        if o.max_rows < 2 * m.max_inflight + 10:
            p.append(
                f"outbox.max_rows: must be at least 2 * mqtt.max_inflight + 10 "
                f"({2 * m.max_inflight + 10}), got {o.max_rows}"
            )
        if o.max_age_s < 0:
            p.append(f"outbox.max_age_s: must be >= 0, got {o.max_age_s}")
        if not 1 <= o.receipt_timeout_s <= 86400:  # NaN fails too
            p.append(f"outbox.receipt_timeout_s: must be in 1..86400, got {o.receipt_timeout_s}")
        if not o.receipt_timeout_s <= o.resend_max_s <= 86400:
            p.append(
                f"outbox.resend_max_s: must be in receipt_timeout_s "
                f"({o.receipt_timeout_s:g})..86400, got {o.resend_max_s}"
            )
        p += _key_file_problems(self.remote_config)
        return p

    # Derived values -------------------------------------------------------
    @property
    def client_id(self) -> str:
        """The stable MQTT client id (persistent session)."""
        return self.mqtt.client_id or self.mqtt.username or self.device.device_id

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path or Path(self.device.state_dir) / "outbox.sqlite3")

    @property
    def detector_state_path(self) -> Path:
        return Path(self.device.state_dir) / "detector.pickle"

    def topic(self, kind: TopicKind) -> str:
        """This device's MQTT topic of ``kind`` (``<root>/<site>/<device_id>/<kind>``)."""
        return mqtt_topic(self.device.site, self.device.device_id, kind, root=self.mqtt.topic_root)

    def mqtt_password(self) -> str:
        """The password, from ``password`` or ``password_file`` (read at connect time)."""
        if self.mqtt.password_file:
            return Path(self.mqtt.password_file).read_text(encoding="utf-8").strip()
        return self.mqtt.password


def _key_file_problems(rc: RemoteConfigSettings) -> list[str]:
    """Each trusted key file must be readable and hold an Ed25519 public key (PEM)."""
    try:
        rc.trusted_keys()
    except configuration.ConfigError as exc:
        return [str(exc)]
    return []


def config_summary(config: EdgeConfig) -> dict[str, Any]:
    """The effective configuration as plain data, password masked (``print-config --json``).

    >>> config_summary(loads_config('[mqtt]\\npassword = "s3cret"\\n'))["mqtt"]["password"]
    '***'
    """
    out: dict[str, Any] = msgspec.to_builtins(config)
    if out["mqtt"].get("password"):
        out["mqtt"]["password"] = "***"  # noqa: S105 - a mask, not a password
    return out


def _default_env() -> Mapping[str, str]:
    env = dict(os.environ)
    # systemd's StateDirectory= exports the real path; use it unless overridden.
    state = env.get("STATE_DIRECTORY")
    if state and f"{ENV_PREFIX}__DEVICE__STATE_DIR" not in env:
        env[f"{ENV_PREFIX}__DEVICE__STATE_DIR"] = state.split(":")[0]
    return env


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """Load and validate the agent configuration (``None``: defaults + environment)."""
    return configuration.load(
        EdgeConfig, path, env=_default_env() if env is None else env, env_prefix=ENV_PREFIX
    )


def loads_config(text: str, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """Like :func:`load_config`, from TOML text."""
    return configuration.loads(EdgeConfig, text, env=env or {}, env_prefix=ENV_PREFIX)


def apply_device_config(current: EdgeConfig, remote: DeviceConfig) -> EdgeConfig:
    """The configuration after a remote ``DeviceConfig`` (null fields keep the current value).

    Raises :class:`~stagekit.config.ConfigError` naming the key when
    the result is not valid; the caller then keeps ``current``.

    >>> from telemetry_contract import DeviceConfig
    >>> base = loads_config('[device]\\ndevice_id = "d1"\\nsite = "s"\\n')
    >>> dc = DeviceConfig(device_id="d1", site="s", version=2, ts=1_767_225_600_000,
    ...                   sampling_interval_s=0.5, alarm_high_c=8.0)
    >>> new = apply_device_config(base, dc)
    >>> new.sampling.interval_s, new.alarm.high_c, new.alarm.low_c
    (0.5, 8.0, None)
    >>> bad = DeviceConfig(device_id="d1", site="s", version=3, ts=1_767_225_600_000,
    ...                    detector="nope")
    >>> apply_device_config(base, bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stagekit.config.ConfigError: detector.name: unknown detector 'nope' ...
    """
    if remote.device_id != current.device.device_id or remote.site != current.device.site:
        raise configuration.ConfigError(
            f"device_id: config is for {remote.site}/{remote.device_id}, this is "
            f"{current.device.site}/{current.device.device_id}"
        )
    sampling = current.sampling
    if remote.sampling_interval_s is not None:
        sampling = msgspec.structs.replace(sampling, interval_s=remote.sampling_interval_s)
    alarm = current.alarm
    changes: dict[str, object] = {}
    if remote.alarm_high_c is not None:
        changes["high_c"] = remote.alarm_high_c
    if remote.alarm_low_c is not None:
        changes["low_c"] = remote.alarm_low_c
    if remote.buzzer_enabled is not None:
        changes["buzzer_enabled"] = remote.buzzer_enabled
    if remote.relay_enabled is not None:
        changes["relay_enabled"] = remote.relay_enabled
    alarm = msgspec.structs.replace(alarm, **changes)
    detector = current.detector
    if remote.detector is not None and remote.detector != detector.name:
        detector = msgspec.structs.replace(
            detector, name=remote.detector, params=dict(remote.detector_params)
        )
    elif remote.detector_params:
        detector = msgspec.structs.replace(
            detector, params={**detector.params, **remote.detector_params}
        )
    new = msgspec.structs.replace(current, sampling=sampling, alarm=alarm, detector=detector)
    problems = new.validate()
    if problems:
        raise configuration.ConfigError("; ".join(problems))
    return new
