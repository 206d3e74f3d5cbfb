"""The search server's connection settings, shared by every stage that reads or writes it.

The processor writes, the web view, Kibana checks and the demo read: all of
them reach the server through this one block (``[search]``), so TLS and
authentication are set once, the same way. A stage subclasses it to add its
own keys (the processor's bulk sizes, the web view's refresh period).

A cluster is given as ``urls`` (every node, as Telegraf's ``urls`` and the
clients' ``hosts``): the client spreads requests over them and moves a request
to another node when one is down. ``urls`` wins over ``url``, which may then
only repeat one of them (the stack's cluster endpoint gives both).

>>> SearchSettings(url="ftp://x").problems()
["search.url: must start with http:// or https://, got 'ftp://x'"]
>>> SearchSettings(urls=("https://n1:9200", "https://n2:9200")).servers
('https://n1:9200', 'https://n2:9200')
>>> SearchSettings(index_prefix="Bad Prefix").problems()[0][:40]
'search.index_prefix: must be lower case '
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import msgspec

from stagekit.address import url_problems
from stagekit.config import mask_url
from stagekit.settings import file_problems

__all__ = ["SearchSettings"]


class SearchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which server, where, how to authenticate, and the index name prefix."""

    backend: Literal["opensearch", "elasticsearch"] = "opensearch"
    #: The server (one node); not used when ``urls`` is set.
    url: str = "https://127.0.0.1:19200"
    #: Every node of a cluster, one scheme for all (empty: ``url`` alone).
    urls: tuple[str, ...] = ()
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

        ``endpoint`` is ``{"url", "urls"?, "ca_file"?, "users"?: {name: password}}``
        (``thermowatch stack`` endpoints; a cluster's gives every node in
        ``urls`` and its first in ``url``); ``user`` picks the login (the
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
        >>> SearchSettings.from_endpoint({"url": "http://a:1", "urls": ["http://a:1", "http://b:1"]}).servers
        ('http://a:1', 'http://b:1')
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
        servers: dict[str, Any] = {"url": endpoint["url"]}
        if endpoint.get("urls"):
            servers["urls"] = list(endpoint["urls"])
        return msgspec.convert({**servers, **login, **fields}, cls)

    @property
    def servers(self) -> tuple[str, ...]:
        """The URLs the client connects to: ``urls`` when set, else ``url`` alone.

        >>> SearchSettings(url="http://h:1").servers
        ('http://h:1',)
        """
        return self.urls or (self.url,)

    def shown(self) -> str:
        """The servers for a log line or a summary: comma-separated, without secrets.

        >>> SearchSettings(urls=("https://u:pw@a:1", "https://b:1")).shown()
        'https://********@a:1,https://b:1'
        """
        return ",".join(mask_url(u) for u in self.servers)

    def insecure(self) -> list[str]:
        """Why this connection is unprotected ([]: TLS, verified, with a login); a stage
        logs them as a warning at start (a config must ask for plain HTTP explicitly).

        >>> SearchSettings(url="http://h:1").insecure()
        ['plain http (readings and credentials travel in clear)', 'no login']
        >>> SearchSettings(username="u", password="p").insecure()
        []
        """
        out: list[str] = []
        scheme = self.servers[0].partition("://")[0]  # one for all: see problems()
        if scheme == "http":
            out.append("plain http (readings and credentials travel in clear)")
        if not (self.username or self.api_key):
            out.append("no login")
        if scheme == "https" and not self.verify_certs:
            out.append("the server's certificate is not verified")
        return out

    def problems(self, section: str = "search") -> list[str]:
        """Problems as ``section.key: problem``.

        >>> SearchSettings(urls=("https://a:1", "http://b:1")).problems()
        ["search.urls[1]: must use https:// like search.urls[0], got 'http://b:1'"]
        >>> SearchSettings(url="https://c:1", urls=("https://a:1",)).problems()
        ["search.url: must be one of search.urls or left out (urls wins), got 'https://c:1'"]
        """
        out: list[str] = []
        out += url_problems(f"{section}.url", self.url)
        out += self._urls_problems(section)
        prefix = self.index_prefix
        if prefix != prefix.lower() or any(c in prefix for c in " ,*/"):
            out.append(
                f"{section}.index_prefix: must be lower case without spaces, commas, * or /, "
                f"got {prefix!r}"
            )
        out += file_problems(section, self, ("ca_file",))
        return out

    def _urls_problems(self, section: str) -> list[str]:
        """Each of ``urls`` is a server URL, listed once, with the scheme of the first
        good one; ``url`` left at its default or naming one of them."""
        out: list[str] = []
        first: tuple[int, str] | None = None  # (index, scheme) of the first good URL
        for i, url in enumerate(self.urls):
            key = f"{section}.urls[{i}]"
            if bad := url_problems(key, url):
                out += bad
                continue
            scheme = url.partition("://")[0]
            if first is None:
                first = (i, scheme)
            elif scheme != first[1]:
                out.append(
                    f"{key}: must use {first[1]}:// like {section}.urls[{first[0]}], "
                    f"got {mask_url(url)!r}"
                )
            elif url in self.urls[:i]:
                out.append(f"{key}: repeats {section}.urls[{self.urls.index(url)}]")
        default = next(f.default for f in msgspec.structs.fields(self) if f.name == "url")
        if self.urls and self.url != default and self.url not in self.urls:
            out.append(
                f"{section}.url: must be one of {section}.urls or left out (urls wins), "
                f"got {mask_url(self.url)!r}"
            )
        return out
