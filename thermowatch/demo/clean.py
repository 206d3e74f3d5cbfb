"""Removing what old demo runs left behind: ``thermowatch demo clean``.

Every ``thermowatch demo`` run works under names of its own (see
:class:`thermowatch.demo.run.DemoRun`): Kafka topics ``demo.<run id>.*``, search
indices and index templates ``demo-<run id>-*`` (on the search server the run
wrote to: its ``run.json`` says which), a run directory
``<stack dir>/demo/<run id>/`` and a fake 1-Wire tree on ``/dev/shm``. They
stay after the run so it can be explored (and accounted again), and would pile
up run after run. The demo removes all but the newest run's leftovers when it
starts; ``thermowatch demo clean [--keep N]`` does it on demand.

Not removed: the processor's consumer group (``demo-processor-<run id>``) —
aiokafka's admin client cannot delete groups, and Kafka expires an empty
group's offsets by itself (``offsets.retention.minutes``, 7 days by default).

The pure part chooses; the adapters list and delete (Kafka through
:mod:`stagekit.kafka`, the search server through :mod:`stagekit.search`):

>>> runs = ["20261124101500ab12", "20261125093000cd34", "20261124235959ef56"]
>>> stale_runs(runs, keep=1)
['20261124101500ab12', '20261124235959ef56']
>>> stale_runs(runs, keep=0)
['20261124101500ab12', '20261124235959ef56', '20261125093000cd34']
>>> owned_by("demo.20261124101500ab12.telemetry", "demo.", ".", ["20261124101500ab12"])
'20261124101500ab12'
>>> owned_by("demo.2026112410150.telemetry", "demo.", ".", ["20261124101500ab12"]) is None
True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.services import SEARCH_SERVICES, search_service
from stagekit.kafka import KafkaTarget, delete_topics, list_topics
from stagekit.search import SearchSettings, make_backend
from stagekit.search import api as search

__all__ = ["CleanReport", "clean_demo_runs", "list_runs", "owned_by", "stale_runs"]

log = logging.getLogger(__name__)

#: A run id as :func:`thermowatch.demo.run.new_run` makes them: UTC time + 4 hex digits.
RUN_ID = re.compile(r"^\d{14}[0-9a-f]{4}$")


def stale_runs(run_ids: Iterable[str], keep: int) -> list[str]:
    """The run ids to remove, oldest first: all but the ``keep`` newest.

    Run ids start with their UTC start time, so their order is their age.

    >>> stale_runs(["b", "a", "c"], keep=2)
    ['a']
    >>> stale_runs(["a"], keep=5)
    []
    """
    if keep < 0:
        raise ValueError(f"keep: must be 0 or more, got {keep}")
    ordered = sorted(set(run_ids))
    return ordered[: max(0, len(ordered) - keep)]


def owned_by(name: str, head: str, sep: str, run_ids: Iterable[str]) -> str | None:
    """The run id among ``run_ids`` that owns resource ``name``, if any.

    A resource is owned by run ``r`` when its name is ``<head><r><sep>...``;
    the separator after the id keeps ``...01`` from claiming ``...012``.

    >>> owned_by("demo-20261124101500ab12-alerts", "demo-", "-", ["20261124101500ab12"])
    '20261124101500ab12'
    >>> owned_by("thermowatch-alerts", "demo-", "-", ["20261124101500ab12"]) is None
    True
    """
    if not name.startswith(head):
        return None
    rest = name[len(head) :]
    for rid in run_ids:
        if rest.startswith(rid + sep):
            return rid
    return None


def list_runs(stack_root: Path) -> list[str]:
    """Run ids that have a run directory under ``<stack_root>/demo``."""
    base = stack_root / "demo"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and RUN_ID.match(p.name))


@dataclass
class CleanReport:
    """What :func:`clean_demo_runs` removed."""

    runs: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _delete_topics(kafka: KafkaTarget, run_ids: Sequence[str]) -> list[str]:
    names = [t for t in await list_topics(kafka) if owned_by(t, "demo.", ".", run_ids)]
    return sorted(await delete_topics(kafka, names)) if names else []


def _delete_search(server: SearchSettings, run_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    backend = make_backend(server)
    try:
        # Names, not wildcards: Elasticsearch 8 refuses wildcard deletes
        # (action.destructive_requires_name defaults to true).
        rows = backend.perform_sync(search.cat_indices("demo-*"))
        indices = sorted(r["index"] for r in rows if owned_by(r["index"], "demo-", "-", run_ids))
        for i in range(0, len(indices), 50):
            backend.perform_sync(search.delete_index(",".join(indices[i : i + 50])))
        answer = backend.perform_sync(search.get_index_templates())
        templates = sorted(
            t["name"]
            for t in answer.get("index_templates", [])
            if owned_by(t["name"], "demo-", "-", run_ids)
        )
        for name in templates:
            backend.perform_sync(search.delete_index_template(name))
    finally:
        backend.close_sync()
    return indices, templates


def _by_search_backend(stack_root: Path, run_ids: Sequence[str]) -> dict[str, list[str]]:
    """The runs grouped by the search backend in their ``run.json`` (``opensearch`` when
    it has none: older runs, or a run that stopped before writing it)."""
    out: dict[str, list[str]] = {}
    for rid in run_ids:
        backend = "opensearch"
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((stack_root / "demo" / rid / "run.json").read_text("utf-8"))
            if record.get("search_backend") in SEARCH_SERVICES:
                backend = record["search_backend"]
        out.setdefault(backend, []).append(rid)
    return out


def _remove_dirs(stack_root: Path, run_ids: Sequence[str]) -> list[str]:
    removed = []
    for rid in run_ids:
        for path in (stack_root / "demo" / rid, Path("/dev/shm") / f"thermowatch-demo-{rid}"):  # noqa: S108 - our own tmpfs tree
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    return removed


def clean_demo_runs(
    stack_root: Path,
    endpoints: dict[str, dict[str, Any]],
    keep: int = 1,
    *,
    only: Sequence[str] | None = None,
) -> CleanReport:
    """Remove the Kafka topics, indices, templates and files of all but ``keep`` runs
    (or, with ``only``, of exactly those of these runs that have a run directory).

    Each kind of resource is cleaned on its own: a service that is down is
    reported in ``errors`` and its leftovers stay for the next clean (the run
    directory too, so the run is still known then).
    """
    known = list_runs(stack_root)
    stale = stale_runs(known, keep) if only is None else sorted(set(only) & set(known))
    report = CleanReport(runs=stale)
    if not report.runs:
        return report
    kept: set[str] = set()  # runs with leftovers a service could not remove
    try:
        report.topics = asyncio.run(_delete_topics(endpoints["kafka"], report.runs))
    except Exception as exc:  # report and go on with the other kinds
        report.errors.append(f"kafka: {exc}")
        kept.update(report.runs)
    # Each run on the search server it wrote to (``demo --search``; run.json says which).
    for backend, runs in sorted(_by_search_backend(stack_root, report.runs).items()):
        service = search_service(backend)
        try:
            server = SearchSettings.from_endpoint(
                endpoints[service], "admin", backend=backend, timeout_s=30.0
            )
            indices, templates = _delete_search(server, runs)
        except Exception as exc:
            report.errors.append(f"{service}: {exc}")
            kept.update(runs)
            continue
        report.indices = sorted(report.indices + indices)
        report.templates = sorted(report.templates + templates)
    report.dirs = _remove_dirs(stack_root, [r for r in report.runs if r not in kept])
    log.info(
        "demo clean runs=%d topics=%d indices=%d templates=%d errors=%d",
        len(report.runs),
        len(report.topics),
        len(report.indices),
        len(report.templates),
        len(report.errors),
    )
    return report
