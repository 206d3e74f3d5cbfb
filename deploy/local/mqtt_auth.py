"""Who may connect to the local stack's broker and what each identity may do.

Pure functions of ``credentials.json`` (users, passwords, devices' sites) that
render Mosquitto's password file and ACL file, plus the options of the
``thermowatch_auth`` broker plugin (``deploy/local/mosquitto-plugin/``):

* **Client id bound to the user** (plugin): a device connects only with its
  device id as client id; a service identity (:data:`SERVICE_USERS`) with
  ``<user>`` or ``<user>:<suffix>``. ``:`` never occurs in a device id, so no
  device can produce another identity's client id and knock it off.
* **Topics** (ACL file): a device writes only
  ``thermowatch/<its site>/<its id>/{telemetry,status,alert,gap}`` and reads only
  its own ``config`` and ``receipt`` topics; the gateway reads everything and
  writes only receipts; only ``config-publisher`` (and ``admin``) write config.
* **No retained messages** (plugin) except from :data:`RETAIN_USERS`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Final

from deploy.local.credentials import SERVICE_USERS
from telemetry_contract.messages import DEVICE_ID_PATTERN

__all__ = [
    "CLIENT_ID_SEPARATOR",
    "DEVICE_READ",
    "DEVICE_WRITE",
    "ID_RE",
    "RETAIN_USERS",
    "SERVICE_USERS",
    "acl_text",
    "client_id_for",
    "passwd_text",
    "password_hash",
]

logger = logging.getLogger(__name__)

#: Device ids and sites (the contract's pattern): nothing else reaches the ACL file.
ID_RE: Final = re.compile(DEVICE_ID_PATTERN)

#: The only users whose retained publishes the broker accepts.
RETAIN_USERS: Final[tuple[str, ...]] = ("admin", "config-publisher")
#: Between a service's user name and a suffix in its client id (``gateway:gw-1``).
CLIENT_ID_SEPARATOR: Final = ":"
#: Topic kinds a device publishes on, and those it reads.
DEVICE_WRITE: Final[tuple[str, ...]] = ("telemetry", "status", "alert", "gap")
DEVICE_READ: Final[tuple[str, ...]] = ("config", "receipt")

#: Mosquitto 2.0's own choice for ``mosquitto_passwd`` (``$7$``: PBKDF2-SHA512).
_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12


def client_id_for(user: str, suffix: str = "") -> str:
    """A client id ``user`` may connect with: ``<user>:<suffix>`` for a service
    (several connections at once), the user itself for a device (``suffix`` unused).

    >>> client_id_for("s1-d01", "x"), client_id_for("gateway", "gw-1")
    ('s1-d01', 'gateway:gw-1')
    """
    return f"{user}{CLIENT_ID_SEPARATOR}{suffix}" if suffix and user in SERVICE_USERS else user


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 password-file hash (``$7$``: PBKDF2-SHA512, 101 rounds).

    Computed here rather than with ``mosquitto_passwd -b``, which would put the
    password on a command line (visible in ``ps`` and /proc to every user).

    >>> password_hash("secret", bytes(12))[:24]
    '$7$101$AAAAAAAAAAAAAAAA$'
    """
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def passwd_text(users: Mapping[str, str]) -> str:
    """Mosquitto's password file for ``{user: password}`` (a fresh salt per line)."""
    return "".join(f"{user}:{password_hash(pw)}\n" for user, pw in sorted(users.items()))


def acl_text(template: str, users: Mapping[str, str], sites: Mapping[str, str]) -> str:
    """The ACL file: ``template`` (the service accounts' rules), then one block per device.

    A device with a recorded site (``thermowatch devices add --site``) gets that
    site only; one without (the stack's test devices and demo fleet, whose
    tests and demo runs pick a fresh site per run) any single site level.

    >>> print(acl_text("# services", {"d1": "p", "admin": "p"}, {"d1": "lab"}))
    # services
    <BLANKLINE>
    # device d1 (site lab)
    user d1
    topic write thermowatch/lab/d1/telemetry
    topic write thermowatch/lab/d1/status
    topic write thermowatch/lab/d1/alert
    topic write thermowatch/lab/d1/gap
    topic read thermowatch/lab/d1/config
    topic read thermowatch/lab/d1/receipt
    <BLANKLINE>
    """
    blocks = [template.rstrip("\n") + "\n"]
    for user in sorted(users):
        if user in SERVICE_USERS:
            continue
        site = sites.get(user)
        if not ID_RE.match(user) or (site is not None and not ID_RE.match(site)):
            # Never written into the file (a newline would add rules): such a user
            # gets no block, so the broker denies it everything.
            logger.warning("mqtt acl: user without rules user=%r site=%r", user, site)
            continue
        base = f"thermowatch/{site or '+'}/{user}"
        lines = [f"# device {user} (site {site or 'any: not recorded'})", f"user {user}"]
        lines += [f"topic write {base}/{kind}" for kind in DEVICE_WRITE]
        lines += [f"topic read {base}/{kind}" for kind in DEVICE_READ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
