"""The MQTT users of the stack: ``<stack>/credentials.json`` (mode 0600), made once.

The file is the source of truth: Mosquitto's password file is rebuilt from it
at every start and updated with it by ``add_mqtt_user``. Fixed service
accounts, four test devices and the demo fleet get random passwords the first
time anyone asks; any other device is added later (``thermowatch devices add``).

Format: ``{"mqtt": {user: password}, "sites": {device_id: site}}``. ``sites``
holds the devices added with a site; a file without it (written before sites
were recorded) reads as no sites, and every write keeps it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from deploy.local.errors import StackError
from deploy.local.layout import write_private
from deploy.local.process import flock

__all__ = [
    "SERVICE_USERS",
    "TEST_DEVICES",
    "Credentials",
    "check_user_name",
    "demo_fleet",
    "new_password",
]

#: Fixed service accounts; the ACL gives every other user the device rules
#: (deploy/local/mqtt_auth.py). ``admin`` is the stack's operator account (tests,
#: smoke checks, clearing retained topics); ``gateway`` subscribes and writes
#: receipts; ``config-publisher`` alone writes devices' retained config.
SERVICE_USERS: Final[tuple[str, ...]] = ("admin", "gateway", "config-publisher")
#: Former service accounts, dropped from an older credentials.json when it is read
#: (``processor`` could read and write everything, and no code used it).
RETIRED_USERS: Final[tuple[str, ...]] = ("processor",)
TEST_DEVICES: Final[tuple[str, ...]] = tuple(f"dev-test-{i}" for i in range(1, 5))


def demo_fleet() -> list[str]:
    """Device ids of the demo fleet: 3 sites of 10 devices.

    >>> fleet = demo_fleet()
    >>> len(fleet), fleet[0], fleet[-1]
    (30, 's1-d01', 's3-d10')
    """
    return [f"s{site}-d{dev:02d}" for site in range(1, 4) for dev in range(1, 11)]


def new_password() -> str:
    """A random URL-safe password (18 bytes of entropy)."""
    return secrets.token_urlsafe(18)


def check_user_name(name: str) -> str:
    """``name`` if Mosquitto's password file can hold it (no ``:``, no blanks).

    >>> check_user_name("s1-d01")
    's1-d01'
    >>> check_user_name("a b")
    Traceback (most recent call last):
    ...
    deploy.local.errors.StackError: add_mqtt_user: invalid user name 'a b'
    """
    if not name or ":" in name or any(ch.isspace() for ch in name):
        raise StackError(f"add_mqtt_user: invalid user name {name!r}")
    return name


class Credentials:
    """``{username: password}`` in ``credentials.json``, guarded across threads and processes.

    Callers that read and then write (or rebuild the broker's password file
    from it) hold :meth:`locked` around both; the stack's ``stack.lock`` is
    always taken before this one, never after it.
    """

    def __init__(self, path: Path, lock_file: Path) -> None:
        self.path = path
        self._lock_file = lock_file
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises credentials.json and the password file (threads and processes)."""
        with self._thread_lock, flock(self._lock_file):
            yield

    def load(self) -> dict[str, str]:
        """The users, generated on first use. The caller holds :meth:`locked`.

        A file written by an older version gets the service accounts it lacks
        and loses the retired ones (saved at once, so passwords stay stable)."""
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            users: dict[str, str] = dict(data["mqtt"])
            missing = [name for name in SERVICE_USERS if name not in users]
            retired = [name for name in RETIRED_USERS if name in users]
            if missing or retired:
                users.update({name: new_password() for name in missing})
                for name in retired:
                    del users[name]
                self.save(users)
            return users
        users = {name: new_password() for name in (*SERVICE_USERS, *TEST_DEVICES, *demo_fleet())}
        self.save(users)
        return users

    def load_sites(self) -> dict[str, str]:
        """``{device_id: site}`` of the devices added with a site.

        The caller holds :meth:`locked`."""
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        sites: dict[str, str] = dict(data.get("sites", {}))
        return sites

    def save(self, users: dict[str, str], sites: dict[str, str] | None = None) -> None:
        """Replace the users (and the sites; None keeps the stored ones of users that
        remain). The caller holds :meth:`locked`."""
        kept = self.load_sites() if sites is None else sites
        kept = {name: site for name, site in kept.items() if name in users}
        write_private(self.path, json.dumps({"mqtt": users, "sites": kept}, indent=2) + "\n")

    def all(self) -> dict[str, str]:
        """The users, read under the lock."""
        with self.locked():
            return self.load()

    def sites(self) -> dict[str, str]:
        """``{device_id: site}``, read under the lock."""
        with self.locked():
            self.load()  # generates the file on first use, like all()
            return self.load_sites()
