"""Remote configuration: a retained ``DeviceConfig`` applied without restart, or rejected.

The agent subscribes to its retained ``config`` topic. The config must come
signed by the config publisher (a ``SignedConfig`` whose Ed25519 signature
verifies with a key of ``[remote_config]``; unsigned only with
``allow_unsigned``) and may not weaken the local alarm (:mod:`edge_agent.trust`).
A ``DeviceConfig`` with a higher ``version`` is decoded by the contract, merged into the current
configuration (``null`` keeps a value) and validated like the local file,
every value against its range (``EdgeConfig.validate``, the detectors'
``check``). An invalid one is answered once with an ``EdgeAlert`` of kind
``config_rejected`` naming the key; the previous configuration stays.

Whatever the payload (random bytes, deep nesting, NaN, lone surrogates,
year 10000, huge numbers), :meth:`RemoteConfigGate.offer` returns: the
reason is escaped and cut to :data:`MAX_REASON_CHARS` before it reaches a
log line, an alert or the status.

>>> from edge_agent.config import loads_config
>>> from telemetry_contract import DeviceConfig, encode
>>> from telemetry_contract.signing import generate_private_key, sign_config, trusted_keys
>>> now = 1_767_225_600_000
>>> cfg = loads_config('[device]\\ndevice_id = "d1"\\nsite = "s"\\n')
>>> key = generate_private_key()
>>> trust = ConfigTrust.from_config(cfg, keys=trusted_keys([key.public_key()]))
>>> gate = RemoteConfigGate(topic="thermowatch/s/d1/config", trust=trust)
>>> dc = DeviceConfig(device_id="d1", site="s", version=2, ts=now, sampling_interval_s=0.5)
>>> gate.offer(encode(dc), current=cfg, version=0, now_ms=now).message  # doctest: +ELLIPSIS
'config version None rejected: signature: unsigned config refused ...'
>>> got = gate.offer(encode(sign_config(key, dc)), current=cfg, version=0, now_ms=now)
>>> got.version, got.config.sampling.interval_s
(2, 0.5)
>>> gate.offer(encode(sign_config(key, dc)), current=got.config, version=2, now_ms=now) is None
True
>>> bad = DeviceConfig(device_id="d1", site="s", version=3, ts=now, detector="nope")
>>> gate.offer(encode(sign_config(key, bad)), current=got.config, version=2, now_ms=now).kind
<EdgeAlertKind.CONFIG_REJECTED: 'config_rejected'>
>>> huge = DeviceConfig(device_id="d1", site="s", version=4, ts=now, detector="context",
...                     detector_params={"bins": 2000})
>>> gate.offer(encode(sign_config(key, huge)), current=got.config, version=2, now_ms=now).message
'config version 4 rejected: detector.params.bins: must be in 2..1000, got 2000'
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from edge_agent.config import EdgeConfig, apply_device_config
from edge_agent.detect import SensorMonitor
from edge_agent.trust import ConfigTrust
from stagekit.config import ConfigError
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import (
    MAX_PAYLOAD_BYTES,
    AlertState,
    ContractError,
    DeviceConfig,
    EdgeAlert,
    EdgeAlertKind,
    Severity,
    SignedConfig,
    decode,
    printable,
)
from telemetry_contract.messages import MIN_TS_MS
from telemetry_contract.signing import SignatureError, open_signed_config

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_REASON_CHARS",
    "MAX_REMEMBERED",
    "MAX_VERSION",
    "Accepted",
    "Rejected",
    "RemoteConfigGate",
]

log = logging.getLogger(__name__)

#: A config message longer than this is rejected unread (the contract's message cap).
MAX_CONFIG_BYTES = MAX_PAYLOAD_BYTES
#: A rejection reason is cut to this many characters, escaped, in logs, alerts and status.
MAX_REASON_CHARS = 300
#: The highest config version accepted: JSON-safe (2**53 - 1), like a seq. The
#: status reports the version in force, and a device holding a version no cloud
#: can exceed would refuse every later config.
MAX_VERSION = 2**53 - 1
#: Rejected versions and payloads remembered, so that a retained bad config
#: redelivered on every reconnect is answered once (the oldest is forgotten first).
MAX_REMEMBERED = 64
#: Log lines about rejected configs let through per interval ...
REJECTED_LOG_LINES = 10
#: ... of this many seconds; the next line says how many were held back.
REJECTED_LOG_PER_S = 60.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A remote configuration to apply now."""

    config: EdgeConfig
    version: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why the last config was rejected (escaped and bounded), for the device's status."""

    version: int | None
    reason: str


class _Remembered:
    """A bounded set (oldest forgotten first)."""

    def __init__(self) -> None:
        self._items: dict[object, None] = {}

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: object) -> None:
        self._items[item] = None
        while len(self._items) > MAX_REMEMBERED:
            del self._items[next(iter(self._items))]


class RemoteConfigGate:
    """Decides what a config message means; remembers what it rejected (bounded)."""

    def __init__(self, *, topic: str, trust: ConfigTrust | None = None) -> None:
        self._topic = topic
        #: What a config must prove and may change (default: no key, so nothing is applied).
        self.trust = ConfigTrust() if trust is None else trust
        self._rejected = _Remembered()  # versions, and digests of undecodable payloads
        #: Each rejection is answered by an alert; its log line is rate-limited, so that
        #: a flood of distinct bad configs cannot fill the unit's small disk.
        self.rejected_log = RateLimitedLog(lines=REJECTED_LOG_LINES, per_s=REJECTED_LOG_PER_S)
        #: The last rejection (None once a config has been accepted since).
        self.last_rejected: Rejected | None = None
        #: The newest version this device ever applied (kept across restarts by the agent):
        #: an older one is a rollback, rejected even when the agent runs the local file only.
        self.newest_applied = 0

    def offer(
        self, payload: bytes, *, current: EdgeConfig, version: int, now_ms: int
    ) -> Accepted | EdgeAlert | None:
        """What to do with ``payload``: apply it, store a rejection alert, or nothing.

        Nothing when the retained config was cleared (empty payload: keep what
        we have), or it is not newer than ``version``, or was already rejected.
        Never raises.
        """
        if not payload:
            return None
        digest = hashlib.blake2b(payload[:MAX_CONFIG_BYTES], digest_size=16).digest()
        digest += len(payload).to_bytes(8, "big")
        if digest in self._rejected:
            return None
        if len(payload) > MAX_CONFIG_BYTES:
            return self._reject(
                current,
                None,
                f"payload: {len(payload)} bytes, limit {MAX_CONFIG_BYTES}",
                now_ms,
                digest,
            )
        try:
            remote = self._verified(payload)
        except (ContractError, SignatureError) as exc:
            return self._reject(current, None, str(exc), now_ms, digest)
        except Exception as exc:  # a bug: the contract's decoders raise only ContractError
            self._bug("decode", exc)
            return self._reject(
                current, None, f"payload: undecodable ({type(exc).__name__})", now_ms, digest
            )
        if not 1 <= remote.version <= MAX_VERSION:  # a huge one would lock every later config out
            return self._reject(
                current,
                None,
                f"version: must be in 1..{MAX_VERSION}, got {remote.version}",
                now_ms,
                digest,
            )
        if remote.version <= version or remote.version in self._rejected:
            return None
        if remote.version < self.newest_applied:
            why = (
                f"version: {remote.version} is older than {self.newest_applied}, the newest "
                "config this device applied (a replayed config is not applied)"
            )
            return self._reject(current, remote.version, why, now_ms, None)
        unsafe = self.trust.safety_problems(remote)
        if unsafe:
            return self._reject(current, remote.version, "; ".join(unsafe), now_ms, None)
        try:
            new = apply_device_config(current, remote)
            if new.detector != current.detector:
                # Build one model now: a config that cannot make one is rejected here,
                # not when the first reading meets it in the main loop.
                SensorMonitor(new.detector.name, new.detector.params, new.detector.profile)
        except (ConfigError, ValueError) as exc:  # names the key
            return self._reject(current, remote.version, str(exc), now_ms, None)
        except Exception as exc:  # a bug: rejected all the same, never a crash
            self._bug("apply", exc)
            return self._reject(current, remote.version, type(exc).__name__, now_ms, None)
        self.last_rejected = None
        return Accepted(new, remote.version)

    def _verified(self, payload: bytes) -> DeviceConfig:
        """The config in ``payload`` once its signature checks out (or unsigned, if allowed).

        Raises :class:`ContractError` or :class:`SignatureError` naming the field.
        """
        # The topic check admits only a SignedConfig or a DeviceConfig (of this device).
        message = decode(payload, topic=self._topic)
        if not isinstance(message, SignedConfig | DeviceConfig):  # a topic of another kind
            raise SignatureError(f"type: expected 'signed_config', got {type(message).__name__}")
        if isinstance(message, DeviceConfig):
            if self.trust.allow_unsigned:
                return message
            raise SignatureError(
                "signature: unsigned config refused (the agent applies only configs "
                "signed by a key of [remote_config] public_key_file)"
            )
        if not self.trust.keys:
            raise SignatureError(
                "key_id: no config signing key configured ([remote_config] public_key_file)"
            )
        return open_signed_config(message, self.trust.keys, topic=self._topic)

    def _bug(self, step: str, exc: Exception) -> None:
        """A failure no input should cause: an ERROR line (rate-limited), no traceback."""
        self.rejected_log.log(
            log,
            logging.ERROR,
            "event=config_bug step=%s error=%s",
            step,
            printable(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS, quote=True),
            key="bug",
        )

    def _reject(
        self,
        current: EdgeConfig,
        version: int | None,
        reason: str,
        now_ms: int,
        digest: bytes | None,
    ) -> EdgeAlert:
        self._rejected.add(version if digest is None else digest)
        why = printable(reason, MAX_REASON_CHARS)
        self.last_rejected = Rejected(version, why)
        self.rejected_log.log(
            log, logging.WARNING, "event=config_rejected version=%s reason=%s", version, why
        )
        return EdgeAlert(
            device_id=current.device.device_id,
            site=current.device.site,
            alert_id=f"config:{version if version is not None else 'invalid'}",
            ts=max(now_ms, MIN_TS_MS),
            kind=EdgeAlertKind.CONFIG_REJECTED,
            state=AlertState.RAISED,
            severity=Severity.WARNING,
            message=f"config version {version} rejected: {why}",
        )
