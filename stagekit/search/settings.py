"""The search server's connection settings, shared by every stage that reads or writes it.

The processor writes, the web view, Kibana checks and the demo read: all of
them reach the server through this one block (``[search]``), so TLS and
authentication are set once, the same way. A stage subclasses it to add its
own keys (the processor's bulk sizes, the web view's refresh period).

>>> SearchSettings(url="ftp://x").problems()
["search.url: must start with http:// or https://, got 'ftp://x'"]
>>> SearchSettings(index_prefix="Bad Prefix").problems()[0][:40]
'search.index_prefix: must be lower case '
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import msgspec

from stagekit.address import url_problems
from stagekit.settings import file_problems

__all__ = ["SearchSettings"]


class SearchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which server, where, how to authenticate, and the index name prefix."""

    backend: Literal["opensearch", "elasticsearch"] = "opensearch"
    url: str = "https://127.0.0.1:19200"
    username: str = ""
    password: str = ""
    #: Elasticsearch API key (``backend = "elasticsearch"`` only).
    api_key: str = ""
    verify_certs: bool = True
    #: CA bundle for an ``https://`` server with a private CA ("" = system CAs).
    ca_file: str = ""
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Every index and template name starts with this (tests use unique ones);
    #: readers must use the writer's.
    index_prefix: str = "thermowatch-"

    @classmethod
    def from_endpoint(cls, endpoint: Mapping[str, Any], user: str = "", **fields: Any) -> Self:
        """Settings for a server described as the local stack describes it.

        ``endpoint`` is ``{"url", "ca_file"?, "users"?: {name: password}}``
        (``thermowatch stack`` endpoints); ``user`` picks the login (the
        server's least-privileged user for the job: ``processor``, ``web``,
        ``kibana``, or ``admin`` for tests and clean-up); a server without
        users (no authentication) ignores it. ``fields`` sets the other keys
        (``index_prefix``, ``backend``, a stage's own keys).

        >>> ep = {"url": "https://h:1", "ca_file": "/ca.pem", "users": {"web": "pw"}}
        >>> s = SearchSettings.from_endpoint(ep, "web", index_prefix="t-")
        >>> s.url, s.username, s.password, s.ca_file, s.index_prefix
        ('https://h:1', 'web', 'pw', '/ca.pem', 't-')
        >>> SearchSettings.from_endpoint(ep, "nobody")
        Traceback (most recent call last):
        ...
        KeyError: "search endpoint https://h:1 has no user 'nobody' (has: web)"
        >>> SearchSettings.from_endpoint({"url": "http://h:2"}, "web").username
        ''
        """
        users: Mapping[str, str] = endpoint.get("users") or {}
        login: dict[str, Any] = {}
        if users:
            if user not in users:
                known = ", ".join(sorted(users)) or "none"
                raise KeyError(
                    f"search endpoint {endpoint['url']} has no user {user!r} (has: {known})"
                )
            login = {"username": user, "password": users[user]}
        if endpoint.get("ca_file"):
            login["ca_file"] = str(endpoint["ca_file"])
        return msgspec.convert({"url": endpoint["url"], **login, **fields}, cls)

    def insecure(self) -> list[str]:
        """Why this connection is unprotected ([]: TLS, verified, with a login); a stage
        logs them as a warning at start (a config must ask for plain HTTP explicitly).

        >>> SearchSettings(url="http://h:1").insecure()
        ['plain http (readings and credentials travel in clear)', 'no login']
        >>> SearchSettings(username="u", password="p").insecure()
        []
        """
        out: list[str] = []
        if self.url.startswith("http://"):
            out.append("plain http (readings and credentials travel in clear)")
        if not (self.username or self.api_key):
            out.append("no login")
        if self.url.startswith("https://") and not self.verify_certs:
            out.append("the server's certificate is not verified")
        return out

    def problems(self, section: str = "search") -> list[str]:
        """Problems as ``section.key: problem``."""
        out: list[str] = []
        out += url_problems(f"{section}.url", self.url)
        prefix = self.index_prefix
        if prefix != prefix.lower() or any(c in prefix for c in " ,*/"):
            out.append(
                f"{section}.index_prefix: must be lower case without spaces, commas, * or /, "
                f"got {prefix!r}"
            )
        out += file_problems(section, self, ("ca_file",))
        return out
