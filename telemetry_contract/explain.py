"""Turn msgspec's error messages into sentences that name the field.

msgspec reports a problem as text such as ``Expected `int` >= 1 - at
`$.mqtt.receive_maximum```. :func:`parse_error` reads that text once into a
:class:`Problem` (where, and what kind of problem); two readers phrase it for
their audience: :func:`explain_validation` for payloads (a
:class:`ContractError` with its :class:`Reason`, used by the decoders) and
``stagekit.config`` for configuration keys. One parser, so a msgspec release
that words a message differently is fixed in one place.

>>> parse_error("Expected `int` >= 1 - at `$.mqtt.receive_maximum`")
Problem(kind='bound', path='mqtt.receive_maximum', field='mqtt.receive_maximum', \
want='int', got='', op='>=', bound='1', text='')
>>> parse_error("Object missing required field `seq`").field
'seq'
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from telemetry_contract.errors import ContractError, Reason
from telemetry_contract.messages import (
    MAX_TEMP_C,
    MESSAGE_TYPES,
    MIN_TEMP_C,
    MIN_TS_MS,
    SCHEMA_VERSION,
)

__all__ = [
    "MAX_DEPTH",
    "Problem",
    "explain_malformed",
    "explain_validation",
    "field_choices",
    "load_doc",
    "lookup",
    "message_tag",
    "nesting_exceeds",
    "parse_error",
    "too_deep",
]

ProblemKind = Literal[
    "missing",
    "unknown",
    "type",
    "bound",
    "out_of_range",
    "pattern",
    "length",
    "enum",
    "invalid",
    "field",
    "other",
]

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_BOUND = re.compile(r"Expected `(?P<want>[^`]+)` (?P<op>[<>]=?) (?P<bound>\S+)")
_REGEX = re.compile(r"Expected `str` matching regex '(?P<rx>.*)'")
_LENGTH = re.compile(r"Expected `\w+` of length (?P<rest>.*)")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)")
_INVALID = re.compile(r"Invalid value (?P<value>.*)")
_FIELD_PROBLEM = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_.\[\]]*): (?P<problem>.+)$", re.S)
_TEMP_FIELDS: Final = frozenset({"temp_c", "alarm_high_c", "alarm_low_c"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One msgspec error, parsed: ``field`` is the dotted path it is about."""

    kind: ProblemKind
    #: Where msgspec points ("" is the top level).
    path: str
    #: The field the problem is about (``path``, plus the name for missing/unknown keys).
    field: str
    want: str = ""
    got: str = ""
    op: str = ""
    bound: str = ""
    #: The regex, the length rule, the rejected value or the problem sentence.
    text: str = ""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def parse_error(text: str) -> Problem:
    """Read one msgspec error message (see the module doctest)."""
    match = _AT.match(text)
    msg = match.group("msg") if match else text
    path = (match.group("path") or "").lstrip(".") if match else ""
    if m := _MISSING.fullmatch(msg):
        return Problem("missing", path, _join(path, m["name"]))
    if m := _UNKNOWN.fullmatch(msg):
        return Problem("unknown", path, _join(path, m["name"]))
    if m := _EXPECTED.fullmatch(msg):
        return Problem("type", path, path, want=m["want"], got=m["got"])
    if m := _BOUND.fullmatch(msg):
        return Problem("bound", path, path, want=m["want"], op=m["op"], bound=m["bound"])
    if msg == "Number out of range":
        return Problem("out_of_range", path, path)
    if m := _REGEX.fullmatch(msg):
        return Problem("pattern", path, path, text=m["rx"])
    if m := _LENGTH.fullmatch(msg):
        return Problem("length", path, path, text=m["rest"])
    if m := _ENUM.fullmatch(msg):
        return Problem("enum", path, path, text=m["value"])
    if m := _INVALID.fullmatch(msg):
        return Problem("invalid", path, path, text=m["value"])
    if m := _FIELD_PROBLEM.match(msg):  # raised by a struct's __post_init__
        return Problem("field", path, _join(path, m["field"]), text=m["problem"])
    return Problem("other", path, path, text=msg)


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path (``a.b[2].c``) in plain data, or None.

    >>> lookup({"a": [{"b": 7}]}, "a[0].b")
    7
    """
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def field_choices(cls: type[Any], path: str) -> list[Any]:
    """Allowed values of the Literal or Enum field at dotted ``path`` in struct ``cls``.

    >>> from telemetry_contract.messages import Gap
    >>> field_choices(Gap, "reason")[:2]
    ['outbox_full', 'outbox_expired']
    """
    key = (cls, path)
    if key not in _CHOICES:
        # Cached: msgspec.inspect.type_info walks the whole message type (~1 ms
        # for an alert change), and a stream of bad payloads asks the same few
        # paths (real field names: msgspec reports them; bounded anyway).
        if len(_CHOICES) >= 1024:
            _CHOICES.clear()
        _CHOICES[key] = _field_choices(cls, path)
    return list(_CHOICES[key])


_CHOICES: dict[tuple[type[Any], str], tuple[Any, ...]] = {}


def _field_choices(cls: type[Any], path: str) -> tuple[Any, ...]:
    node: msgspec.inspect.Type = msgspec.inspect.type_info(cls)
    for part in path.split("."):
        node = _unwrap_struct(node)
        match = [f for f in getattr(node, "fields", ()) if f.encode_name == part]
        if not match:
            return ()
        node = match[0].type
    out: list[Any] = []
    for t in _members(node):
        if isinstance(t, msgspec.inspect.LiteralType):
            out.extend(t.values)
        elif isinstance(t, msgspec.inspect.EnumType):
            out.extend(e.value for e in t.cls)
    return tuple(out)


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


# --- payloads: a ContractError with its Reason ---------------------------------


#: Deepest nesting of arrays and objects the explaining path reads. No
#: message nests deeper than 2; the bound keeps the standard library's
#: recursive parser (and the walks below) far from Python's recursion limit,
#: which ~1,000 levels (2 KB of ``[``) would otherwise reach.
MAX_DEPTH: Final = 64
#: A JSON string (possibly unterminated) or a bracket: what nesting depends on.
_NESTING_TOKENS: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.S)
_OPENERS: Final = frozenset(b"[{")


def nesting_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``limit`` (brackets in strings don't count).

    One linear scan with no recursion, so it is safe on any input.

    >>> nesting_exceeds(b"[[1]]", 2), nesting_exceeds(b"[[[1]]]", 2), nesting_exceeds(b'["[[["]', 2)
    (False, True, False)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for token in _NESTING_TOKENS.finditer(raw):
        first = token.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first != 0x22:  # '"': a string
            depth -= 1
    return False


def load_doc(raw: bytes) -> Any:
    """``raw`` read by the standard library (NaN/Infinity allowed); None when it is
    not JSON or nests deeper than :data:`MAX_DEPTH`."""
    if nesting_exceeds(raw):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a deep caller stack
        return None


def too_deep(detail: str = "") -> ContractError:
    """The error for a payload nested deeper than :data:`MAX_DEPTH` (msgspec's ``detail``)."""
    return ContractError(
        Reason.TOO_DEEP,
        f"arrays/objects nest deeper than {MAX_DEPTH} levels" + (f" ({detail})" if detail else ""),
        field="payload",
    )


def explain_malformed(raw: bytes, detail: str) -> ContractError:
    """msgspec rejects NaN/Infinity as malformed JSON; tell those apart."""
    if nesting_exceeds(raw):
        return too_deep(detail)
    doc = load_doc(raw)
    found = _find_non_finite(doc) if doc is not None else None
    if found is not None:
        path, value = found
        shown = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return ContractError(
            Reason.NON_FINITE, f"must be a finite number, got {shown}", field=path or "payload"
        )
    return ContractError(Reason.NOT_JSON, f"not valid JSON ({detail})", field="payload")


def _find_non_finite(doc: Any) -> tuple[str, float] | None:
    """The path and value of the first NaN/Infinity, depth first (iterative: no recursion).

    >>> _find_non_finite({"a.b": [1, {"c": float("inf")}]})
    ('a.b[1].c', inf)
    """
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path, node
        if isinstance(node, dict):
            items = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
            stack.extend(reversed(items))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))
    return None


def explain_validation(raw: bytes, text: str, cls: type[Any] | None = None) -> ContractError:
    """The :class:`ContractError` for msgspec's validation error ``text`` on ``raw``.

    ``cls`` is the message class being decoded (None: the union of
    :data:`MESSAGE_TYPES`, picked by the payload's ``type``).
    """
    p = parse_error(text)
    doc: Any = load_doc(raw)
    value = lookup(doc, p.path) if p.path and doc is not None else None
    where = p.path or "payload"  # msgspec's path is empty for the top level
    if p.kind == "missing":
        return ContractError(Reason.MISSING_FIELD, "required field is missing", field=p.field)
    if p.kind == "unknown":
        return ContractError(
            Reason.UNKNOWN_FIELD,
            f"unknown field (not in schema version {SCHEMA_VERSION})",
            field=p.field,
        )
    if p.path == "type" and p.kind == "invalid":
        choices = ", ".join(MESSAGE_TYPES) if cls is None else message_tag(cls)
        return ContractError(
            Reason.UNKNOWN_MESSAGE_TYPE,
            f"unknown message type {json.dumps(value)} (expected one of {choices})",
            field="type",
        )
    if p.path == "schema_version":
        return ContractError(
            Reason.UNKNOWN_SCHEMA_VERSION,
            f"unsupported schema version {json.dumps(value)} (this build reads {SCHEMA_VERSION})",
            field="schema_version",
        )
    if p.kind == "type":
        return ContractError(Reason.WRONG_TYPE, f"expected {p.want}, got {p.got}", field=where)
    if p.kind == "bound":
        return _bound_error(where, value, p.op, p.bound)
    if p.kind == "out_of_range":
        return ContractError(Reason.OUT_OF_RANGE, "number out of range", field=where)
    if p.kind == "pattern":
        return ContractError(
            Reason.INVALID_VALUE, f"must match {p.text}, got {json.dumps(value)}", field=where
        )
    if p.kind == "length":
        return ContractError(Reason.INVALID_VALUE, f"length must be {p.text}", field=where)
    if p.kind == "enum":
        return ContractError(
            Reason.INVALID_VALUE,
            f"invalid value {p.text}{_choices(doc, p.path, cls)}",
            field=where,
        )
    if p.kind == "field":
        return ContractError(Reason.INVALID_VALUE, p.text, field=p.field)
    if p.kind == "invalid":
        return ContractError(Reason.INVALID_VALUE, f"Invalid value {p.text}", field=where)
    return ContractError(Reason.INVALID_VALUE, p.text, field=where)


def message_tag(cls: type[Any]) -> str:
    """The ``type`` tag of a message class (its name when it has none).

    >>> from telemetry_contract.messages import Reading
    >>> message_tag(Reading)
    'reading'
    """
    tag = _TAGS.get(cls)
    if tag is None:  # type_info walks the whole type: once per class
        tag = _TAGS[cls] = str(getattr(msgspec.inspect.type_info(cls), "tag", cls.__name__))
    return tag


_TAGS: dict[type[Any], str] = {}


def _bound_error(path: str, value: Any, op: str, bound: str) -> ContractError:
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _TEMP_FIELDS:
        return ContractError(
            Reason.OUT_OF_RANGE,
            f"must be between {MIN_TEMP_C} and {MAX_TEMP_C} °C, got {json.dumps(value)}",
            field=path,
        )
    if leaf == "ts" and op == ">=" and float(bound) == MIN_TS_MS:
        return ContractError(
            Reason.OUT_OF_RANGE,
            f"must be at or after {datetime.fromtimestamp(MIN_TS_MS / 1000, UTC):%Y-%m-%d} "
            f"(is the device clock set?), got {json.dumps(value)}",
            field=path,
        )
    return ContractError(
        Reason.OUT_OF_RANGE, f"must be {op} {bound}, got {json.dumps(value)}", field=path
    )


def _choices(doc: Any, path: str, cls: type[Any] | None) -> str:
    """The allowed values of an enum field, when the message type is known."""
    if not isinstance(doc, dict) or "." in path or "[" in path:
        return ""
    if cls is None:
        cls = MESSAGE_TYPES.get(str(doc.get("type")))
    if cls is None:
        return ""
    values = field_choices(cls, path)
    return " (expected one of " + ", ".join(map(str, values)) + ")" if values else ""
