"""Live web view: the fleet's temperatures, state and open alerts in a browser."""

# Heavy imports (aiokafka, search clients) happen inside the handlers.

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

__all__ = ["register"]


def _config(args: argparse.Namespace) -> Any:
    import msgspec

    from thermowatch.web.config import load_config

    cfg = load_config(args.config)
    http = cfg.http
    if getattr(args, "host", None) is not None:
        http = msgspec.structs.replace(http, host=args.host)
    if getattr(args, "port", None) is not None:
        http = msgspec.structs.replace(http, port=args.port)
    return msgspec.structs.replace(cfg, http=http)


async def _run(args: argparse.Namespace) -> int:
    from thermowatch.web.app import WebApp

    cfg = _config(args)
    # The search client logs every request at INFO: one line per reload is noise.
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = WebApp(cfg)
    try:
        await app.start()
        print(f"thermowatch web: serving {app.url}/", file=sys.stderr, flush=True)
        await app.run(stop)
    finally:
        await app.close()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from stagekit.config import dump_toml

    cfg = _config(args)
    if args.show:
        print(dump_toml(cfg))
    else:
        print(f"{args.config or '(defaults)'}: ok")
    return 0


def register(subparsers: Any) -> None:
    """Add ``web`` and its sub-commands to the ``thermowatch`` parser."""
    _add_web(subparsers)


def _add_web(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "web", help="live web view of temperatures, device state and alerts", description=__doc__
    )
    sub = p.add_subparsers(title="web commands", metavar="COMMAND", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", default=None, help="TOML config file (default: built-in defaults)"
        )

    run = sub.add_parser("run", help="serve the page until interrupted")
    common(run)
    run.add_argument("--host", default=None, help="listen address (overrides http.host)")
    run.add_argument("--port", type=int, default=None, help="listen port (overrides http.port)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    common(check)
    check.add_argument("--show", action="store_true", help="print the effective config")
    check.set_defaults(func=_cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m thermowatch.web COMMAND ...`` (same as ``thermowatch web``)."""
    from stagekit.logs import configure_logging

    parser = _add_web(argparse.ArgumentParser().add_subparsers())
    parser.prog = "python -m thermowatch.web"
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
