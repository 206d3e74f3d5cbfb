"""Cloud processor: Kafka -> fleet rules, alerts, aggregates -> search server."""

# Heavy imports (aiokafka, search clients) happen inside the handlers.

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["parse_timestamp", "register"]


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


def _config(args: argparse.Namespace) -> Any:
    from cloud_processor.config import load_config

    return load_config(args.config)


async def _run(args: argparse.Namespace, replay_from: int | None = None) -> int:
    from cloud_processor.app import Processor

    cfg = _config(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    processor = Processor(cfg, replay_from_ms=replay_from)
    try:
        await processor.start()
        await processor.run(stop)
    finally:
        await processor.close()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _cmd_replay(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args, replay_from=args.from_ms))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from stagekit.config import dump_toml

    cfg = _config(args)
    if args.show:
        print(dump_toml(cfg))
    else:
        print(f"{args.config or '(defaults)'}: ok")
    return 0


async def _with_storage(args: argparse.Namespace, action: str, arg: str = "") -> int:
    import json
    import time

    from cloud_processor.storage import Storage
    from stagekit.search import make_backend
    from stagekit.search.api import SearchError
    from stagekit.search.indices import IndexNames

    cfg = _config(args)
    backend = make_backend(cfg.search)
    storage = Storage(backend, IndexNames(cfg.search.index_prefix))
    now_ms = int(time.time() * 1000)
    try:
        if action == "ack":
            try:
                doc = await storage.acknowledge(arg, by=args.by, now_ms=now_ms)
            except SearchError as exc:
                if exc.status == 404:
                    print(f"thermowatch: error: no alert {arg!r}", file=sys.stderr)
                    return 1
                raise
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            doomed = await storage.delete_expired(
                now_ms=now_ms, retention_days=cfg.search.retention_days
            )
            for name in doomed:
                print(f"deleted {name}")
            if not doomed:
                print("nothing past retention")
    finally:
        await backend.close()
    return 0


def _cmd_ack(args: argparse.Namespace) -> int:
    return asyncio.run(_with_storage(args, "ack", args.alert_id))


def _cmd_retention(args: argparse.Namespace) -> int:
    return asyncio.run(_with_storage(args, "retention"))


def register(subparsers: Any) -> None:
    """Add ``processor`` and its sub-commands to the ``thermowatch`` parser."""
    _add_processor(subparsers)


def _add_processor(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "processor",
        help="cloud processor: Kafka -> rules/alerts/aggregates -> search server",
        description=__doc__,
    )
    sub = p.add_subparsers(title="processor commands", metavar="COMMAND", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", default=None, help="TOML config file (default: built-in defaults)"
        )

    run = sub.add_parser("run", help="consume, evaluate rules, store and alert")
    common(run)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    common(check)
    check.add_argument("--show", action="store_true", help="print the effective config")
    check.set_defaults(func=_cmd_check_config)

    replay = sub.add_parser(
        "replay",
        help="re-process Kafka records from a point in time (idempotent; no new alerts "
        "for old events)",
    )
    common(replay)
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
    common(ack)
    ack.add_argument("alert_id", metavar="ALERT_ID")
    ack.add_argument("--by", default=getpass.getuser(), help="who acknowledges (default: you)")
    ack.set_defaults(func=_cmd_ack)

    retention = sub.add_parser(
        "retention",
        help="delete monthly reading/aggregate indices past search.retention_days "
        "(for clusters without ILM/ISM; run daily)",
    )
    common(retention)
    retention.set_defaults(func=_cmd_retention)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m cloud_processor COMMAND ...`` (same as ``thermowatch processor``)."""
    from stagekit.logs import configure_logging

    parser = _add_processor(argparse.ArgumentParser().add_subparsers())
    parser.prog = "python -m cloud_processor"
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
