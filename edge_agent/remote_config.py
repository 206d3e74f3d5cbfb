"""Remote configuration: a retained ``DeviceConfig`` applied without restart, or rejected.

The agent subscribes to its retained ``config`` topic. A ``DeviceConfig``
with a higher ``version`` is decoded by the contract, merged into the current
configuration (``null`` keeps a value) and validated like the local file. An
invalid one is answered once per version with an ``EdgeAlert`` of kind
``config_rejected`` naming the key; the previous configuration stays.

>>> from edge_agent.config import loads_config
>>> from telemetry_contract import DeviceConfig, encode
>>> now = 1_767_225_600_000
>>> cfg = loads_config('[device]\\ndevice_id = "d1"\\nsite = "s"\\n')
>>> gate = RemoteConfigGate(topic="thermowatch/s/d1/config")
>>> dc = DeviceConfig(device_id="d1", site="s", version=2, ts=now, sampling_interval_s=0.5)
>>> got = gate.offer(encode(dc), current=cfg, version=0, now_ms=now)
>>> got.version, got.config.sampling.interval_s
(2, 0.5)
>>> gate.offer(encode(dc), current=got.config, version=2, now_ms=now) is None  # not newer
True
>>> bad = DeviceConfig(device_id="d1", site="s", version=3, ts=now, detector="nope")
>>> gate.offer(encode(bad), current=got.config, version=2, now_ms=now).kind.value
'config_rejected'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.config import EdgeConfig, apply_device_config
from stagekit.config import ConfigError
from telemetry_contract import (
    AlertState,
    ContractError,
    DeviceConfig,
    EdgeAlert,
    EdgeAlertKind,
    Severity,
    decode_as,
)
from telemetry_contract.messages import MIN_TS_MS

__all__ = ["Accepted", "RemoteConfigGate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A remote configuration to apply now."""

    config: EdgeConfig
    version: int


class RemoteConfigGate:
    """Decides what a config message means; remembers the versions it rejected."""

    def __init__(self, *, topic: str) -> None:
        self._topic = topic
        self._rejected: set[int] = set()

    def offer(
        self, payload: bytes, *, current: EdgeConfig, version: int, now_ms: int
    ) -> Accepted | EdgeAlert | None:
        """What to do with ``payload``: apply it, store a rejection alert, or nothing.

        Nothing when the retained config was cleared (empty payload: keep what
        we have), or it is not newer than ``version``, or was already rejected.
        """
        if not payload:
            return None
        try:
            remote = decode_as(payload, DeviceConfig, topic=self._topic)
        except ContractError as exc:
            return self._reject(current, None, f"{exc}", now_ms)
        if remote.version <= version or remote.version in self._rejected:
            return None
        try:
            new = apply_device_config(current, remote)
        except ConfigError as exc:
            return self._reject(current, remote.version, str(exc), now_ms)
        return Accepted(new, remote.version)

    def _reject(
        self, current: EdgeConfig, version: int | None, reason: str, now_ms: int
    ) -> EdgeAlert:
        if version is not None:
            self._rejected.add(version)
        log.warning("event=config_rejected version=%s reason=%r", version, reason)
        return EdgeAlert(
            device_id=current.device.device_id,
            site=current.device.site,
            alert_id=f"config:{version if version is not None else 'invalid'}",
            ts=max(now_ms, MIN_TS_MS),
            kind=EdgeAlertKind.CONFIG_REJECTED,
            state=AlertState.RAISED,
            severity=Severity.WARNING,
            message=f"config version {version} rejected: {reason}"[:1024],
        )
