"""``thermowatch gateway run|check-config|print-config|retire``: the gateway's command line.

Also runnable as ``python -m gateway ...`` (the same sub-commands, from one
:class:`~stagekit.stage.StageCommand`). Heavy imports (paho, aiokafka)
happen inside the handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from stagekit.stage import StageCommand, SubParsers, add_config_commands, add_config_option, serve

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import GatewayConfig

__all__ = ["COMMAND", "main", "register"]


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    add_config_option(run)
    run.set_defaults(func=_run)

    retire = sub.add_parser(
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
    add_config_option(retire, "the retired gateway's config")
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

    add_config_commands(sub, _load, _describe)


#: ``thermowatch gateway ...`` and ``python -m gateway ...``.
COMMAND = StageCommand(
    name="gateway",
    help="MQTT -> Kafka bridge (at-least-once, validation, dead letters)",
    description="Forward device messages from MQTT (shared subscriptions) to Kafka.",
    add_commands=_add_commands,
)


#: Adds the command to ``thermowatch``'s parser.
register = COMMAND.register
#: ``python -m ...``: the same sub-commands.
main = COMMAND.main


def _load(path: str | None) -> GatewayConfig:
    from gateway.config import load_config

    return load_config(path)


def _describe(cfg: GatewayConfig) -> str:
    return (
        f"gateway {cfg.gateway_id}: mqtt {cfg.mqtt.host}:{cfg.mqtt.port} "
        f"(share group {cfg.mqtt.share_group}) -> kafka "
        f"{','.join(cfg.kafka.servers)} (prefix {cfg.kafka.topic_prefix})"
    )


async def _until_stopped(gateway: Gateway, stop: asyncio.Event) -> int:
    """Run ``gateway`` until ``stop`` (SIGTERM/SIGINT, set by :func:`serve`)."""
    signalled = asyncio.create_task(stop.wait())
    signalled.add_done_callback(lambda _task: gateway.stop())
    try:
        return await gateway.run()
    finally:
        signalled.cancel()


def _run(args: argparse.Namespace) -> int:
    from gateway.app import build_gateway

    gateway = build_gateway(_load(args.config))
    return serve(lambda stop: _until_stopped(gateway, stop))


def _retire(args: argparse.Namespace) -> int:
    import msgspec

    from gateway.app import RetireOptions, build_gateway

    cfg = _load(args.config)
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
    gateway = build_gateway(cfg, retire=RetireOptions(idle_s=args.idle_s, timeout_s=args.timeout_s))
    code = serve(lambda stop: _until_stopped(gateway, stop))
    print(
        f"retire: client_id={cfg.mqtt_client_id} received={gateway.received_count} "
        f"session_ended={gateway.session_ended}"
    )
    return code if gateway.session_ended else max(code, 1)


if __name__ == "__main__":
    sys.exit(main())
