"""Mosquitto 2 (Debian package): the MQTT broker, over TLS, with a per-device ACL.

Two TLS listeners, both with the installation's own CA (:mod:`deploy.local.pki`):
the client port requires a client certificate and takes its CN as the user name
(devices and services); the port after it takes a user of ``credentials.json``
with its password (tools, tests). A plaintext listener (password, no TLS, two
ports after the client port) exists only with ``THERMOWATCH_MQTT_PLAINTEXT=1``,
and the start logs a warning then. ``allow_anonymous false``. The password file
and the ACL are rendered from ``credentials.json`` (:mod:`deploy.local.mqtt_auth`:
a device writes only its own four topics under its site) and the
``thermowatch_auth`` plugin (``deploy/local/mosquitto-plugin``, compiled at
install) binds client ids to users and refuses retained publishes from devices.
Health check: an MQTT v5 connect as ``admin`` with its client certificate gets a
successful CONNACK.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from deploy.local.credentials import check_user_name, new_password
from deploy.local.errors import StackError, UnknownUserError, UserExistsError
from deploy.local.install import apt_install, file_digest, is_root, run, tool, which
from deploy.local.layout import TEMPLATE_DIR, render, write_private
from deploy.local.mqtt_auth import (
    ID_RE,
    RETAIN_USERS,
    SERVICE_USERS,
    acl_text,
    passwd_text,
)
from deploy.local.process import poll_until
from deploy.local.services.base import Launch
from deploy.local.services.mqtt_broker import MqttBroker

__all__ = ["DEFAULT_MQTT_PORT", "MQTT_PLAINTEXT_ENV", "MQTT_PORT_ENV", "Mosquitto"]

logger = logging.getLogger(__name__)

MQTT_PORT_ENV: Final = "THERMOWATCH_MQTT_PORT"
DEFAULT_MQTT_PORT: Final = 18830
#: The broker plugin's C source, and the headers it needs with their Debian packages:
#: Debian 12's mosquitto-dev does not pull in libmosquitto-dev (``mosquitto.h``).
PLUGIN_SOURCE: Final = TEMPLATE_DIR / "mosquitto-plugin" / "thermowatch_auth.c"
PLUGIN_HEADERS: Final = {
    Path("/usr/include/mosquitto_plugin.h"): "mosquitto-dev",
    Path("/usr/include/mosquitto.h"): "libmosquitto-dev",
}
#: "1": also a plaintext listener (password, no TLS) on the client port + 2.
MQTT_PLAINTEXT_ENV: Final = "THERMOWATCH_MQTT_PLAINTEXT"


def plaintext_enabled() -> bool:
    """True when ``$THERMOWATCH_MQTT_PLAINTEXT`` asks for the plaintext listener
    (``1``/``true``/``yes``; unset, empty, ``0``/``false``/``no``: off; anything
    else a :class:`StackError` naming the variable)."""
    raw = os.environ.get(MQTT_PLAINTEXT_ENV, "").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("", "0", "false", "no"):
        return False
    raise StackError(f"{MQTT_PLAINTEXT_ENV}: must be 1 or 0 (true/false, yes/no), got {raw!r}")


class Mosquitto(MqttBroker):
    """The broker on ``127.0.0.1:18830`` (certificates) and ``:18831`` (passwords),
    both TLS; data in ``<stack>/data/mosquitto``, the CA in ``<stack>/pki``."""

    name = "mosquitto"
    port_env = MQTT_PORT_ENV
    default_port = DEFAULT_MQTT_PORT
    cmdline_marker = b"mosquitto"

    @property
    def plain_port(self) -> int | None:
        """The plaintext listener's port; None unless ``$THERMOWATCH_MQTT_PLAINTEXT``."""
        return self.port + 2 if plaintext_enabled() else None

    def install(self) -> None:
        """The broker, its clients, and gcc + the headers to build the plugin."""
        missing = []
        if which("mosquitto") is None or which("mosquitto_passwd") is None:
            missing += ["mosquitto", "mosquitto-clients"]
        if which("gcc") is None:
            missing.append("gcc")
        missing += [package for header, package in PLUGIN_HEADERS.items() if not header.exists()]
        if missing:
            apt_install(*missing)
        self._build_plugin()

    def _build_plugin(self) -> None:
        """Compile the plugin into the cache unless this source's build is there."""
        plugin = self._plugin_file
        if not plugin.exists():
            plugin.parent.mkdir(parents=True, exist_ok=True)
            staging = plugin.with_name(f".{plugin.name}.{os.getpid()}.tmp")
            run(
                [tool("gcc"), "-shared", "-fPIC", "-O2", "-Wall", "-o", str(staging),
                 str(PLUGIN_SOURCE)],
                what="gcc thermowatch_auth",
            )  # fmt: skip
            staging.replace(plugin)

    def launch(self) -> Launch:
        """Render the password file and the ACL from credentials.json, then the config."""
        # Also here: `up` restarts a running broker whose config changed (an
        # upgraded checkout, a new plugin source) without calling install().
        self.install()
        with self.ctx.credentials.locked():
            # The CA and the broker's certificate at first start, a fresh CRL, and
            # a client certificate for every user that has none yet.
            self.pki.ensure_server(self.host)
            self.pki.issue_missing(self.ctx.credentials.load())
            self._write_auth_files()
        conf = self.layout.run_dir / "mosquitto.conf"
        conf.write_text(self._config_text(), encoding="utf-8")
        if self.plain_port is not None:
            logger.warning(
                "mqtt plaintext listener on: passwords and readings cross %s:%d unencrypted "
                "(unset %s to turn it off)", self.host, self.plain_port, MQTT_PLAINTEXT_ENV,
            )  # fmt: skip
        return Launch([tool("mosquitto"), "-c", str(conf)])

    def _write_auth_files(self) -> None:
        """The password file and the ACL, from credentials.json (both 0600 from the
        start: the ACL names every device). The caller holds the credentials lock."""
        credentials = self.ctx.credentials
        users = credentials.load()
        template = (TEMPLATE_DIR / "mosquitto-acl.conf").read_text(encoding="utf-8")
        write_private(self._passwd_file, passwd_text(users))
        write_private(self._acl_file, acl_text(template, users, credentials.load_sites()))

    @property
    def _plugin_file(self) -> Path:
        """In the shared cache, named by the source's digest (a changed source is rebuilt)."""
        return self.layout.cache / "mosquitto" / f"thermowatch_auth-{file_digest(PLUGIN_SOURCE)}.so"

    @property
    def _passwd_file(self) -> Path:
        return self.layout.run_dir / "mosquitto.passwd"

    @property
    def _kick_file(self) -> Path:
        """Users the plugin disconnects at the next reload (removed, re-keyed)."""
        return self.layout.run_dir / "mosquitto.kick"

    def _kick(self, name: str, *, add: bool) -> None:
        """Name ``name`` in the kick file (``add``) or take it out again.

        A reload re-reads the password file and the ACL, but a device logged in
        with its certificate keeps its connection (the CRL is only checked at the
        TLS handshake): the plugin disconnects the users named here on reload."""
        path = self._kick_file
        try:
            names = [n for n in path.read_text(encoding="utf-8").split() if n != name]
        except FileNotFoundError:
            names = []
        if add:
            names.append(name)
        write_private(path, "".join(f"{n}\n" for n in names))

    @property
    def _acl_file(self) -> Path:
        return self.layout.run_dir / "mosquitto.acl"

    def _config_text(self) -> str:
        return render(
            "mosquitto.conf",
            host=self.host,
            port=self.port,
            password_port=self.password_port,
            ca_file=self.pki.ca_file,
            server_cert=self.pki.server_cert,
            server_key=self.pki.server_key,
            crl_file=self.pki.crl_file,
            plaintext_listener=(
                f"# Plaintext ({MQTT_PLAINTEXT_ENV}=1): passwords, no TLS.\n"
                f"listener {self.plain_port} {self.host}"
                if self.plain_port is not None
                else ""
            ),
            password_file=self._passwd_file,
            acl_file=self._acl_file,
            plugin=self._plugin_file,
            services=",".join(SERVICE_USERS),
            retain_users=",".join(RETAIN_USERS),
            kick_file=self._kick_file,
            persistence_dir=self.layout.data_dir(self.name),
            # Debian's mosquitto drops root to the "mosquitto" user unless told not to,
            # and that user could not write the stack dir.
            user_line="user root" if is_root() else "",
        )

    def config_changed(self) -> bool:
        """The template (limits, listeners) changed since the running broker started."""
        conf = self.layout.run_dir / "mosquitto.conf"
        try:
            return conf.read_text(encoding="utf-8") != self._config_text()
        except OSError:
            return False

    def add_user(
        self,
        name: str,
        password: str | None = None,
        *,
        site: str | None = None,
        new_only: bool = False,
        existing_only: bool = False,
    ) -> str:
        """Add (or re-password) a user; a running broker reloads and the login is awaited.

        Returns the password (a random one when ``password`` is None). ``site``
        is recorded with the user (None keeps the recorded one). ``new_only``:
        a :class:`UserExistsError` instead of a new password for a known user;
        ``existing_only``: an :class:`UnknownUserError` instead of a new user
        (both checked under the credentials lock).
        """
        check_user_name(name)
        if site is not None and not ID_RE.match(site):
            raise StackError(f"site: {site!r} is not a site id (the pattern {ID_RE.pattern})")
        pw = password if password is not None else new_password()
        credentials = self.ctx.credentials
        with credentials.locked():
            users = credentials.load()
            if new_only and name in users:
                raise UserExistsError(name)
            if existing_only and name not in users:
                raise UnknownUserError(name)
            known = name in users
            users[name] = pw
            sites = credentials.load_sites()
            if site is not None:
                sites[name] = site
            credentials.save(users, sites)
            # A rotation revokes the old certificate (the CRL is re-read on reload).
            self.pki.issue(name, replace=existing_only)
            if known:  # its old certificate's connection goes at the reload
                self._kick(name, add=True)
            running = self._reload_auth(f"user={name}")
        # The reload happens in the broker's main loop: wait until it took.
        ok = not running or poll_until(lambda: self.login(name, pw, 3.0), 15.0, 0.2)
        if known:
            with credentials.locked():
                self._kick(name, add=False)
        if not ok:
            raise StackError(f"add_mqtt_user: {name} cannot log in after reload")
        logger.info("mqtt user added user=%s", name)
        return pw

    def add_users(
        self, names: Iterable[str], *, certificates: bool = True, timeout: float | None = None
    ) -> dict[str, str]:
        """Add every user of ``names`` that is new, in one batch: one save of
        credentials.json, one render of the password file and the ACL, one reload
        of a running broker (never one per user). Known users keep their password.

        Returns ``{name: password}`` for every name. ``certificates``: also issue
        each new user a client certificate (False: the user logs in with its
        password on the password listener only, as a large simulated fleet does:
        issuing 100,000 certificates costs minutes). The reload is awaited (a
        login of the last new user) for at most ``timeout`` seconds (default: 30 s
        plus 4 s per 1,000 users: Mosquitto 2.0 reads a per-user ACL in time that
        grows with the square of the users, ~60 s of CPU at 100,000)."""
        wanted = [check_user_name(n) for n in names]
        credentials = self.ctx.credentials
        with credentials.locked():
            users = credentials.load()
            new = {n: new_password() for n in dict.fromkeys(wanted) if n not in users}
            if new:
                users.update(new)
                credentials.save(users)
                if certificates:
                    self.pki.issue_missing(new)
            running = bool(new) and self._reload_auth(f"added={len(new)}")
        if running:
            last = next(reversed(new))
            wait = timeout if timeout is not None else 30.0 + len(users) / 250
            if not poll_until(lambda: self.login(last, new[last], 3.0), wait, 0.5):
                raise StackError(f"add_mqtt_users: {last} cannot log in after reload")
        logger.info("mqtt users added count=%d certificates=%s", len(new), certificates)
        return {n: users[n] for n in wanted}

    def remove_user(self, name: str) -> str:
        """Remove a user; a running broker reloads and the refused login is awaited.

        Returns the removed user's old password; :class:`UnknownUserError` when
        there is no such user. A client connected as ``name`` is disconnected by
        the reload.
        """
        credentials = self.ctx.credentials
        with credentials.locked():
            users = credentials.load()
            if name not in users:
                raise UnknownUserError(name)
            old = users.pop(name)
            credentials.save(users)
            self.pki.revoke(name)  # in the CRL before the reload
            self._kick(name, add=True)  # a certificate login goes at the reload
            running = self._reload_auth(f"removed={name}")
        ok = not running or poll_until(lambda: not self.login(name, old, 3.0), 15.0, 0.2)
        with credentials.locked():
            self._kick(name, add=False)
        if not ok:
            raise StackError(f"remove_mqtt_user: {name} can still log in after reload")
        logger.info("mqtt user removed user=%s", name)
        return old

    def _reload_auth(self, change: str) -> bool:
        """Re-render a running broker's password file and ACL from the stored
        credentials (``change`` says what changed, for the log), then SIGHUP it.
        True when a running broker was told to reload. The caller holds the
        credentials lock.

        On reload Mosquitto 2.0 re-checks every connected client against the new
        files: a removed user, or one whose password changed, is disconnected."""
        if not self._passwd_file.exists():
            return False
        logger.debug("mqtt auth files rendered %s", change)
        self._write_auth_files()
        return self.process.signal(signal.SIGHUP)
