"""Fleet simulator: writes a fake w1 sysfs tree that the real reader reads.

A scenario file (TOML) describes a fleet - devices, DS18B20 probes per
device, a daily temperature cycle with noise - and incidents injected at
given times. The simulator writes ``<out>/<device_id>/28-*/w1_slave`` files in
the kernel's format each step, so the agent's real discovery, parsing,
quality judgement, hot-plug handling and detector run unchanged. Ground-truth
labels of the injected incidents go to ``<out>/labels.jsonl``. For load
tests put ``<out>`` on a tmpfs (``/dev/shm``, ``/run``) like the real sysfs:
on a disk filesystem every rename is a journal transaction.

Incident kinds: ``spike`` (short jump), ``drift`` (slow ramp),
``stuck`` (value frozen), ``dropout`` (device directory disappears),
``crc`` (``crc=.. NO``), ``reset`` (85.000 °C power-on value), ``fire``
(fast rise), ``door_open`` (freezer door left open: warms towards ambient,
recovers after closing).

With ``[fleet] profile = "freezer"`` (or ``cold_room``, ``fridge``,
``server_room``) each probe follows that equipment's physics
(:mod:`edge_agent.equipment`: compressor cycles, defrosts, doors, load)
instead of the plain daily cycle, and the equipment faults become incident
kinds too: ``door_left_open``, ``compressor_failure``, ``defrost_stuck``,
``refrigerant_leak``, ``power_cut``, ``hvac_failure``, ``probe_in_air``.
A profile fleet runs for the scenario's ``duration_s``.

Everything is deterministic for a given ``seed``:

>>> sc = Scenario.from_toml('''
... seed = 1
... [fleet]
... devices = 1
... sensors_per_device = 1
... [[incident]]
... kind = "crc"
... start_s = 2
... duration_s = 1
... ''')
>>> sim = FleetSimulator(sc)
>>> [sim.sample(0, 0, step)[0] for step in range(4)]
['ok', 'ok', 'crc', 'ok']
>>> w1_slave_text(4.0625)
'41 00 4b 46 7f ff 0c 10 c2 : crc=c2 YES\\n41 00 4b 46 7f ff 0c 10 c2 t=4062\\n'
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import tomllib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import msgspec

from edge_agent.config import EdgeConfig
from edge_agent.equipment import PROFILES, Fault, compatible, profile, readouts
from edge_agent.w1 import ds18b20_millic

__all__ = [
    "FleetSimulator",
    "Incident",
    "Scenario",
    "crc8",
    "w1_slave_text",
]

#: Equipment faults: only a profile fleet's physics can play them.
EquipmentKind = Literal[
    "door_left_open",
    "compressor_failure",
    "defrost_stuck",
    "refrigerant_leak",
    "power_cut",
    "hvac_failure",
    "probe_in_air",
]
IncidentKind = Literal[
    "spike", "drift", "stuck", "dropout", "crc", "reset", "fire", "door_open", EquipmentKind
]
EQUIPMENT_KINDS: Final = frozenset(get_args(EquipmentKind))
#: Incidents that change the temperature (the detector should flag them);
#: the rest are sensor faults (the reading's quality flag should say so).
ANOMALY_KINDS: Final = frozenset({"spike", "drift", "stuck", "fire", "door_open"}) | (
    EQUIPMENT_KINDS - {"probe_in_air"}
)
EXPECTED_QUALITY: Final = {"dropout": "disconnected", "crc": "crc_error", "reset": "power_on_reset"}


class Fleet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    devices: int = 1
    device_prefix: str = "sim-d"
    site: str = "sim"
    sensors_per_device: int = 2
    base_c: float = 4.0
    #: Peak-to-mean amplitude of the daily cycle, and its period (a day).
    daily_amplitude_c: float = 1.0
    period_s: float = 86400.0
    noise_c: float = 0.05
    #: Per-device offset of the base temperature, drawn uniformly in +-spread.
    base_spread_c: float = 0.5
    #: Equipment profile whose physics the probes follow ("": the daily cycle above).
    profile: str = ""


class Incident(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: IncidentKind
    start_s: float
    duration_s: float
    #: Device index (-1: every device) and probe index (-1: every probe).
    device: int = 0
    sensor: int = 0
    #: Size of the change: spike height, drift at the end, fire rise, door warm-up
    #: (an equipment fault ignores it: the physics decides).
    magnitude_c: float = 10.0

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.start_s + self.duration_s

    @property
    def label_end_s(self) -> float:
        """End of the ground-truth label: a freezer needs about as long again to recover."""
        tail = self.duration_s if self.kind == "door_open" else 0.0
        return self.start_s + self.duration_s + tail

    def labelled(self, t: float) -> bool:
        return self.start_s <= t < self.label_end_s


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seed: int = 0
    interval_s: float = 1.0
    duration_s: float = 3600.0
    fleet: Fleet = Fleet()
    incident: list[Incident] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        prof = self.fleet.profile
        if prof and prof not in PROFILES:
            known = ", ".join(sorted(PROFILES))
            raise ValueError(f"fleet.profile: unknown equipment profile {prof!r} (known: {known})")
        for i, inc in enumerate(self.incident):
            if inc.kind not in EQUIPMENT_KINDS:
                continue
            if not prof:
                raise ValueError(f"incident[{i}].kind: {inc.kind!r} needs a [fleet] profile")
            if not compatible(inc.kind, PROFILES[prof]):
                raise ValueError(f"incident[{i}].kind: {inc.kind!r} does not apply to {prof!r}")

    @classmethod
    def from_toml(cls, text: str) -> Scenario:
        return msgspec.convert(tomllib.loads(text), cls)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        return cls.from_toml(Path(path).read_text(encoding="utf-8"))


_CRC_TABLE: Final = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x8C if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc8(data: bytes) -> int:
    """Dallas/Maxim 1-Wire CRC8 (what the kernel checks before printing ``YES``).

    >>> hex(crc8(bytes.fromhex("72014b467fff0e10")))  # a real probe printed crc=57
    '0x57'
    """
    crc = 0
    for b in data:
        crc = _CRC_TABLE[crc ^ b]
    return crc


def w1_slave_text(
    temp_c: float | None, *, crc_ok: bool = True, raw_millic: int | None = None
) -> str:
    """The two lines the w1-therm driver prints for a 12-bit DS18B20 scratchpad."""
    source = raw_millic * 16 / 1000 if raw_millic is not None else (temp_c or 0.0) * 16
    raw = round(source)
    raw &= 0xFFFF
    pad = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    crc = crc8(pad)
    shown = crc if crc_ok else crc ^ 0x5A
    hexes = " ".join(f"{b:02x}" for b in (*pad, shown))
    signed = raw - 0x10000 if raw & 0x8000 else raw
    millic = raw_millic if raw_millic is not None else ds18b20_millic(signed / 16)
    return f"{hexes} : crc={shown:02x} {'YES' if crc_ok else 'NO'}\n{hexes} t={millic}\n"


@dataclass(frozen=True, slots=True)
class SimDevice:
    device_id: str
    site: str
    sensor_ids: tuple[str, ...]
    base_c: float


class FleetSimulator:
    """Computes every probe's state per step and writes it as a w1 sysfs tree."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        f = scenario.fleet
        rng = random.Random(scenario.seed)  # noqa: S311 - simulation, not crypto
        self.devices: list[SimDevice] = []
        for d in range(f.devices):
            ids = tuple(f"28-{rng.getrandbits(48):012x}" for _ in range(f.sensors_per_device))
            base = f.base_c + rng.uniform(-f.base_spread_c, f.base_spread_c)
            self.devices.append(SimDevice(f"{f.device_prefix}{d + 1:03d}", f.site, ids, base))
        self._rngs = {
            (d, s): random.Random(zlib.crc32(f"{scenario.seed}/{d}/{s}".encode()))  # noqa: S311
            for d in range(f.devices)
            for s in range(f.sensors_per_device)
        }
        self._stuck: dict[tuple[int, int, int], float] = {}
        self._gone: set[tuple[int, int]] = set()
        self._physics: dict[tuple[int, int], Iterator[tuple[str, float]]] = {}

    def _equipment(self, d: int, s: int) -> Iterator[tuple[str, float]]:
        """The readings of probe ``s`` of device ``d`` on its profile's equipment."""
        sc = self.scenario
        faults = [
            Fault(inc.kind, start_s=inc.start_s, duration_s=inc.duration_s)
            for _, inc in self.incidents_for(d, s)
            if inc.kind in EQUIPMENT_KINDS
        ]
        seed = zlib.crc32(f"{sc.seed}/{d}/{s}".encode())
        return readouts(
            profile(sc.fleet.profile),
            seed,
            duration_s=sc.duration_s + sc.interval_s,
            interval_s=sc.interval_s,
            faults=faults,
        )

    def incidents_for(self, d: int, s: int) -> Iterator[tuple[int, Incident]]:
        for i, inc in enumerate(self.scenario.incident):
            if inc.device in (-1, d) and inc.sensor in (-1, s):
                yield i, inc

    def _clean(self, d: int, t: float) -> float:
        f = self.scenario.fleet
        cycle = f.daily_amplitude_c * math.sin(2 * math.pi * t / f.period_s)
        return self.devices[d].base_c + cycle

    def sample(self, d: int, s: int, step: int) -> tuple[str, float | None]:
        """``(state, temp_c)`` of probe ``s`` of device ``d`` at ``step``.

        state is ``ok``, ``crc``, ``reset`` or ``dropout``. Steps must be asked in
        order per probe (the noise stream is sequential, so runs are reproducible).
        """
        t = step * self.scenario.interval_s
        state = "ok"
        if self.scenario.fleet.profile:
            it = self._physics.get((d, s))
            if it is None:
                it = self._physics[(d, s)] = self._equipment(d, s)
            try:
                raw, value = next(it)
            except StopIteration:
                raise ValueError(
                    f"step {step}: past the scenario's duration_s ({self.scenario.duration_s})"
                ) from None
            # The probe's directory is gone (unplugged, or the 1-Wire bus lost power).
            state = {"gone": "dropout", "off": "dropout"}.get(raw, raw)
        else:
            noise = self._rngs[(d, s)].gauss(0.0, self.scenario.fleet.noise_c)
            value = self._clean(d, t) + noise
        for i, inc in self.incidents_for(d, s):
            since = t - inc.start_s
            if since < 0:
                continue
            during = inc.active(t)
            k = inc.kind
            if k == "spike" and during:
                value += inc.magnitude_c
            elif k in ("drift", "fire") and during:
                # A ramp over the incident (slow for drift, fast for fire), then back.
                value += inc.magnitude_c * since / inc.duration_s
            elif k == "door_open":
                tau = max(inc.duration_s / 3, 1.0)
                if during:
                    value += inc.magnitude_c * (1 - math.exp(-since / tau))
                else:
                    peak = inc.magnitude_c * (1 - math.exp(-inc.duration_s / tau))
                    value += peak * math.exp(-(since - inc.duration_s) / tau)
            elif k == "stuck" and during:
                value = self._stuck.setdefault((i, d, s), value)
            elif during and k in ("crc", "reset", "dropout"):
                state = k
        return state, max(-55.0, min(125.0, value))

    def labels(self, start_ms: int) -> list[dict[str, object]]:
        """One ground-truth record per injected incident and affected probe."""
        out: list[dict[str, object]] = []
        for d, dev in enumerate(self.devices):
            for s, sid in enumerate(dev.sensor_ids):
                for _, inc in self.incidents_for(d, s):
                    out.append(
                        {
                            "device_id": dev.device_id,
                            "site": dev.site,
                            "sensor_id": sid,
                            "kind": inc.kind,
                            "start_ts": start_ms + int(inc.start_s * 1000),
                            "end_ts": start_ms + int(inc.label_end_s * 1000),
                            "anomaly": inc.kind in ANOMALY_KINDS,
                            "expected_quality": EXPECTED_QUALITY.get(inc.kind, "ok"),
                        }
                    )
        return out

    def device_root(self, out: Path, device_id: str) -> Path:
        """The w1 root an agent simulating ``device_id`` should read."""
        return out / device_id

    def agent_config(self, base: EdgeConfig, out: Path, dev: SimDevice) -> EdgeConfig:
        """The config of the agent of simulated device ``dev``, from the template ``base``.

        Its own identity (MQTT user = device id), state directory and w1 root;
        no host sensor and no GPIO (many agents share one process). A
        ``{device_id}`` in the template's ``mqtt.password_file`` becomes the
        device's id, so each agent reads its own password (``thermowatch
        devices add`` gives every device its own).

        >>> from edge_agent.config import loads_config
        >>> sim = FleetSimulator(Scenario.from_toml('[fleet]\\ndevices = 1\\n'))
        >>> base = loads_config('[mqtt]\\npassword_file = "b/{device_id}/edge.password"\\n')
        >>> cfg = sim.agent_config(base, Path("w1"), sim.devices[0])
        >>> cfg.mqtt.username, cfg.mqtt.password_file
        ('sim-d001', 'b/sim-d001/edge.password')
        """
        return msgspec.structs.replace(
            base,
            device=msgspec.structs.replace(
                base.device,
                device_id=dev.device_id,
                site=dev.site,
                state_dir=str(Path(base.device.state_dir) / dev.device_id),
            ),
            sensors=msgspec.structs.replace(
                base.sensors, w1_root=str(self.device_root(out, dev.device_id)), host_enabled=False
            ),
            mqtt=msgspec.structs.replace(
                base.mqtt,
                username=dev.device_id,
                client_id="",
                password_file=base.mqtt.password_file.replace("{device_id}", dev.device_id),
            ),
            gpio=msgspec.structs.replace(base.gpio, enabled=False),
        )

    def write_step(self, out: Path, step: int) -> int:
        """Write every probe's ``w1_slave`` for ``step``; returns the number written."""
        n = 0
        for d, dev in enumerate(self.devices):
            root = out / dev.device_id
            for s, sid in enumerate(dev.sensor_ids):
                state, value = self.sample(d, s, step)
                ddir = root / sid
                if state == "dropout":
                    if (d, s) not in self._gone:
                        shutil.rmtree(ddir, ignore_errors=True)
                        self._gone.add((d, s))
                    continue
                if (d, s) in self._gone or step == 0:
                    ddir.mkdir(parents=True, exist_ok=True)
                    self._gone.discard((d, s))
                if state == "crc":
                    text = w1_slave_text(value, crc_ok=False)
                elif state == "reset":
                    text = w1_slave_text(None, raw_millic=85000)
                else:
                    text = w1_slave_text(value)
                # Write beside, then rename: a reader never sees half a file.
                tmp = f"{ddir}/.w1_slave.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, text.encode("ascii"))
                finally:
                    os.close(fd)
                os.rename(tmp, f"{ddir}/w1_slave")  # noqa: PTH104 - hot path, str paths
                n += 1
        return n

    def run(
        self,
        out: Path,
        *,
        realtime: bool = True,
        steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Write the tree step by step (paced by ``interval_s`` when realtime)."""
        out.mkdir(parents=True, exist_ok=True)
        for dev in self.devices:
            (out / dev.device_id / "w1_bus_master1").mkdir(parents=True, exist_ok=True)
        start_ms = time.time_ns() // 1_000_000
        with open(out / "labels.jsonl", "w", encoding="utf-8") as f:
            for rec in self.labels(start_ms):
                f.write(json.dumps(rec) + "\n")
        total = (
            steps if steps is not None else int(self.scenario.duration_s / self.scenario.interval_s)
        )
        written = 0
        t0 = time.monotonic()
        for step in range(total):
            if should_stop():
                break
            written += self.write_step(out, step)
            if on_step is not None:
                on_step(step)
            if realtime:
                # In short naps, so that a stop (SIGTERM) ends a slow scenario at once.
                due = t0 + (step + 1) * self.scenario.interval_s
                while not should_stop() and (delay := due - time.monotonic()) > 0:
                    time.sleep(min(delay, 0.2))
        return written
