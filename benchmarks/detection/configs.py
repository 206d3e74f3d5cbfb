"""The agent's default configuration per equipment profile, and the time-to-detect targets.

One place: the benchmark asks :func:`edge_config_for` what a Pi fitted to
that equipment runs with "out of the box", and :data:`TTD_TARGET_S` what
"caught fast" means per fault kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from edge_agent.config import EdgeConfig, loads_config
from edge_agent.detect import Param, check_detector
from edge_agent.equipment import PROFILES

__all__ = ["TTD_TARGET_S", "edge_config_for", "ttd_target_s", "with_detector"]

#: Time-to-detect targets (seconds from when the agent can first see the fault), by
#: fault kind; a ``"<profile>/<kind>"`` key overrides one for that profile.
TTD_TARGET_S: Final[dict[str, float]] = {
    "door_left_open": 300.0,
    "compressor_failure": 900.0,
    "defrost_stuck": 1800.0,
    "refrigerant_leak": 7200.0,
    "power_cut": 300.0,
    "hvac_failure": 600.0,
    "power_on_reset": 60.0,
    "crc_error": 60.0,
    "stuck": 60.0,
    "disconnected": 60.0,
    "probe_in_air": 60.0,
}


def edge_config_for(profile: str) -> EdgeConfig:
    """The default edge configuration of a device watching equipment ``profile``.

    The agent's defaults (the ``thermal`` detector, its default calibration)
    with ``[detector] profile`` set to the equipment: its hard limits and
    alarm delays (``edge_agent/profiles.py``). That one line is all an
    installer changes.

    >>> c = edge_config_for("freezer").detector
    >>> c.name, c.profile
    ('thermal', 'freezer')
    >>> edge_config_for("attic")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: profile: unknown equipment profile 'attic' ...
    """
    if profile not in PROFILES:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"profile: unknown equipment profile {profile!r} (known: {known})")
    return loads_config(f'[detector]\nprofile = "{profile}"\n', env={})


def ttd_target_s(profile: str, kind: str) -> float | None:
    """The time-to-detect target of fault ``kind`` on ``profile`` (None: no target).

    >>> ttd_target_s("freezer", "door_left_open")
    300.0
    """
    return TTD_TARGET_S.get(f"{profile}/{kind}", TTD_TARGET_S.get(kind))


def with_detector(config: EdgeConfig, name: str, params: Mapping[str, Param]) -> EdgeConfig:
    """``config`` running detector ``name`` with ``params`` instead (the profile stays).

    >>> c = with_detector(edge_config_for("fridge"), "zscore", {"window_s": 30})
    >>> c.detector.name, c.detector.params["window_s"], c.detector.profile
    ('zscore', 30.0, 'fridge')
    >>> with_detector(c, "zscore", {"alpha": 0.1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.alpha: was removed...
    """
    checked = check_detector(name, params)
    detector = msgspec.structs.replace(config.detector, name=name, params=checked)
    return msgspec.structs.replace(config, detector=detector)
