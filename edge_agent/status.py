"""The device's status on the broker: online per connection, its will, offline.

A connection's last will and its "online" status carry the same event time,
the time the connection was opened: the processor orders a will after the
"online" it ties with, and the next connection's "online" (newer) after both,
so a reconnection always resolves the offline alert.

>>> from edge_agent.config import DeviceSettings
>>> from telemetry_contract import decode
>>> clock = [1_767_225_600_000]
>>> p = Presence(DeviceSettings(device_id="d1", site="s1"), clock_ms=lambda: clock[0])
>>> will = decode(p.will_for_new_connection())
>>> clock[0] += 5_000
>>> online = decode(p.online_of_connection())
>>> will.state.value, online.state.value, will.ts == online.ts
('offline', 'online', True)
"""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.config import DeviceSettings
from stagekit import __version__
from telemetry_contract import DeviceState, DeviceStatus, encode
from telemetry_contract.messages import MIN_TS_MS

__all__ = ["MAX_REASON", "Presence"]

#: The status's ``reason`` field holds at most this many characters (ShortText).
MAX_REASON = 1024


class Presence:
    """Composes the device's ``DeviceStatus`` messages; the agent keeps what they report."""

    def __init__(self, device: DeviceSettings, *, clock_ms: Callable[[], int]) -> None:
        self._device = device
        self._clock_ms = clock_ms
        #: Version of the remote config in force (0: none), reported in every status.
        self.config_version = 0
        #: The sensors found, reported in every status.
        self.sensors: list[str] = []
        #: Event time of the current MQTT connection (see the module docstring).
        self._connection_ts = MIN_TS_MS
        #: Degraded conditions (name -> text), reported in the "online" status's reason.
        self._conditions: dict[str, str] = {}

    def set_condition(self, name: str, text: str | None) -> bool:
        """Report (``text``) or clear (None) a degraded condition; True if that changed it.

        >>> p = Presence(DeviceSettings(device_id="d1", site="s1"), clock_ms=lambda: 0)
        >>> p.set_condition("disk_full", "disk_full: readings are not stored"), p.reason
        (True, 'disk_full: readings are not stored')
        >>> p.set_condition("disk_full", None), p.reason
        (True, '')
        """
        old = self._conditions.get(name)
        if text is None:
            self._conditions.pop(name, None)
        else:
            self._conditions[name] = text
        return old != text

    @property
    def reason(self) -> str:
        """The conditions in force, as the status's reason (bounded like the field)."""
        return "; ".join(self._conditions[k] for k in sorted(self._conditions))[:MAX_REASON]

    def will_for_new_connection(self) -> bytes:
        """The last will of the connection about to be opened (the MQTT link calls it)."""
        self._connection_ts = max(self._clock_ms(), MIN_TS_MS)
        return self.status(DeviceState.OFFLINE, "connection lost", ts=self._connection_ts)

    def online_of_connection(self) -> bytes:
        """The "online" status of the current connection."""
        return self.status(DeviceState.ONLINE, self.reason, ts=self._connection_ts)

    def status(self, state: DeviceState, reason: str = "", ts: int | None = None) -> bytes:
        """One encoded ``DeviceStatus`` (event time now unless ``ts`` is given)."""
        return encode(
            DeviceStatus(
                device_id=self._device.device_id,
                site=self._device.site,
                ts=max(self._clock_ms(), MIN_TS_MS) if ts is None else ts,
                state=state,
                agent_version=__version__,
                config_version=self.config_version,
                sensors=list(self.sensors),
                reason=reason,
            )
        )
