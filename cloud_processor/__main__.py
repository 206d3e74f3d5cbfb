"""Cloud processor: Kafka -> fleet rules, alerts, aggregates -> search server.

Commands: run (the service), replay --from TIME (re-process from a point in
time, then exit), check-config, print-config, ack ALERT_ID, retention; as
``thermowatch processor ...`` or ``python -m cloud_processor ...``.
"""

# Heavy imports (aiokafka, search clients) happen inside the handlers.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from stagekit.stage import StageCommand, SubParsers, add_config_commands, add_config_option, serve

__all__ = ["COMMAND", "main", "parse_timestamp", "register"]

log = logging.getLogger("cloud_processor")


def parse_timestamp(text: str) -> int:
    """ISO 8601 (``2026-01-01T00:00:00Z``) or epoch milliseconds, as epoch ms.

    >>> parse_timestamp("2026-01-01T00:00:00Z"), parse_timestamp("1767225600000")
    (1767225600000, 1767225600000)
    """
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time or epoch milliseconds: {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _load(path: str | None) -> Any:
    from cloud_processor.config import load_config

    return load_config(path)


def _describe(cfg: Any) -> str:
    k, s = cfg.kafka, cfg.search
    return (
        f"processor group {k.group_id}: kafka {','.join(k.servers)} (prefix {k.topic_prefix}) "
        f"-> {s.backend} {s.shown()} (index prefix {s.index_prefix})"
    )


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="consume, evaluate rules, store and alert")
    add_config_option(run)
    run.set_defaults(func=_cmd_run)

    # ``check-config --show`` predates print-config: kept, doing what print-config does.
    add_config_commands(sub, _load, _describe, show_option=True)

    replay = sub.add_parser(
        "replay",
        help="re-process Kafka records from a point in time (idempotent; no new alerts "
        "for old events)",
    )
    add_config_option(replay)
    replay.add_argument(
        "--from",
        dest="from_ms",
        required=True,
        type=parse_timestamp,
        metavar="TIMESTAMP",
        help="ISO 8601 time or epoch milliseconds; compared with the Kafka record "
        "time (when the gateway produced the record)",
    )
    replay.set_defaults(func=_cmd_replay)

    ack = sub.add_parser("ack", help="acknowledge an alert")
    add_config_option(ack)
    ack.add_argument("alert_id", metavar="ALERT_ID")
    ack.add_argument("--by", default=getpass.getuser(), help="who acknowledges (default: you)")
    ack.set_defaults(func=_cmd_ack)

    retention = sub.add_parser(
        "retention",
        help="delete monthly reading/aggregate indices past search.retention_days, once "
        "(the processor installs an ILM/ISM policy that does this where the cluster has one; "
        "without, run this daily)",
    )
    add_config_option(retention)
    retention.set_defaults(func=_cmd_retention)


#: ``thermowatch processor ...`` and ``python -m cloud_processor ...``.
COMMAND = StageCommand(
    name="processor",
    help="cloud processor: Kafka -> rules/alerts/aggregates -> search server",
    description=__doc__ or "",
    add_commands=_add_commands,
    module="cloud_processor",
)


#: Adds the command to ``thermowatch``'s parser.
register = COMMAND.register
#: ``python -m ...``: the same sub-commands.
main = COMMAND.main


#: Client libraries that log each failed request themselves, the search
#: clients with a ~45-line traceback: the processor logs one line per retry.
_SEARCH_LOGGERS = ("opensearch", "elastic_transport", "elasticsearch")


class _ClientLogBudget(logging.Filter):
    """aiokafka's warnings and errors: one line a minute per message (e.g. its
    "Unable connect to" on every attempt while Kafka is down)."""

    def __init__(self) -> None:
        super().__init__()
        from stagekit.ratelog import RateLimitedLog

        self._budget = RateLimitedLog(lines=1, per_s=60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        # Keyed by the message's format string: a fixed set, never the input.
        return record.levelno < logging.WARNING or self._budget.take(str(record.msg)) is not None


def _quiet_clients(args: argparse.Namespace) -> None:
    """One line per retry, not the libraries' own (``--debug`` shows them all)."""
    if getattr(args, "debug", False):
        return
    for name in _SEARCH_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("aiokafka").addFilter(_ClientLogBudget())


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _quiet_clients(args)
    return serve(lambda stop: _serve(cfg, stop))


def _cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _quiet_clients(args)
    return serve(lambda stop: _serve(cfg, stop, replay_from_ms=args.from_ms))


async def _serve(cfg: Any, stop: asyncio.Event, *, replay_from_ms: int | None = None) -> int:
    from cloud_processor.factory import build_processor
    from cloud_processor.storage import StoppedError

    processor = build_processor(cfg, replay_from_ms=replay_from_ms)
    try:
        await processor.start(stop)
        await _run_until_stopped(processor, stop)
    except StoppedError as exc:
        log.info("event=stopped_before_start detail=%s", exc)
    finally:
        await processor.close()
    return 0


async def _run_until_stopped(processor: Any, stop: asyncio.Event) -> None:
    """``processor.run(stop)``; once ``stop`` is set, cut short after ``STOP_GRACE_S``
    (a write waiting for a search server that is down would never end)."""
    from cloud_processor.app import STOP_GRACE_S

    runner = asyncio.ensure_future(processor.run(stop))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((runner, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not runner.done():
        await asyncio.wait((runner,), timeout=STOP_GRACE_S)
    if not runner.done():
        log.warning(
            "event=stop_cut_short grace_s=%.1f detail=records not yet stored are read "
            "again at the next start",
            STOP_GRACE_S,
        )
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await processor.abandon()
        return
    await runner


def _cmd_ack(args: argparse.Namespace) -> int:
    return asyncio.run(_ack(_load(args.config), args.alert_id, args.by))


async def _ack(cfg: Any, alert_id: str, by: str) -> int:
    from cloud_processor.factory import make_storage
    from stagekit.search.api import SearchError

    storage = make_storage(cfg)
    try:
        doc = await storage.acknowledge(alert_id, by=by, now_ms=int(time.time() * 1000))
    except SearchError as exc:
        if exc.status == 404:
            raise LookupError(f"no alert {alert_id!r}") from None
        raise
    finally:
        await storage.close()
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    return asyncio.run(_retention(_load(args.config)))


async def _retention(cfg: Any) -> int:
    from cloud_processor.factory import make_storage

    if not cfg.search.retention_days:
        print("search.retention_days = 0: data is kept for ever, nothing deleted")
        return 0
    storage = make_storage(cfg)
    try:
        doomed = await storage.delete_expired(
            now_ms=int(time.time() * 1000), retention_days=cfg.search.retention_days
        )
    finally:
        await storage.close()
    for name in doomed:
        print(f"deleted {name}")
    if not doomed:
        print("nothing past retention")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
