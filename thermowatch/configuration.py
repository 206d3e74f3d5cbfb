"""Typed, frozen, validated configuration shared by every stage.

Each stage declares its settings once as frozen :class:`msgspec.Struct` classes
with defaults; :func:`load` reads a TOML file, applies environment overrides
and validates the whole tree at start-up. Errors name the key, the rule and
the offending value, e.g. ``mqtt.qos: must be 0 or 1, got 2``.

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
thermowatch.configuration.ConfigError: mqtt.qos: must be 0 or 1, got 2
>>> loads(Cfg, "", env={"TW__MQTT__QOS": "0"}, env_prefix="TW").mqtt.qos
0
"""

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["ConfigError", "dump_toml", "load", "loads", "to_dict"]

C = TypeVar("C", bound=msgspec.Struct)

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


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
    if env and env_prefix:
        _apply_env(data, env, env_prefix)
    try:
        config = msgspec.convert(data, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), data, cls)) from None
    check = getattr(config, "validate", None)
    if callable(check):
        problems: list[str] = check()
        if problems:
            raise ConfigError("; ".join(problems))
    return config


def _apply_env(data: dict[str, Any], env: Mapping[str, str], prefix: str) -> None:
    head = prefix.upper() + "__"
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


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _lookup(data: Any, path: str) -> Any:
    node = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


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


def _either(values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _explain(text: str, data: Any, cls: type[msgspec.Struct]) -> str:
    m = _AT.match(text)
    msg = m.group("msg") if m else text
    path = (m.group("path") or "").lstrip(".") if m else ""
    value = _lookup(data, path) if path else None
    where = path or "(top level)"
    if mm := re.fullmatch(r"Object contains unknown field `([^`]+)`", msg):
        key = f"{path}.{mm[1]}" if path else mm[1]
        return f"{key}: unknown key (check the spelling against the sample config)"
    if mm := re.fullmatch(r"Object missing required field `([^`]+)`", msg):
        key = f"{path}.{mm[1]}" if path else mm[1]
        return f"{key}: required, not set"
    if re.fullmatch(r"Invalid enum value .*", msg):
        choices = _choices_at(cls, path) if path else []
        if choices:
            return f"{where}: must be {_either(choices)}, got {_fmt(value)}"
        return f"{where}: invalid value {_fmt(value)}"
    if mm := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", msg):
        return f"{where}: must be {_TYPE_WORDS.get(mm[1], mm[1])}, got {_fmt(value)}"
    if mm := re.fullmatch(r"Expected `[^`]+` (>=|<=|>|<) (\S+)", msg):
        words = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}
        return f"{where}: must be {words[mm[1]]} {mm[2]}, got {_fmt(value)}"
    if mm := re.fullmatch(r"Expected `str` matching regex '(.*)'", msg):
        return f"{where}: must match {mm[1]}, got {_fmt(value)}"
    if mm := re.fullmatch(r"Expected `\w+` of length (.*)", msg):
        return f"{where}: length must be {mm[1]}, got {_fmt(value)}"
    if mm := re.fullmatch(r"([A-Za-z_][\w.]*): (.+)", msg, re.S):  # from __post_init__
        key = f"{path}.{mm[1]}" if path else mm[1]
        return f"{key}: {mm[2]}"
    return f"{where}: {msg}"


def _choices_at(cls: type[msgspec.Struct], path: str) -> list[str]:
    """Allowed values of the Literal or Enum field at ``path`` in ``cls``."""
    node: msgspec.inspect.Type = msgspec.inspect.type_info(cls)
    for part in path.split("."):
        node = _unwrap_struct(node)
        fields = getattr(node, "fields", ())
        match = [f for f in fields if f.encode_name == part]
        if not match:
            return []
        node = match[0].type
    out: list[str] = []
    for t in _members(node):
        if isinstance(t, msgspec.inspect.LiteralType):
            out.extend(_fmt(v) for v in t.values)
        elif isinstance(t, msgspec.inspect.EnumType):
            out.extend(_fmt(e.value) for e in t.cls)
    return out


def _unwrap_struct(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    for member in _members(t):
        if isinstance(member, msgspec.inspect.StructType):
            return member
    return t


def _members(t: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(t, msgspec.inspect.Metadata):
        return _members(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        return [m for u in t.types for m in _members(u)]
    return [t]


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


def _mask(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("********" if _SECRET.search(k) and v else _mask(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v) for v in node]
    return node
