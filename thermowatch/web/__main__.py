"""Live web view: the fleet's temperatures, state and open alerts in a browser."""

# Heavy imports (aiokafka, search clients) happen inside the handlers.

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from stagekit.stage import StageCommand, SubParsers, add_config_commands, add_config_option, serve

__all__ = ["WEB", "main", "quiet_clients", "register"]


def _load(path: str | None) -> Any:
    from thermowatch.web.config import load_config

    return load_config(path)


def _config(args: argparse.Namespace) -> Any:
    """The config of ``args.config`` with the ``run`` command's ``--host``/``--port``."""
    import msgspec

    cfg = _load(args.config)
    http = cfg.http
    if getattr(args, "host", None) is not None:
        http = msgspec.structs.replace(http, host=args.host)
    if getattr(args, "port", None) is not None:
        http = msgspec.structs.replace(http, port=args.port)
    return msgspec.structs.replace(cfg, http=http)


def _describe(cfg: Any) -> str:
    kafka = ",".join(cfg.kafka.servers) or "off"
    return (
        f"web view on {cfg.http.host}:{cfg.http.port} <- search {cfg.search.shown()} "
        f"(prefix {cfg.search.index_prefix}), kafka {kafka} (prefix {cfg.kafka.topic_prefix})"
    )


def quiet_clients() -> None:
    """Keep the clients' own lines out of the log: the view says when a source is down.

    The search clients log every request at INFO and every failed one at
    WARNING with a whole traceback; aiokafka logs every failed connection at
    ERROR. A source that stays down would write that every poll; the view
    logs one short line instead (``search_unavailable`` on the change,
    ``kafka_unavailable`` rate-limited).
    """
    for name in ("opensearch", "elastic_transport", "aiokafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    quiet_clients()

    async def service(stop: asyncio.Event) -> int:
        from thermowatch.web.app import WebApp

        app = WebApp(cfg)
        try:
            await app.start()
            print(f"thermowatch web: serving {app.url}/", file=sys.stderr, flush=True)
            await app.run(stop)
        finally:
            await app.close()
        return 0

    return serve(service)


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="serve the page until interrupted")
    add_config_option(run)
    run.add_argument("--host", default=None, help="listen address (overrides http.host)")
    run.add_argument("--port", type=int, default=None, help="listen port (overrides http.port)")
    run.set_defaults(func=_cmd_run)
    # check-config --show: what print-config prints (kept from before print-config existed).
    add_config_commands(sub, _load, _describe, show_option=True)


#: ``thermowatch web ...`` and ``python -m thermowatch.web ...``.
WEB = StageCommand(
    name="web",
    help="live web view of temperatures, device state and alerts",
    description=__doc__ or "",
    add_commands=_add_commands,
    module="thermowatch.web",
)


#: Adds the command to ``thermowatch``'s parser.
register = WEB.register
#: ``python -m ...``: the same sub-commands.
main = WEB.main


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
