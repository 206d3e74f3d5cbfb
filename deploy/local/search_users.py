"""Who may use the local search server, and what each may do: the security plugin's files.

Users (one per client of the search server, passwords generated on first
start into ``<stack>/search-credentials.json``, mode 0600):

========== ======================= =====================================================
user       role                    may
========== ======================= =====================================================
admin      ``all_access``          everything: tests, ``demo clean``, operators
processor  ``thermowatch_writer``  create, map and write ``thermowatch-*`` indices
web        ``thermowatch_reader``  search ``thermowatch-*`` (the web view, accounting)
kibana     ``thermowatch_reader``  read ``thermowatch-*`` mappings (the kibana tool)
========== ======================= =====================================================

The roles cover ``demo-*`` too (the demo's runs write under ``demo-<run id>-``).
The processor's role may also install its retention policy where the cluster has
the Index State Management plugin (:data:`ISM_CLUSTER_ACTIONS`, :data:`ISM_INDEX_ACTION`)
and delete the monthly indices that policy deletes (:data:`MONTHLY_PATTERNS`).

The plugin reads these files only when it creates its own index (first start,
``plugins.security.allow_default_init_securityindex``); the files are written
as JSON, which is YAML too, so no YAML writer is needed. Passwords are stored
as bcrypt hashes (the ``bcrypt`` package, the format the plugin checks).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import bcrypt

from deploy.local.credentials import new_password
from deploy.local.layout import write_private
from deploy.local.process import flock

__all__ = [
    "INDEX_PATTERN",
    "INDEX_PATTERNS",
    "ISM_CLUSTER_ACTIONS",
    "ISM_INDEX_ACTION",
    "MONTHLY_PATTERNS",
    "SEARCH_USERS",
    "SearchUsers",
    "apply_users",
    "security_files",
    "users_digest",
]

#: The indices the per-service roles cover (``search.index_prefix`` default ``thermowatch-``).
INDEX_PATTERN: Final = "thermowatch-*"
#: ``thermowatch demo`` runs write under ``demo-<run id>-`` with the same users.
INDEX_PATTERNS: Final = [INDEX_PATTERN, "demo-*"]

#: user -> role; "admin" maps to the plugin's built-in ``all_access``.
SEARCH_USERS: Final[Mapping[str, str]] = {
    "admin": "all_access",
    "processor": "thermowatch_writer",
    "web": "thermowatch_reader",
    "kibana": "thermowatch_reader",
}

_READ_INDEX: Final = [
    "read",
    "indices:admin/mappings/get",
    "indices:admin/get",
    "indices:admin/refresh*",
    "indices:monitor/*",
]

#: What the processor needs to install its retention policy where the cluster has
#: the Index State Management plugin: read, list and write ISM policies; attach one
#: to indices, move them to its new version, explain them (cluster actions), on
#: its own indices only (the index action). Harmless strings without the plugin.
ISM_CLUSTER_ACTIONS: Final = [
    "cluster:admin/opendistro/ism/policy/get",
    "cluster:admin/opendistro/ism/policy/search",
    "cluster:admin/opendistro/ism/policy/write",
    "cluster:admin/opendistro/ism/managedindex/add",
    "cluster:admin/opendistro/ism/managedindex/change",
    "cluster:admin/opendistro/ism/managedindex/explain",
]
ISM_INDEX_ACTION: Final = "indices:admin/opensearch/ism/managedindex"
#: ISM runs a policy's steps as the user who wrote the policy (the processor), so
#: its delete step needs the right to delete: the monthly indices only (readings,
#: aggregates: ``stagekit.search.lifecycle.managed_patterns``), never alerts or incidents.
MONTHLY_PATTERNS: Final = [
    "thermowatch-readings-*",
    "thermowatch-agg1m-*",
    "demo-*-readings-*",
    "demo-*-agg1m-*",
]

ROLES: Final[dict[str, Any]] = {
    "thermowatch_writer": {
        "cluster_permissions": [
            "cluster_monitor",
            "cluster_composite_ops",
            "indices:admin/template/*",
            "indices:admin/index_template/*",
            *ISM_CLUSTER_ACTIONS,
        ],
        "index_permissions": [
            {
                "index_patterns": INDEX_PATTERNS,
                "allowed_actions": [
                    *_READ_INDEX,
                    "crud",
                    "create_index",
                    "indices:admin/mapping/put",
                    ISM_INDEX_ACTION,
                ],
            },
            {"index_patterns": MONTHLY_PATTERNS, "allowed_actions": ["indices:admin/delete"]},
        ],
    },
    "thermowatch_reader": {
        "cluster_permissions": [
            "cluster_monitor",
            "cluster_composite_ops_ro",
            "indices:admin/template/get",
            "indices:admin/index_template/get",
        ],
        "index_permissions": [{"index_patterns": INDEX_PATTERNS, "allowed_actions": _READ_INDEX}],
    },
}


def _meta(kind: str) -> dict[str, Any]:
    return {"_meta": {"type": kind, "config_version": 2}}


def _config() -> dict[str, Any]:
    """HTTP basic against the internal users only; no anonymous access."""
    return {
        **_meta("config"),
        "config": {
            "dynamic": {
                "http": {"anonymous_auth_enabled": False},
                "authc": {
                    "basic_internal_auth_domain": {
                        "description": "HTTP basic against the internal users",
                        "http_enabled": True,
                        "transport_enabled": True,
                        "order": 0,
                        "http_authenticator": {"type": "basic", "challenge": True},
                        "authentication_backend": {"type": "intern"},
                    }
                },
            }
        },
    }


def _role_mapping() -> dict[str, dict[str, list[str]]]:
    mapping: dict[str, dict[str, list[str]]] = {}
    for name, role in SEARCH_USERS.items():
        mapping.setdefault(role, {"users": []})["users"].append(name)
    return mapping


def users_digest(passwords: Mapping[str, str]) -> str:
    """Changes when a password, a role or a mapping does (what :func:`apply_users` sets)."""
    state = [dict(passwords), ROLES, _role_mapping(), SEARCH_USERS]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def apply_users(
    url: str, admin: ssl.SSLContext, passwords: Mapping[str, str], timeout: float
) -> None:
    """Make the running server's roles, mappings and users (passwords) these.

    The plugin reads its files only when it creates its index, so a later change
    (a rotated password, a new role in a newer release) is applied through its
    REST API. ``admin`` holds the admin certificate: the plugin's super admin,
    who may change reserved users too. Raises OSError (urllib's errors) on failure.
    """
    if not url.startswith("https://"):
        raise ValueError(f"apply_users: not an https URL: {url!r}")
    puts: list[tuple[str, Any]] = [(f"roles/{role}", body) for role, body in ROLES.items()]
    puts += [(f"rolesmapping/{role}", body) for role, body in _role_mapping().items()]
    for name in SEARCH_USERS:
        user = {"password": passwords[name], "description": f"thermowatch {name}"}
        puts.append((f"internalusers/{name}", user))
    for path, body in puts:
        request = urllib.request.Request(  # noqa: S310 (checked: https)
            f"{url}/_plugins/_security/api/{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout, context=admin):  # noqa: S310
            pass


def security_files(passwords: Mapping[str, str], *, rounds: int = 12) -> dict[str, str]:
    """``{file name: text}`` of the plugin's config directory for these users.

    ``passwords`` must name every user of :data:`SEARCH_USERS`.
    """
    missing = sorted(set(SEARCH_USERS) - set(passwords))
    if missing:
        raise KeyError(f"search users without a password: {', '.join(missing)}")
    users = {
        name: {
            "hash": bcrypt.hashpw(passwords[name].encode(), bcrypt.gensalt(rounds)).decode(),
            "reserved": name == "admin",
            "description": f"thermowatch {name}",
        }
        for name in SEARCH_USERS
    }
    docs = {
        "config.yml": _config(),
        "internal_users.yml": {**_meta("internalusers"), **users},
        "roles.yml": {**_meta("roles"), **ROLES},
        "roles_mapping.yml": {**_meta("rolesmapping"), **_role_mapping()},
        "action_groups.yml": _meta("actiongroups"),
        "tenants.yml": _meta("tenants"),
        "nodes_dn.yml": _meta("nodesdn"),
        "allowlist.yml": {**_meta("allowlist"), "config": {"enabled": False}},
        "audit.yml": {**_meta("audit"), "config": {"enabled": False}},
    }
    return {name: json.dumps(doc, indent=2) + "\n" for name, doc in docs.items()}


class SearchUsers:
    """``{user: password}`` in ``search-credentials.json`` (0600), generated on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stored(self) -> dict[str, str] | None:
        """The passwords if the file exists (nothing is made)."""
        try:
            users: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return users

    def all(self) -> dict[str, str]:
        """The passwords; made (and saved) the first time, under a file lock."""
        with flock(self.path.with_name(self.path.name + ".lock")):
            if self.path.exists():
                stored: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))
                if set(SEARCH_USERS) <= set(stored):
                    return stored
            else:
                stored = {}
            users = {name: stored.get(name) or new_password() for name in SEARCH_USERS}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, json.dumps(users, indent=2) + "\n")
            return users
