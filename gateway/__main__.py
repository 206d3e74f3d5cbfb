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

    retire = gsub.add_parser(
        "retire",
        aliases=["drain"],
        help="drain a removed gateway's MQTT session into Kafka, then end the session",
        description=(
            "Connect with a retired gateway's client id and persistent session, forward "
            "every message the broker queued for it (acknowledged after Kafka, as in run), "
            "unsubscribe, and disconnect with session expiry 0 so that the broker deletes "
            "the session and stops queueing this member's share of the shared subscription. "
            "Use the retired gateway's config (same share group, topics and credentials)."
        ),
    )
    retire.add_argument("--config", "-c", metavar="FILE", help="the retired gateway's config")
    retire.add_argument(
        "--gateway-id", metavar="ID", help="id of the retired gateway (default: gateway.id)"
    )
    retire.add_argument(
        "--client-id", metavar="ID", help="its MQTT client id, if set explicitly in its config"
    )
    retire.add_argument(
        "--idle-s",
        type=float,
        default=5.0,
        metavar="S",
        help="finish once nothing arrived for this long (default 5)",
    )
    retire.add_argument(
        "--timeout-s",
        type=float,
        default=600.0,
        metavar="S",
        help="give up (keeping the session) after this long (default 600)",
    )
    retire.set_defaults(func=_retire)

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
    from stagekit.config import dump_toml

    print(dump_toml(load_config(args.config)), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.config import load_config

    cfg = load_config(args.config)
    return asyncio.run(_serve(cfg))


async def _serve(cfg: object) -> int:
    from gateway.app import Gateway
    from gateway.config import GatewayConfig

    assert isinstance(cfg, GatewayConfig)
    return await _serve_gateway(Gateway(cfg))


async def _serve_gateway(gateway: object) -> int:
    import asyncio
    import signal

    from gateway.app import Gateway

    assert isinstance(gateway, Gateway)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop)
    return await gateway.run()


def _retire(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from gateway.app import Gateway, RetireOptions
    from gateway.config import load_config

    cfg = load_config(args.config)
    if args.gateway_id:
        cfg = msgspec.structs.replace(
            cfg, gateway=msgspec.structs.replace(cfg.gateway, id=args.gateway_id)
        )
    if args.client_id:
        cfg = msgspec.structs.replace(
            cfg, mqtt=msgspec.structs.replace(cfg.mqtt, client_id=args.client_id)
        )
    # No probe port: the retiring process may run beside the live gateways.
    cfg = msgspec.structs.replace(cfg, http=msgspec.structs.replace(cfg.http, enabled=False))
    problems = cfg.validate()
    if problems:
        print(f"gateway retire: error: {problems[0]}", file=sys.stderr)
        return 1
    gateway = Gateway(cfg, retire=RetireOptions(idle_s=args.idle_s, timeout_s=args.timeout_s))
    code = asyncio.run(_serve_gateway(gateway))
    print(
        f"retire: client_id={cfg.mqtt_client_id} received={gateway.received_count} "
        f"session_ended={gateway.session_ended}"
    )
    return code if gateway.session_ended else max(code, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway``: same sub-commands as ``thermowatch gateway``."""
    from stagekit.config import ConfigError
    from stagekit.logs import configure_logging

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
