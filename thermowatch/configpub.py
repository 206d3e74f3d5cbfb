"""``thermowatch config keygen|sign|publish``: the config publisher's key and signed configs.

An edge agent applies only remote configs signed by a key it trusts
(``[remote_config] public_key_file``, see docs/security.md):

* ``keygen --out DIR`` makes ``DIR/config-signing.key`` (mode 0600 from the
  start) and ``DIR/config-signing.pub`` (what devices install);
* ``sign --key KEY CONFIG.json`` prints the signed envelope (a
  ``signed_config`` message) of a ``device_config`` JSON document;
* ``publish --key KEY CONFIG.json`` signs it and publishes it, retained, on
  the device's config topic (default: the local stack's broker and key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from telemetry_contract import ContractError, DeviceConfig, SignedConfig, decode_as, encode
from telemetry_contract.signing import SignatureError, load_private_key, sign_config

__all__ = ["register", "signed_envelope"]


def signed_envelope(key_pem: bytes, config_json: bytes, *, key_name: str = "--key") -> SignedConfig:
    """The envelope of ``config_json`` (a ``device_config`` document) signed with ``key_pem``.

    Raises ``ValueError`` naming ``key_name`` or the config's bad field.
    """
    key = load_private_key(key_pem, name=key_name)
    try:
        config = decode_as(config_json, DeviceConfig)
    except ContractError as exc:
        raise ValueError(f"config: {exc}") from None
    return sign_config(key, config)


def register(subparsers: Any) -> None:
    """Add the ``config`` sub-command to an argparse ``add_subparsers()`` object."""
    cmd = subparsers.add_parser(
        "config",
        help="the config publisher: signing key, signed remote configs",
        description="Remote configs are signed (Ed25519); edge agents apply only those "
        "signed by a key they trust. See docs/security.md.",
    )
    cmd.set_defaults(func=lambda _args: cmd.print_help(sys.stderr) or 1)
    actions = cmd.add_subparsers(dest="config_action", metavar="ACTION")

    keygen = actions.add_parser("keygen", help="a new signing key pair (private key 0600)")
    keygen.add_argument("--out", type=Path, default=Path(), help="directory (default: .)")
    keygen.set_defaults(func=_keygen)

    for name, helptext in (
        ("sign", "print the signed envelope of a device_config JSON file"),
        ("publish", "sign a device_config JSON file and publish it, retained"),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("config", type=Path, help="device_config JSON file ('-': stdin)")
        p.add_argument(
            "--key", type=Path, help="private key (default: the local stack's config-signing.key)"
        )
        if name == "publish":
            p.add_argument("--mqtt-host", help="broker (default: the local stack's)")
            p.add_argument(
                "--mqtt-port",
                type=int,
                help="broker port: TLS with a password (default: the stack's password port)",
            )
            p.add_argument(
                "--ca-file", type=Path, help="CA of the broker's certificate (default: the stack's)"
            )
            p.add_argument(
                "--username",
                default="config-publisher",
                help="MQTT user (default: config-publisher, the one service that writes configs)",
            )
            p.add_argument(
                "--password-file", type=Path, help="MQTT password (default: the stack's)"
            )
        p.set_defaults(func=_sign if name == "sign" else _publish)


def _keygen(args: argparse.Namespace) -> int:
    from deploy.local.config_keys import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, write_key_pair

    out: Path = args.out.expanduser().absolute()
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    try:
        kid = write_key_pair(private, public)
    except FileExistsError:
        raise ValueError(f"--out: {private} exists already; choose another --out") from None
    print(f"key {kid}: private {private} (keep it secret), public {public} (install on devices)")
    return 0


def _envelope(args: argparse.Namespace) -> SignedConfig:
    key_file: Path | None = args.key
    if key_file is None:
        from deploy.local.stack import LocalStack

        key_file = LocalStack().config_signing_key()[0]
    try:
        key_pem = key_file.read_bytes()
    except OSError as exc:
        raise ValueError(f"--key: cannot read {key_file} ({exc.strerror})") from None
    src = sys.stdin.buffer.read() if str(args.config) == "-" else _read(args.config)
    try:
        return signed_envelope(key_pem, src)
    except SignatureError as exc:
        raise ValueError(str(exc)) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"config: cannot read {path} ({exc.strerror})") from None


def _sign(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(encode(_envelope(args)) + b"\n")
    return 0


def _publish(args: argparse.Namespace) -> int:
    import uuid

    import paho.mqtt.publish as publish

    from deploy.local.mqtt_auth import client_id_for
    from telemetry_contract import TopicKind, mqtt_topic

    envelope = _envelope(args)
    host, port, password = args.mqtt_host, args.mqtt_port, None
    ca_file = str(args.ca_file) if args.ca_file is not None else None
    if args.password_file is not None:
        password = args.password_file.read_text(encoding="utf-8").strip()
    if host is None or port is None or password is None or ca_file is None:
        from deploy.local.stack import LocalStack

        stack = LocalStack()
        endpoint = stack.service("mosquitto").endpoint()
        host = host or endpoint["host"]
        # The broker's TLS listener for password logins.
        port = port or endpoint["password_port"]
        ca_file = ca_file or endpoint["ca_file"]
        password = password if password is not None else stack.credentials()[args.username]
    topic = mqtt_topic(envelope.site, envelope.device_id, TopicKind.CONFIG)
    publish.single(
        topic,
        encode(envelope),
        qos=1,
        retain=True,
        hostname=host,
        port=port,
        auth={"username": args.username, "password": password},
        tls={"ca_certs": ca_file},
        # The broker takes a service account only under its own client ids.
        client_id=client_id_for(args.username, f"config-{uuid.uuid4().hex[:8]}"),
    )
    print(f"published {topic} (key {envelope.key_id}, retained)")
    return 0
