"""The stack's search server as a test or a benchmark reaches it: as ``admin``, over HTTPS.

Tests and benchmarks write under their own index prefixes (``t1a2b3c4-``), which
the per-service users (``thermowatch-*`` only) may not touch, so they log in as
``admin``; the product's stages use their own users (``processor``, ``web``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
import tomli_w

from stagekit.search import SearchSettings, ThreadedBackend, make_backend

__all__ = [
    "admin_backend",
    "admin_login",
    "admin_session",
    "admin_settings",
    "login_toml",
    "proxied_url",
    "search_section",
]


def admin_settings(endpoint: Mapping[str, Any], **fields: Any) -> SearchSettings:
    """Settings for the stack's search ``endpoint`` as ``admin``; ``fields`` set the rest."""
    return SearchSettings.from_endpoint(endpoint, "admin", **fields)


def admin_backend(endpoint: Mapping[str, Any], **fields: Any) -> ThreadedBackend:
    """A client of the stack's search ``endpoint`` as ``admin``; the caller closes it."""
    return make_backend(admin_settings(endpoint, **fields))


def admin_login(endpoint: Mapping[str, Any]) -> dict[str, str]:
    """The ``[search]`` keys that reach the server as ``admin``: url, user, password, CA."""
    settings = admin_settings(endpoint)
    keys = ("url", "username", "password", "ca_file")
    return {k: getattr(settings, k) for k in keys if getattr(settings, k)}


def search_section(endpoint: Mapping[str, Any], **extra: Any) -> str:
    """A config file's ``[search]`` table (TOML) as ``admin``, with ``extra`` keys."""
    return tomli_w.dumps({"search": {**admin_login(endpoint), **extra}})


def admin_session(endpoint: Mapping[str, Any]) -> requests.Session:
    """A ``requests`` session that logs in as ``admin`` and trusts the stack's CA."""
    login = admin_login(endpoint)
    session = requests.Session()
    if "username" in login:
        session.auth = (login["username"], login["password"])
    session.verify = login.get("ca_file", True)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE replaces the stack's CA
    return session


def login_toml(endpoint: Mapping[str, Any], url: str = "") -> str:
    """``url = ...``, ``username``, ``password``, ``ca_file`` lines for a ``[search]`` table
    written by hand (``url`` replaces the endpoint's: a proxy, a dead port)."""
    return tomli_w.dumps({**admin_login(endpoint), **({"url": url} if url else {})})


def proxied_url(endpoint: Mapping[str, Any], port: int) -> str:
    """The endpoint's URL through a local TCP proxy on ``port`` (same scheme: TLS passes
    through, and the node's certificate names 127.0.0.1)."""
    scheme = str(endpoint["url"]).split("://", 1)[0]
    return f"{scheme}://127.0.0.1:{port}"
