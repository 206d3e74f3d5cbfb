"""What every saved object shares: the envelope, the migration versions, the NDJSON form.

Target: Kibana 8.x, minimum :data:`MIN_KIBANA` (8.9.0). The objects carry the
migration versions of that release (``coreMigrationVersion`` 8.8.0 -- the last
core migration of 8.x --, ``index-pattern`` 8.0.0, ``lens`` 8.9.0,
``dashboard`` 8.9.0) so Kibana 8.9 imports them as they are and later 8.x/9.x
releases migrate them forward on import; an older Kibana refuses them, which is
why the client checks the version first.

>>> obj = saved_object("lens", "tw-lens-x", {"title": "x"}, [])
>>> obj["coreMigrationVersion"], obj["typeMigrationVersion"]
('8.8.0', '8.9.0')
>>> to_ndjson([{"b": 1, "a": "°C"}])
'{"a":"°C","b":1}\\n'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CORE_MIGRATION_VERSION",
    "DEFAULT_FILE",
    "MIN_KIBANA",
    "TYPE_MIGRATION_VERSIONS",
    "compact_json",
    "saved_object",
    "to_ndjson",
]

#: Oldest Kibana release these objects import into unchanged.
MIN_KIBANA: Final = (8, 9, 0)
#: Last core migration of Kibana 8.x (the value every 8.8+ export carries).
CORE_MIGRATION_VERSION: Final = "8.8.0"
#: Latest migration of each type in Kibana 8.9 (data views became
#: multi-namespace in 8.0.0; Lens and, through its panels, dashboards 8.9.0).
TYPE_MIGRATION_VERSIONS: Final[Mapping[str, str]] = {
    "index-pattern": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "8.9.0",
}
#: Name of the committed file under ``kibana/saved_objects/``.
DEFAULT_FILE: Final = "thermowatch.ndjson"


def compact_json(value: Any) -> str:
    """Compact, key-sorted JSON (Kibana stores several attributes as JSON strings).

    >>> compact_json({"b": [1, 2], "a": None})
    '{"a":null,"b":[1,2]}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def saved_object(
    type_: str, id_: str, attributes: dict[str, Any], refs: list[dict[str, str]]
) -> dict[str, Any]:
    """One saved object as Kibana exports it, with the migration versions of its type."""
    return {
        "attributes": attributes,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "id": id_,
        "references": refs,
        "type": type_,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[type_],
    }


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One compact, key-sorted JSON object per line (stable bytes for a diff)."""
    return "".join(compact_json(o) + "\n" for o in objects)
