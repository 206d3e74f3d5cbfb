"""``thermowatch devices add|remove|list|rotate``: MQTT users of the local stack for edge devices.

A device logs in to the broker with its device id as user name and client id
(the broker refuses any other client id; its ACL lets it write only
``thermowatch/<site>/<device_id>/{telemetry,status,alert,gap}``, never retained:
docs/security.md). ``add`` creates the user
with a random password, records its site in the stack's ``credentials.json``
and writes an **edge config bundle**, a directory holding:

* ``edge.toml``: a complete edge config for the device (identity, this
  stack's broker over TLS with the client certificate, a state directory, and
  by default a simulated probe and gpiozero's mock pins so that it runs on any
  machine);
* ``ca.pem``: the installation's CA (the agent checks the broker with it);
* ``device.crt`` / ``device.key``: the device's client certificate (CN = the
  device id, signed by the installation's CA) and its private key;
* ``edge.password``: the MQTT password, for the broker's password listener
  (the config does not use it while it has the certificate);
* ``README.txt``: how to run it here or install it on a Raspberry Pi.

The secret-bearing files (``edge.toml``, ``edge.password``, ``device.key``)
are created with mode 0600 (``os.open``, never a ``chmod`` afterwards, so they
are never readable by others, not even briefly). ``rotate`` issues a new
certificate and password (the old certificate is revoked); ``remove`` revokes
the certificate: the broker re-reads its CRL and refuses it.
The compose deployment has no such command: there a device is added with
``mosquitto_passwd`` in the broker's container (``deploy/local/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Final, Literal

import tomli_w

from telemetry_contract.messages import DEVICE_ID_PATTERN

__all__ = [
    "BUNDLE_FILES",
    "DeviceError",
    "bundle_config_text",
    "check_device_id",
    "check_site",
    "register",
    "write_bundle",
]

#: What ``add`` writes in the bundle directory (edge.toml, edge.password and
#: device.key with mode 0600).
BUNDLE_FILES: Final = (
    "edge.toml", "edge.password", "README.txt", "ca.pem", "device.crt", "device.key"
)  # fmt: skip
#: Where ``deploy/pi/install.sh`` puts the CA, certificate and key on a Pi.
PI_CONF_DIR: Final = Path("/etc/thermowatch")
#: The simulated probe's id (a DS18B20 family code 28, a made-up serial).
SIM_PROBE: Final = "28-00000000cafe"
#: The simulated probe's steady temperature (a cold room).
SIM_TEMP_C: Final = 4.0
#: Where ``deploy/pi/install.sh`` puts the password (a systemd credential's source).
PI_PASSWORD_FILE: Final = "/etc/thermowatch/edge.password"  # noqa: S105 - a path
#: The config publisher's public key in the bundle, and where install.sh puts it.
PUBLIC_KEY_NAME: Final = "config-signing.pub"
PI_PUBLIC_KEY_FILE: Final = f"/etc/thermowatch/{PUBLIC_KEY_NAME}"

Sensor = Literal["simulated", "w1"]
_ID = re.compile(DEVICE_ID_PATTERN)


class DeviceError(ValueError):
    """A device command's input is wrong; the message names the argument.

    The command line prints it as ``thermowatch: error: <message>`` (exit 1).
    """


def check_device_id(device_id: str, service_users: tuple[str, ...]) -> str:
    """``device_id`` when the contract and the broker accept it as a device.

    >>> check_device_id("s1-d01", ("admin",))
    's1-d01'
    >>> check_device_id("admin", ("admin", "gateway"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    thermowatch.devices.DeviceError: device_id: 'admin' is a service account ..., not a device
    """
    _check_id("device_id", device_id)
    if device_id in service_users:
        raise DeviceError(
            f"device_id: {device_id!r} is a service account of the stack "
            f"({', '.join(service_users)}), not a device"
        )
    return device_id


def check_site(site: str) -> str:
    """``site`` when it matches the contract's id pattern (it is a topic level).

    >>> check_site("lab")
    'lab'
    >>> check_site("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    thermowatch.devices.DeviceError: --site: must be 1-64 letters, digits, ..., got 'a/b'
    """
    return _check_id("--site", site)


def _check_id(name: str, value: str) -> str:
    """``value`` when it matches the contract's id pattern, else a :class:`DeviceError`."""
    if not _ID.fullmatch(value):
        raise DeviceError(
            f"{name}: must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            f"letter or digit, got {value!r}"
        )
    return value


def _toml(value: str | int) -> str:
    """One TOML value, quoted and escaped by tomli-w (not by hand)."""
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def bundle_config_text(
    device_id: str, site: str, host: str, port: int, out: Path, sensor: Sensor = "simulated"
) -> str:
    """The bundle's ``edge.toml`` (``out`` absolute: the agent may start anywhere)."""
    run_here = f"thermowatch edge run -c {out / 'edge.toml'}"
    lines = [
        f"# thermowatch edge agent {site}/{device_id}, written by `thermowatch devices add`.",
        f"# Run it here:  {run_here}",
        f"# On a Pi:      sudo deploy/pi/install.sh --bundle {out}",
        "",
        "[device]",
        f"device_id = {_toml(device_id)}",
        f"site = {_toml(site)}",
    ]
    if sensor == "simulated":
        lines += [
            "# Outbox and detector state (on a Pi, systemd's StateDirectory= wins).",
            f"state_dir = {_toml(str(out / 'state'))}",
            "",
            "[sensors]",
            "# A simulated DS18B20: a fake 1-Wire tree in this bundle holding one steady",
            f'# value ({SIM_TEMP_C} °C). Real probes: w1_root = "/sys/bus/w1/devices".',
            f"w1_root = {_toml(str(out / 'w1'))}",
            "# A steady simulated value is not a stuck probe (120 on real hardware).",
            "stuck_after = 0",
            "",
            "[gpio]",
            '# No GPIO hardware here: gpiozero\'s mock pins ("" on a Pi: lgpio).',
            'pin_factory = "mock"',
        ]
    files = out if sensor == "simulated" else PI_CONF_DIR
    lines += [
        "",
        "[mqtt]",
        f"host = {_toml(host)}",
        f"port = {_toml(port)}",
        "# The broker takes the user name from the certificate (CN = the device id).",
        f"username = {_toml(device_id)}",
        "# TLS with this device's client certificate, signed by the installation's CA.",
        "tls = true",
        f"ca_file = {_toml(str(files / 'ca.pem'))}",
        f"cert_file = {_toml(str(files / 'device.crt'))}",
        f"key_file = {_toml(str(files / 'device.key'))}",
    ]
    return "\n".join(lines) + "\n"


def _remote_config_text(out: Path, sensor: Sensor) -> str:
    """The bundle's ``[remote_config]``: trust the publisher key shipped with it."""
    key_file = out / PUBLIC_KEY_NAME if sensor == "simulated" else Path(PI_PUBLIC_KEY_FILE)
    return (
        "\n[remote_config]\n"
        "# Remote configs are applied only when signed by this key (docs/security.md).\n"
        f"public_key_file = {_toml(str(key_file))}\n"
    )


def _readme_text(device_id: str, site: str, out: Path, host: str) -> str:
    return f"""Edge config bundle of device {device_id} (site {site}).

  edge.toml      the agent's config: TLS with the client certificate below
  ca.pem         the installation's CA: the agent checks the broker with it
  device.crt     the device's client certificate (CN {device_id})
  device.key     its private key (keep it secret: mode 0600)
  edge.password  the MQTT password, for the broker's password port (mode 0600)
  config-signing.pub  the config publisher's public key: remote configs must be signed

Run the agent here, against the local stack (simulated probe, mock GPIO):

  thermowatch edge run -c {out / "edge.toml"}

Install it on a Raspberry Pi (copy this directory and a checkout there first,
e.g. scp -r {out} pi@raspberrypi:), then on the Pi:

  sudo deploy/pi/install.sh --bundle {out.name}

The broker address in edge.toml is {host}: a Pi needs an address of this
machine it can reach (thermowatch devices add ... --mqtt-host ADDRESS).
A new certificate and password (the old certificate is refused):
  thermowatch devices rotate {device_id} --out {out}
"""


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (O_EXCL: never over another file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _copy_tls(out: Path, tls: dict[str, str], *, exclusive: bool) -> None:
    """``ca.pem``, ``device.crt`` and ``device.key`` (0600 from the start) into ``out``.

    ``exclusive`` False (``rotate``): the files are replaced atomically."""
    from deploy.local.layout import write_private

    (out / "ca.pem").write_bytes(Path(tls["ca_file"]).read_bytes())
    (out / "device.crt").write_bytes(Path(tls["cert_file"]).read_bytes())
    key = Path(tls["key_file"]).read_text(encoding="utf-8")
    if exclusive:
        _write_private(out / "device.key", key)
    else:
        write_private(out / "device.key", key.encode())


def check_bundle_dir(out: Path) -> Path:
    """``out`` made absolute; :class:`DeviceError` when it already holds a bundle file."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DeviceError(f"--out: {out} exists and is not a directory")
    for name in BUNDLE_FILES:
        if (out / name).exists():
            raise DeviceError(f"--out: {out / name} exists already; choose another --out")
    return out


def write_bundle(
    out: Path,
    device_id: str,
    site: str,
    password: str,
    *,
    host: str,
    port: int,
    tls: dict[str, str],
    sensor: Sensor = "simulated",
    public_key: bytes | None = None,
) -> Path:
    """Write the edge config bundle into ``out`` (created 0700 if missing); returns it.

    ``tls``: ``ca_file``, ``cert_file``, ``key_file`` of the device (copied in).
    ``public_key``: the config publisher's (PEM), written as ``config-signing.pub``
    and trusted by the config (None: the device refuses every remote config).
    The config is parsed and validated by the edge agent's own loader before
    it and the password are written.
    """
    from edge_agent.config import loads_config
    from edge_agent.simulate import w1_slave_text

    out = check_bundle_dir(out)
    text = bundle_config_text(device_id, site, host, port, out, sensor)
    if public_key is not None:
        text += _remote_config_text(out, sensor)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if public_key is not None:
        (out / PUBLIC_KEY_NAME).write_bytes(public_key)
    # Raises ConfigError naming the key (the Pi's key path checked as the bundle's copy).
    loads_config(text.replace(PI_PUBLIC_KEY_FILE, str(out / PUBLIC_KEY_NAME)), env={})
    _write_private(out / "edge.toml", text)
    _write_private(out / "edge.password", password + "\n")
    _copy_tls(out, tls, exclusive=True)
    (out / "README.txt").write_text(_readme_text(device_id, site, out, host), encoding="utf-8")
    if sensor == "simulated":
        probe = out / "w1" / SIM_PROBE
        probe.mkdir(parents=True, exist_ok=True)
        (probe / "w1_slave").write_text(w1_slave_text(SIM_TEMP_C), encoding="utf-8")
    return out


# ------------------------------------------------------------------ command line
def register(subparsers: Any) -> None:
    """Add the ``devices`` sub-command to an argparse ``add_subparsers()`` object."""
    devices = subparsers.add_parser(
        "devices",
        help="add, remove, list edge devices (MQTT users) of the local stack",
        description="Edge devices of the local stack: each is an MQTT user named by its "
        "device id, with a random password kept in the stack's credentials.json. "
        "See deploy/local/README.md.",
    )
    devices.set_defaults(func=lambda _args: devices.print_help(sys.stderr) or 1)
    actions = devices.add_subparsers(dest="devices_action", metavar="ACTION")

    add = actions.add_parser(
        "add", help="a new device: MQTT user + edge config bundle (edge.toml, edge.password)"
    )
    add.add_argument("device_id", metavar="DEVICE_ID", help="the device id (its MQTT user)")
    add.add_argument("--site", required=True, help="the site the device belongs to")
    add.add_argument("--out", type=Path, help="bundle directory (default: ./DEVICE_ID)")
    add.add_argument(
        "--mqtt-host", help="broker address written in edge.toml (default: the stack's, 127.0.0.1)"
    )
    add.add_argument(
        "--sensor",
        choices=("simulated", "w1"),
        default="simulated",
        help="simulated: a fake probe and mock GPIO pins in the bundle, runs anywhere; "
        "w1: real DS18B20 probes and GPIO on a Pi (default: %(default)s)",
    )
    add.set_defaults(func=_add)

    remove = actions.add_parser(
        "remove", help="remove a device: it is disconnected and its next login is refused"
    )
    remove.add_argument("device_id", metavar="DEVICE_ID")
    remove.set_defaults(func=_remove)

    listing = actions.add_parser("list", help="the devices and their sites (no passwords)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    rotate = actions.add_parser("rotate", help="a new password for a device")
    rotate.add_argument("device_id", metavar="DEVICE_ID")
    rotate.add_argument(
        "--out",
        type=Path,
        help="bundle directory whose edge.password to replace (default: ./DEVICE_ID)",
    )
    rotate.set_defaults(func=_rotate)


def _stack() -> Any:
    from deploy.local.stack import LocalStack

    return LocalStack()


def _add(args: argparse.Namespace) -> int:
    from deploy.local.stack import SERVICE_USERS, UserExistsError

    stack = _stack()
    device_id = check_device_id(args.device_id, SERVICE_USERS)
    site = check_site(args.site)
    out = check_bundle_dir(args.out or Path(device_id))
    endpoint = stack.service("mosquitto").endpoint()
    try:
        password = stack.add_device(device_id, site)
    except UserExistsError:
        raise DeviceError(
            f"device_id: {device_id!r} exists already; for a new password: "
            f"thermowatch devices rotate {device_id}"
        ) from None
    try:
        write_bundle(
            out,
            device_id,
            site,
            password,
            host=args.mqtt_host or endpoint["host"],
            port=endpoint["port"],
            tls=stack.client_tls(device_id).edge_mqtt(),
            sensor=args.sensor,
            public_key=stack.config_signing_key()[1].read_bytes(),
        )
    except Exception:
        stack.remove_mqtt_user(device_id)  # no user without its bundle
        raise
    print(f"added {device_id} (site {site}); bundle {out}")
    print(f"run it: thermowatch edge run -c {out / 'edge.toml'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from deploy.local.stack import SERVICE_USERS, UnknownUserError

    check_device_id(args.device_id, SERVICE_USERS)
    try:
        _stack().remove_mqtt_user(args.device_id)
    except UnknownUserError:
        raise DeviceError(
            f"device_id: no device {args.device_id!r} (thermowatch devices list)"
        ) from None
    print(
        f"removed {args.device_id}: disconnected, its certificate revoked, its next login refused"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from deploy.local.stack import SERVICE_USERS

    stack = _stack()
    sites = stack.device_sites()
    rows = [
        {"device_id": name, "site": sites.get(name)}
        for name in sorted(stack.credentials())
        if name not in SERVICE_USERS
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['device_id']:<24} {row['site'] or '-'}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from deploy.local.stack import SERVICE_USERS, UnknownUserError

    device_id = check_device_id(args.device_id, SERVICE_USERS)
    out = (args.out or Path(device_id)).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DeviceError(f"--out: {out} exists and is not a directory")
    stack = _stack()
    try:
        password = stack.rotate_device(device_id)
    except UnknownUserError:
        raise DeviceError(f"device_id: no device {device_id!r} (thermowatch devices add)") from None
    from deploy.local.layout import write_private

    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(out / "edge.password", password + "\n")
    _copy_tls(out, stack.client_tls(device_id).edge_mqtt(), exclusive=False)
    print(
        f"new certificate and password for {device_id} in {out} "
        "(device.crt, device.key, edge.password; the old ones are refused)"
    )
    return 0
