"""Network addresses in config files: hosts, ports, ``host:port`` and server URLs.

Every config block that names a server or a listen address checks it here,
so ``check-config`` refuses ``host = "bad host!!"`` the same way in every
stage, naming the key. A host is a name made of RFC 1123 labels, an IPv4
address or an IPv6 literal (read by the standard library's :mod:`ipaddress`);
there is no well-kept library for the host-name half that is worth a
dependency on the Pi (``validators`` would be one more wheel for a regex).

>>> host_problems("mqtt.host", "bad host!!")
["mqtt.host: not a host name or IP address: 'bad host!!'"]
>>> host_problems("mqtt.host", "mqtt://broker")
["mqtt.host: not a host name or IP address: 'mqtt://broker' (give the host alone, without mqtt://)"]
>>> host_problems("mqtt.host", "::1") + host_problems("mqtt.host", "broker-1.example.org")
[]
>>> port_problems("mqtt.port", 0)
['mqtt.port: must be in 1..65535, got 0']
>>> server_problems("kafka.bootstrap_servers", "k1:99999")
["kafka.bootstrap_servers: port must be in 1..65535, got 'k1:99999'"]
>>> url_problems("search.url", "http://search host:9200")
["search.url: not a host name or IP address: 'search host' in 'http://search host:9200'"]
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from stagekit.config import mask_url

__all__ = ["host_problem", "host_problems", "port_problems", "server_problems", "url_problems"]

#: One RFC 1123 label: letters, digits and inner hyphens, 1 to 63 characters.
_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a host name or IP address (None when it is one).

    >>> host_problem("127.0.0.1") is None, host_problem("localhost") is None
    (True, True)
    >>> host_problem("")
    '(empty)'
    >>> host_problem("1.2.3.999")
    ''
    >>> host_problem("broker:1883")
    '(give the port in its own key)'
    """
    if not host.strip():
        return "(empty)"
    if scheme := _SCHEME.match(host):
        return f"(give the host alone, without {scheme.group(1)}://)"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and host_problem(name) is None and ":" not in name:
        return "(give the port in its own key)"
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in "."
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return ""
    if labels[-1].isdigit():  # 1.2.3.999 or 1883: a mistyped address, not a name
        return ""
    return None


def host_problems(key: str, host: str) -> list[str]:
    """``key: not a host name or IP address: '...'`` (a hint for blanks and URLs), or none."""
    problem = host_problem(host)
    if problem is None:
        return []
    hint = f" {problem}" if problem else ""
    return [f"{key}: not a host name or IP address: {host!r}{hint}"]


def port_problems(key: str, port: int, *, allow_zero: bool = False) -> list[str]:
    """``key: must be in 1..65535`` (``0..65535`` with ``allow_zero``: a free port)."""
    low = 0 if allow_zero else 1
    if low <= port <= 65535:
        return []
    return [f"{key}: must be in {low}..65535, got {port}"]


def server_problems(key: str, server: str) -> list[str]:
    """Problems of one ``host:port`` entry (an IPv6 host in brackets: ``[::1]:9092``)."""
    if _SCHEME.match(server):
        return [f"{key}: expected host:port, got {server!r} (no scheme)"]
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit():
        return [f"{key}: expected host:port, got {server!r}"]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if host_problem(host) is not None or ":" not in host:
            return [f"{key}: not an IPv6 address in brackets: {server!r}"]
    elif ":" in host:
        return [f"{key}: an IPv6 host goes in brackets ([::1]:9092), got {server!r}"]
    elif host_problem(host) is not None:
        return [f"{key}: not a host name or IP address: {host!r} in {server!r}"]
    if not 1 <= int(port) <= 65535:
        return [f"{key}: port must be in 1..65535, got {server!r}"]
    return []


def url_problems(key: str, url: str, *, schemes: tuple[str, ...] = ("http", "https")) -> list[str]:
    """Problems of a server URL: its scheme, host and port."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not url.startswith(f"{parts.scheme}://"):
        want = " or ".join(f"{s}://" for s in schemes)
        return [f"{key}: must start with {want}, got {mask_url(url)!r}"]
    shown = mask_url(url)  # a URL may carry a password or a secret path
    host = parts.hostname or ""
    if host_problem(host) is not None:
        return [f"{key}: not a host name or IP address: {host!r} in {shown!r}"]
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        return [f"{key}: port must be in 1..65535, got {shown!r}"]
    return []
