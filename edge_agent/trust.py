"""What a remote config must prove, and may change: publisher keys, local safety settings.

:class:`ConfigTrust` is the policy :class:`~edge_agent.remote_config.RemoteConfigGate`
applies, made once at start from ``[remote_config]`` and the local file
(:meth:`ConfigTrust.from_config`). It accepts a config signed by a trusted
key (:mod:`telemetry_contract.signing`); an unsigned one only with
``allow_unsigned``. Unless ``allow_safety_changes``, a remote config may not
turn the buzzer or the relay off, nor widen a hard limit beyond the local
file's (the ``[alarm]`` value, else the equipment profile's): it may only
make the alarm stricter.

>>> from edge_agent.config import loads_config
>>> from telemetry_contract import DeviceConfig
>>> local = loads_config('[device]\\ndevice_id = "d1"\\nsite = "s"\\n[alarm]\\nhigh_c = 8.0\\n')
>>> trust = ConfigTrust.from_config(local, keys={})
>>> def dc(**fields):
...     return DeviceConfig(device_id="d1", site="s", version=2, ts=1_767_225_600_000, **fields)
>>> trust.safety_problems(dc(alarm_high_c=6.0, relay_enabled=True))  # stricter: fine
[]
>>> trust.safety_problems(dc(alarm_high_c=12.0, buzzer_enabled=False))  # doctest: +ELLIPSIS
['alarm_high_c: 12.0 is above the local hard limit 8.0 (... allow_safety_changes = false)', \
'buzzer_enabled: the buzzer cannot be turned off remotely (... allow_safety_changes = false)']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.config import EdgeConfig
from edge_agent.profiles import PROFILES
from telemetry_contract import DeviceConfig

__all__ = ["ConfigTrust"]

_LOCKED = "[remote_config] allow_safety_changes = false"


@dataclass(frozen=True, slots=True)
class ConfigTrust:
    """Which remote configs may be applied (see the module docstring)."""

    #: Trusted publisher keys by key id.
    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    allow_unsigned: bool = False
    allow_safety_changes: bool = False
    #: The local file's safety settings: hard limits in force (None: none) and outputs on.
    high_c: float | None = None
    low_c: float | None = None
    buzzer_enabled: bool = False
    relay_enabled: bool = False

    @classmethod
    def from_config(
        cls, local: EdgeConfig, keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> ConfigTrust:
        """The policy of the local file ``local`` (``keys`` default: read its key files)."""
        rc, alarm = local.remote_config, local.alarm
        profile = PROFILES[local.detector.profile]
        return cls(
            keys=rc.trusted_keys() if keys is None else keys,
            allow_unsigned=rc.allow_unsigned,
            allow_safety_changes=rc.allow_safety_changes,
            high_c=alarm.high_c if alarm.high_c is not None else profile.high_c,
            low_c=alarm.low_c if alarm.low_c is not None else profile.low_c,
            buzzer_enabled=alarm.buzzer_enabled,
            relay_enabled=alarm.relay_enabled,
        )

    def safety_problems(self, remote: DeviceConfig) -> list[str]:
        """What in ``remote`` would weaken the local alarm (empty when allowed), field first."""
        if self.allow_safety_changes:
            return []
        p: list[str] = []
        high, low = remote.alarm_high_c, remote.alarm_low_c
        if high is not None and self.high_c is not None and high > self.high_c:
            p.append(
                f"alarm_high_c: {high} is above the local hard limit {self.high_c} ({_LOCKED})"
            )
        if low is not None and self.low_c is not None and low < self.low_c:
            p.append(f"alarm_low_c: {low} is below the local hard limit {self.low_c} ({_LOCKED})")
        for name, local_on, remote_on in (
            ("buzzer", self.buzzer_enabled, remote.buzzer_enabled),
            ("relay", self.relay_enabled, remote.relay_enabled),
        ):
            if local_on and remote_on is False:
                p.append(f"{name}_enabled: the {name} cannot be turned off remotely ({_LOCKED})")
        return p
