"""``thermowatch gateway run|check-config|print-config``: the gateway's command line.

Also runnable as ``python -m gateway ...``. Heavy imports (paho, aiokafka)
happen inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``gateway`` command and its sub-commands."""
    p = sub.add_parser(
        "gateway",
        help="MQTT -> Kafka bridge (at-least-once, validation, dead letters)",
        description="Forward device messages from MQTT (shared subscriptions) to Kafka.",
    )
    p.set_defaults(func=_help(p))
    _add_commands(p.add_subparsers(title="gateway commands", metavar="COMMAND"))


def _add_commands(gsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = gsub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    run.add_argument(
        "--config", "-c", metavar="FILE", help="TOML config (default: built-ins and env)"
    )
    run.set_defaults(func=_run)

    check = gsub.add_parser("check-config", help="validate the config; exit 1 naming the bad key")
    check.add_argument("--config", "-c", metavar="FILE", help="TOML config to check")
    check.set_defaults(func=_check_config)

    show = gsub.add_parser("print-config", help="print the effective config (secrets masked)")
    show.add_argument("--config", "-c", metavar="FILE", help="TOML config")
    show.set_defaults(func=_print_config)


def _help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def _check_config(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    cfg = load_config(args.config)
    print(
        f"ok: gateway {cfg.gateway_id}: mqtt {cfg.mqtt.host}:{cfg.mqtt.port} "
        f"(share group {cfg.mqtt.share_group}) -> kafka "
        f"{','.join(cfg.kafka.bootstrap_servers)} (prefix {cfg.kafka.topic_prefix})"
    )
    return 0


def _print_config(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from thermowatch.configuration import dump_toml

    print(dump_toml(load_config(args.config)), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.config import load_config

    cfg = load_config(args.config)
    return asyncio.run(_serve(cfg))


async def _serve(cfg: object) -> int:
    import asyncio
    import signal

    from gateway.app import Gateway
    from gateway.config import GatewayConfig

    assert isinstance(cfg, GatewayConfig)
    gateway = Gateway(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop)
    return await gateway.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway``: same sub-commands as ``thermowatch gateway``."""
    from thermowatch.cli import configure_logging
    from thermowatch.configuration import ConfigError

    parser = argparse.ArgumentParser(
        prog="python -m gateway", description="Forward device messages from MQTT to Kafka."
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    parser.set_defaults(func=_help(parser))
    _add_commands(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(argv)
    configure_logging("DEBUG" if args.debug else args.log_level)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
