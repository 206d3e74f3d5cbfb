"""Live web view: the fleet's temperatures, state and open alerts in a browser."""

# Heavy imports (aiokafka, search clients) happen inside the handlers.

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from stagekit.config import dump_toml
from stagekit.stage import StageCommand, SubParsers, add_config_commands, serve

__all__ = ["WEB", "main", "register"]


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=None, help="TOML config file (default: built-in defaults)"
    )


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
        f"web view on {cfg.http.host}:{cfg.http.port} <- search {cfg.search.url} "
        f"(prefix {cfg.search.index_prefix}), kafka {kafka} (prefix {cfg.kafka.topic_prefix})"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    # The search client logs every request at INFO: one line per reload is noise.
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)

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


def _cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print(dump_toml(cfg) if args.show else f"ok: {_describe(cfg)}")
    return 0


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="serve the page until interrupted")
    _config_option(run)
    run.add_argument("--host", default=None, help="listen address (overrides http.host)")
    run.add_argument("--port", type=int, default=None, help="listen port (overrides http.port)")
    run.set_defaults(func=_cmd_run)
    add_config_commands(sub, _load, _describe, config_option=_config_option)
    # check-config --show: what print-config prints (kept from before print-config existed).
    check = sub.choices["check-config"]
    check.add_argument("--show", action="store_true", help="print the effective config")
    check.set_defaults(func=_cmd_check_config)


#: ``thermowatch web ...`` and ``python -m thermowatch.web ...``.
WEB = StageCommand(
    name="web",
    help="live web view of temperatures, device state and alerts",
    description=__doc__ or "",
    add_commands=_add_commands,
    module="thermowatch.web",
)


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``web`` and its sub-commands to the ``thermowatch`` parser."""
    WEB.register(sub)


def main(argv: list[str] | None = None) -> int:
    """``python -m thermowatch.web COMMAND ...`` (same as ``thermowatch web``)."""
    return WEB.main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
