"""The record of one demo run: its names, its place, what was injected when.

Everything a run creates is its own: the Kafka topic prefix, the consumer
group, the index prefix, the run directory ``<stack dir>/demo/<run id>/`` and
the fake 1-Wire tree. ``run.json`` in the run directory keeps the record, so
``thermowatch demo account`` can count a run again later.

>>> run = DemoRun("r1", Path("/tmp/r1"), Path("/tmp/w1"), demo_sites(1, 2), 60.0)
>>> run.kafka_prefix, run.index_prefix, run.group_id, run.devices
('demo.r1', 'demo-r1-', 'demo-processor-r1', ['s1-d01', 's1-d02'])
>>> run.search_backend, run.search_service
('opensearch', 'search')
>>> run.record_incident("fire", "s1-d01", 1000, 5000)
>>> run.incidents
[{'kind': 'fire', 'device_id': 's1-d01', 'start_ms': 1000, 'end_ms': 5000}]
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.services import search_service as service_of
from stagekit.kafka import settings_for
from stagekit.search import IndexNames, SearchSettings
from stagekit.settings import KafkaSettings

__all__ = ["DemoRun", "demo_sites", "new_run", "now_ms"]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (incident times, as the edge stamps readings)."""
    return time.time_ns() // 1_000_000


def demo_sites(sites: int = 3, devices: int = 10) -> dict[str, list[str]]:
    """The demo fleet: the MQTT users the local stack creates.

    >>> demo_sites(2, 2)
    {'s1': ['s1-d01', 's1-d02'], 's2': ['s2-d01', 's2-d02']}
    """
    return {f"s{s}": [f"s{s}-d{d:02d}" for d in range(1, devices + 1)] for s in range(1, sites + 1)}


@dataclass
class DemoRun:
    """Names and places of one demo run (everything unique to it)."""

    run_id: str
    run_dir: Path
    w1_dir: Path
    sites: dict[str, list[str]]
    duration_s: float
    kafka_prefix: str = ""
    index_prefix: str = ""
    group_id: str = ""
    started_ms: int = 0
    fleet_stopped_ms: int = 0
    #: Ground truth, as saved in ``run.json``: kind, device_id, start_ms, end_ms.
    incidents: list[dict[str, Any]] = field(default_factory=list)
    malformed_topic: str = ""
    malformed_sent: int = 0
    #: Which search server the run writes to: ``opensearch`` or ``elasticsearch``.
    search_backend: str = "opensearch"

    def __post_init__(self) -> None:
        service_of(self.search_backend)  # refuse an unknown backend at once
        self.kafka_prefix = self.kafka_prefix or f"demo.{self.run_id}"
        self.index_prefix = self.index_prefix or f"demo-{self.run_id}-"
        self.group_id = self.group_id or f"demo-processor-{self.run_id}"

    @property
    def devices(self) -> list[str]:
        """Every device of the fleet, site by site."""
        return [d for devs in self.sites.values() for d in devs]

    @property
    def indices(self) -> IndexNames:
        """The run's index names."""
        return IndexNames(self.index_prefix)

    def record_incident(self, kind: str, device_id: str, start_ms: int, end_ms: int) -> None:
        """Add one incident to the ground truth the alerts are scored against."""
        self.incidents.append(
            {"kind": kind, "device_id": device_id, "start_ms": start_ms, "end_ms": end_ms}
        )

    @property
    def search_service(self) -> str:
        """The stack service of the run's search server (``search`` or ``elasticsearch``)."""
        return service_of(self.search_backend)

    def search_settings(self, endpoints: Mapping[str, Any], user: str = "web") -> SearchSettings:
        """The run's search server in the stack, under the run's index prefix, as ``user``
        (the stack's search users: ``processor`` writes, ``web`` reads, ``admin``)."""
        return SearchSettings.from_endpoint(
            endpoints[self.search_service],
            user,
            backend=self.search_backend,
            index_prefix=self.index_prefix,
        )

    def kafka_settings(self, endpoints: Mapping[str, Any]) -> KafkaSettings:
        """The stack's Kafka, under the run's topic prefix."""
        return settings_for(endpoints["kafka"], "admin", topic_prefix=self.kafka_prefix)

    def save(self) -> None:
        """Write ``run.json`` into the run directory."""
        data = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }
        (self.run_dir / "run.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, run_dir: Path) -> DemoRun:
        """The run saved in ``run_dir``."""
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        data["run_dir"] = Path(data["run_dir"])
        data["w1_dir"] = Path(data["w1_dir"])
        return cls(**data)

    def outbox_paths(self) -> dict[str, Path]:
        """Where each agent of the run kept its outbox."""
        return {d: self.run_dir / "edge" / d / "outbox.sqlite3" for d in self.devices}


def new_run(
    stack_root: Path,
    sites: dict[str, list[str]],
    duration_s: float,
    search_backend: str = "opensearch",
) -> DemoRun:
    """A fresh run under ``<stack_root>/demo/`` (its id starts with the UTC time)."""
    rid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:4]
    run_dir = stack_root / "demo" / rid
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs like sysfs; the name is unique per run
    w1_base = shm if shm.is_dir() and os.access(shm, os.W_OK) else run_dir
    return DemoRun(
        run_id=rid,
        run_dir=run_dir,
        w1_dir=w1_base / f"thermowatch-demo-{rid}" / "w1",
        sites=sites,
        duration_s=duration_s,
        search_backend=search_backend,
    )
