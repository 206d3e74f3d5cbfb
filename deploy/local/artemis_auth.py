"""Who may connect to the optional Artemis broker and what each identity may do.

Pure functions of ``credentials.json`` (the same users, passwords and sites as
Mosquitto's password file and ACL, :mod:`deploy.local.mqtt_auth`) that render
Artemis' JAAS files and the ``<security-settings>`` of its ``broker.xml``:

* ``artemis-users.properties``: every user with a salted PBKDF2 hash of its
  password (the format of ``artemis mask --hash``), for the password listener.
* ``cert-users.properties``: every user with its certificate's subject (CN = the
  user), for the certificate listener (``TextFileCertificateLoginModule``).
* ``artemis-roles.properties`` / ``cert-roles.properties``: a service account's
  role is its name; a device's role is ``device-<id>``.
* Security settings: Artemis maps the MQTT topic ``thermowatch/s1/d1/telemetry``
  to the address ``thermowatch.s1.d1.telemetry`` and picks the *one* most
  specific ``match`` for an address (roles are not merged across matches), so
  every device's block repeats the service accounts' permissions.

What Mosquitto does and this does not: no binding of client ids to users and
no refusal of retained publishes beyond the topic rules (both come from the
``thermowatch_auth`` Mosquitto plugin; Artemis would need a Java broker plugin).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Final
from xml.sax.saxutils import quoteattr

from deploy.local.credentials import SERVICE_USERS
from deploy.local.mqtt_auth import DEVICE_READ, DEVICE_WRITE, ID_RE

__all__ = [
    "address_for",
    "cert_users_text",
    "password_hash",
    "roles_text",
    "security_settings_xml",
    "users_text",
]

logger = logging.getLogger(__name__)

#: Artemis' DefaultSensitiveStringCodec with ``--hash``: PBKDF2WithHmacSHA1,
#: 1,024 rounds, a 32-byte salt, a 64-byte key, ``rounds:SALT:HASH`` in hex.
_ROUNDS: Final = 1024
_SALT_BYTES: Final = 32
_KEY_BYTES: Final = 64

#: What a subscriber needs (MQTT subscriptions are queues on the topic's address;
#: a clean start deletes them, and the address Artemis created for them).
_SUBSCRIBE: Final = (
    "consume",
    "createAddress",
    "createDurableQueue",
    "createNonDurableQueue",
    "deleteAddress",
    "deleteDurableQueue",
    "deleteNonDurableQueue",
)
_PUBLISH: Final = ("createAddress", "send")
_ALL: Final = (*_SUBSCRIBE, "browse", "send", "manage")


def password_hash(password: str, salt: bytes | None = None) -> str:
    """``ENC(...)`` for a users file: what ``artemis mask --hash`` prints, computed here
    so the password never appears on a command line.

    >>> password_hash("secret", bytes(32))[:15]
    'ENC(1024:000000'
    """
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha1", password.encode("utf-8"), salt, _ROUNDS, _KEY_BYTES)
    return f"ENC({_ROUNDS}:{salt.hex().upper()}:{key.hex().upper()})"


def _usable(users: Mapping[str, str], sites: Mapping[str, str]) -> list[str]:
    """The users that can be written into the files: service accounts, and devices
    whose id (and site) match the contract's pattern without a ``.`` (Artemis'
    word separator in addresses: ``a.b`` would become two topic levels)."""
    out = []
    for user in sorted(users):
        site = sites.get(user, "")
        if user in SERVICE_USERS or (
            ID_RE.match(user) and "." not in user and (not site or ID_RE.match(site))
            and "." not in site
        ):  # fmt: skip
            out.append(user)
        else:
            logger.warning("artemis auth: user without rules user=%r site=%r", user, site)
    return out


def role_of(user: str) -> str:
    """The role a user has: a service account's name, ``device-<id>`` for a device.

    >>> role_of("gateway"), role_of("s1-d01")
    ('gateway', 'device-s1-d01')
    """
    return user if user in SERVICE_USERS else f"device-{user}"


def users_text(users: Mapping[str, str], sites: Mapping[str, str]) -> str:
    """``artemis-users.properties``: ``user = ENC(hash)`` (a fresh salt per line)."""
    return "".join(f"{u} = {password_hash(users[u])}\n" for u in _usable(users, sites))


def cert_users_text(users: Mapping[str, str], sites: Mapping[str, str]) -> str:
    """``cert-users.properties``: each user with its certificate's subject.

    >>> cert_users_text({"s1-d01": "p"}, {})
    's1-d01 = CN=s1-d01\\n'
    """
    return "".join(f"{u} = CN={u}\n" for u in _usable(users, sites))


def roles_text(users: Mapping[str, str], sites: Mapping[str, str]) -> str:
    """``artemis-roles.properties`` (and ``cert-roles``): ``role = user``.

    >>> print(roles_text({"gateway": "p", "s1-d01": "p"}, {}), end="")
    gateway = gateway
    device-s1-d01 = s1-d01
    """
    return "".join(f"{role_of(u)} = {u}\n" for u in _usable(users, sites))


def address_for(topic: str) -> str:
    """The Artemis address (or match) of an MQTT topic (filter): ``/`` -> ``.``,
    ``+`` -> ``*``; ``#`` stays.

    >>> address_for("thermowatch/+/s1-d01/telemetry"), address_for("thermowatch/#")
    ('thermowatch.*.s1-d01.telemetry', 'thermowatch.#')
    """
    return topic.replace("/", ".").replace("+", "*")


def _setting(match: str, grants: Mapping[str, Iterable[str]]) -> str:
    """One ``<security-setting>``: ``grants`` is ``{role: permissions}``."""
    by_permission: dict[str, list[str]] = {}
    for role, permissions in grants.items():
        for permission in permissions:
            by_permission.setdefault(permission, []).append(role)
    lines = [f"<security-setting match={quoteattr(match)}>"]
    for permission in sorted(by_permission):
        roles = ",".join(sorted(set(by_permission[permission])))
        lines.append(f'   <permission type="{permission}" roles={quoteattr(roles)}/>')
    lines.append("</security-setting>")
    return "\n".join(lines)


def security_settings_xml(users: Mapping[str, str], sites: Mapping[str, str]) -> str:
    """The ``<security-setting>`` elements: Mosquitto's ACL as Artemis matches.

    The service accounts' rules (``mosquitto-acl.conf``): ``admin`` everything
    under ``thermowatch/``; ``gateway`` reads everything and writes receipts;
    ``config-publisher`` writes config. Then each device's own topics, each
    match repeating the services' rights (Artemis takes the most specific match
    alone). Nothing matches other addresses: there everyone is denied everything.
    """
    services: dict[str, tuple[str, ...]] = {"admin": _ALL, "gateway": _SUBSCRIBE}
    settings = [
        _setting("thermowatch.#", services),
        _setting("thermowatch.*.*.receipt", {**services, "gateway": (*_SUBSCRIBE, *_PUBLISH)}),
        _setting(
            "thermowatch.*.*.config", {**services, "config-publisher": (*_PUBLISH, "consume")}
        ),
    ]
    for user in _usable(users, sites):
        if user in SERVICE_USERS:
            continue
        base = f"thermowatch.{sites.get(user) or '*'}.{user}"
        role = role_of(user)
        for kind in DEVICE_WRITE:
            settings.append(_setting(f"{base}.{kind}", {**services, role: _PUBLISH}))
        for kind in DEVICE_READ:
            writer = "gateway" if kind == "receipt" else "config-publisher"
            grants = {**services, writer: (*services.get(writer, ()), *_PUBLISH), role: _SUBSCRIBE}
            settings.append(_setting(f"{base}.{kind}", grants))
    return "\n".join(settings)
