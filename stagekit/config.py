"""Typed, frozen, validated configuration shared by every stage.

Each stage declares its settings once as frozen :class:`msgspec.Struct` classes
with defaults; :func:`load` reads a TOML file, applies environment overrides
and validates the whole tree at start-up. Errors name the key, the rule and
the offending value, e.g. ``mqtt.qos: must be 0 or 1, got 2``; when an
environment override set the key, the error names the variable too
(``mqtt.port (from THERMOWATCH_GATEWAY__MQTT__PORT): must be an integer, got "abc"``).

Environment overrides: ``<PREFIX>__<SECTION>__<KEY>=<value>`` where the value
is read as a TOML value when it parses as one (``1884``, ``true``,
``["a","b"]``) and as a plain string otherwise. For example
``THERMOWATCH_GATEWAY__MQTT__PORT=1884``.

>>> from typing import Literal
>>> class Mqtt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
...     qos: Literal[0, 1] = 1
>>> class Cfg(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
...     mqtt: Mqtt = Mqtt()
>>> loads(Cfg, "[mqtt]\\nqos = 2\\n")
Traceback (most recent call last):
...
stagekit.config.ConfigError: mqtt.qos: must be 0 or 1, got 2
>>> loads(Cfg, "", env={"TW__MQTT__QOS": "0"}, env_prefix="TW").mqtt.qos
0
"""

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from telemetry_contract.explain import field_choices, lookup, parse_error

__all__ = ["ConfigError", "dump_toml", "load", "loads", "mask_url", "to_dict"]

C = TypeVar("C", bound=msgspec.Struct)


class ConfigError(ValueError):
    """Invalid configuration; the message names the key (``section.key: problem``)."""


def load(
    cls: type[C],
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    env_prefix: str = "",
) -> C:
    """Load ``cls`` from a TOML file (or defaults when ``path`` is None)."""
    text = ""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return loads(cls, text, env=env, env_prefix=env_prefix)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def loads(
    cls: type[C],
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    env_prefix: str = "",
) -> C:
    """Load ``cls`` from TOML text plus environment overrides."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    sources = _apply_env(data, env, env_prefix) if env and env_prefix else {}
    try:
        config = msgspec.convert(data, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_from_env(_explain(str(exc), data, cls), sources)) from None
    check = getattr(config, "validate", None)
    if callable(check):
        problems: list[str] = check()
        if problems:
            raise ConfigError("; ".join(_from_env(p, sources) for p in problems))
    return config


def _apply_env(data: dict[str, Any], env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Set the overrides in ``data``; returns the variable behind each key set (``a.b``)."""
    head = prefix.upper() + "__"
    sources: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.upper().startswith(head):
            continue
        keys = [k.lower() for k in name[len(head) :].split("__") if k]
        if not keys:
            continue
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} is not a table")
            node = child
        node[keys[-1]] = _parse_env_value(raw)
        sources[".".join(keys)] = name
    return sources


def _from_env(problem: str, sources: Mapping[str, str]) -> str:
    """``key (from VAR): problem`` when an environment variable set ``key`` (or a part of it).

    >>> _from_env("mqtt.port: must be an integer, got 'abc'", {"mqtt.port": "TW__MQTT__PORT"})
    "mqtt.port (from TW__MQTT__PORT): must be an integer, got 'abc'"
    >>> _from_env("mqtt.port: bad", {"mqtt.host": "TW__MQTT__HOST"})
    'mqtt.port: bad'
    """
    key, sep, rest = problem.partition(": ")
    if not sep or not sources:
        return problem
    bare = re.sub(r"\[[^\]]*\]", "", key)  # kafka.bootstrap_servers[0] -> the key
    for path, name in sources.items():
        # The key set, a value inside it, or a table it named that does not exist.
        if bare == path or bare.startswith(path + ".") or path.startswith(bare + "."):
            return f"{key} (from {name}): {rest}"
    return problem


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "object": "a table",
    "array": "an array",
    "null": "null",
}
_BOUND_WORDS = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}


def _either(values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _explain(text: str, data: Any, cls: type[msgspec.Struct]) -> str:
    """msgspec's error as ``key: problem`` in the words of a config file."""
    p = parse_error(text)
    while _MAP_KEY in p.path and (key := _failed_key(data, cls, p.path)) is not None:
        named = f".{key}"
        p = replace(
            p, path=p.path.replace(_MAP_KEY, named, 1), field=p.field.replace(_MAP_KEY, named, 1)
        )
    value = lookup(data, p.path) if p.path else None
    where = p.path or "(top level)"
    if p.kind == "unknown":
        return f"{p.field}: unknown key (check the spelling against the sample config)"
    if p.kind == "missing":
        return f"{p.field}: required, not set"
    if p.kind == "enum":
        choices = [_fmt(v) for v in field_choices(cls, p.path)] if p.path else []
        if choices:
            return f"{where}: must be {_either(choices)}, got {_fmt(value)}"
        return f"{where}: invalid value {_fmt(value)}"
    if p.kind == "type":
        return f"{where}: must be {_TYPE_WORDS.get(p.want, p.want)}, got {_fmt(value)}"
    if p.kind == "bound":
        return f"{where}: must be {_BOUND_WORDS[p.op]} {p.bound}, got {_fmt(value)}"
    if p.kind == "pattern":
        return f"{where}: must match {p.text}, got {_fmt(value)}"
    if p.kind == "length":
        return f"{where}: length must be {p.text}, got {_fmt(value)}"
    if p.kind == "field":
        return f"{p.field}: {p.text}"
    if p.kind == "invalid":
        return f"{where}: Invalid value {p.text}"
    return f"{where}: {p.text}"


#: How msgspec writes the key of a mapping entry in an error path.
_MAP_KEY = "[...]"


def _failed_key(data: Any, cls: type[msgspec.Struct], path: str) -> str | None:
    """The key of the first mapping entry in ``path`` (``rules.groups[...].x``) that fails.

    msgspec names no key, but checks entries in order: the failing one is
    the first whose addition to the entries before it makes ``data`` fail.
    """
    where, _, name = path.split(_MAP_KEY, 1)[0].rpartition(".")
    parent = lookup(data, where) if where else data
    mapping = parent.get(name) if isinstance(parent, dict) else None
    if not isinstance(mapping, dict):
        return None
    keys = list(mapping)
    try:
        for end, key in enumerate(keys, start=1):
            parent[name] = {k: mapping[k] for k in keys[:end]}
            try:
                msgspec.convert(data, cls, strict=True)
            except msgspec.ValidationError:
                return str(key)
    finally:
        parent[name] = mapping
    return None


def to_dict(config: msgspec.Struct) -> dict[str, Any]:
    """The config as plain data (for ``print-config``)."""
    out: dict[str, Any] = msgspec.to_builtins(config)
    return out


def dump_toml(config: msgspec.Struct) -> str:
    """The effective config as TOML, secrets masked (for ``print-config``)."""
    import tomli_w

    return tomli_w.dumps(_mask(_drop_none(to_dict(config))))


def _drop_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_none(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_drop_none(v) for v in node]
    return node


_SECRET = re.compile(r"(password|secret|token|api_key)$", re.I)
_URL = re.compile(r"urls?$", re.I)


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _mask_value(k, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v) for v in node]
    return node


def _mask_value(key: str, value: Any) -> Any:
    """``value`` of ``key`` as ``print-config`` shows it.

    >>> _mask_value("urls", ["http://u:pw@a:1", "http://b:1"])
    ['http://********@a:1', 'http://b:1']
    """
    if _SECRET.search(key) and value:
        return "********"
    if _URL.search(key) and isinstance(value, str):
        return mask_url(value)
    if _URL.search(key) and isinstance(value, list | tuple):
        return [mask_url(v) if isinstance(v, str) else _mask(v) for v in value]
    return _mask(value)


def mask_url(url: str) -> str:
    """``url`` without what may be a secret: user info, path and query.

    A webhook URL's path is often its only credential (Slack's is); a search
    server's URL keeps its host and port.

    >>> mask_url("https://hooks.slack.com/services/T0/B0/XYZ?x=1")
    'https://hooks.slack.com/********'
    >>> mask_url("http://user:pw@127.0.0.1:19200")
    'http://********@127.0.0.1:19200'
    >>> mask_url("http://127.0.0.1:19200/")
    'http://127.0.0.1:19200/'
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"********@{host}" if "@" in parts.netloc else host
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}" + ("/********" if hidden else parts.path)
