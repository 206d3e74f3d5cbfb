"""Wiring: generate and check the committed NDJSON, import/export/status through the client.

Each function here is what one ``thermowatch kibana`` sub-command does,
minus argument parsing (see :mod:`kibana.__main__`). The live mapping is read
through :mod:`stagekit.search`, the way the stages reach the search server
(same backends, TLS and authentication); Kibana itself through
:class:`~kibana.client.KibanaClient`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kibana.check import (
    Problem,
    check_fields,
    check_structure,
    live_field_types,
    parse_ndjson,
    spec_field_types,
)
from kibana.client import ImportReport, KibanaClient
from kibana.config import KibanaTarget
from kibana.objects import DEFAULT_FILE, build_objects, to_ndjson
from stagekit.search import SearchSettings, make_backend
from stagekit.search.api import get_mapping

__all__ = [
    "committed_file",
    "generate",
    "import_objects",
    "live_check",
    "live_field_types_for",
    "open_client",
    "static_check",
]

log = logging.getLogger(__name__)


def committed_file() -> Path:
    """``kibana/saved_objects/thermowatch.ndjson``, next to this module."""
    return Path(__file__).resolve().parent / "saved_objects" / DEFAULT_FILE


def generate(out: Path | None = None, *, prefix: str = "thermowatch-") -> tuple[Path, bool]:
    """(Re)write the NDJSON; returns the path and whether its content changed."""
    path = out or committed_file()
    text = to_ndjson(build_objects(prefix))
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    log.info("event=kibana_generate path=%s changed=%s", path, old != text)
    return path, old != text


def static_check(text: str | bytes, *, prefix: str = "thermowatch-") -> list[Problem]:
    """Structure, references and fields against the processor's mapping definitions.

    Any text or bytes give a list of problems (each naming its line or
    object), never an exception: see :func:`~kibana.check.parse_ndjson`.
    """
    objects, problems = parse_ndjson(text)
    problems += check_structure(objects)
    problems += check_fields(objects, spec_field_types(prefix))
    return problems


def live_field_types_for(
    search: SearchSettings | str, patterns: list[str]
) -> tuple[dict[str, dict[str, str]], list[Problem]]:
    """Field types of each index pattern as the search server reports them.

    ``search`` is the server's settings (TLS, authentication), or just its URL.
    Raises :class:`~stagekit.search.SearchError` when the server cannot answer.
    """
    settings = SearchSettings(url=search) if isinstance(search, str) else search
    out: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    backend = make_backend(settings)
    try:
        for pattern in patterns:
            answer = backend.perform_sync(get_mapping(pattern))
            if not answer:
                problems.append(Problem(pattern, "no index matches this data view yet"))
                continue
            types, conflicts = live_field_types(answer)
            out[pattern] = types
            problems += [Problem(pattern, f"type conflict {c}") for c in conflicts]
    finally:
        backend.close_sync()
    return out, problems


def live_check(text: str | bytes, search: SearchSettings | str) -> list[Problem]:
    """Every field used exists in the live mapping of the search server."""
    objects, problems = parse_ndjson(text)
    patterns = sorted(
        {str(o["attributes"].get("title")) for o in objects if o["type"] == "index-pattern"}
    )
    types, more = live_field_types_for(search, patterns)
    return problems + more + check_fields(objects, types)


def open_client(target: KibanaTarget) -> KibanaClient:
    """A client for ``target`` (the caller closes it)."""
    return KibanaClient(
        target.url,
        space=target.space,
        api_key=target.api_key,
        username=target.user,
        password=target.password,
        timeout_s=target.timeout_s,
        retries=target.retries,
        backoff_s=target.backoff_s,
    )


def import_objects(
    client: KibanaClient, text: str, *, filename: str = DEFAULT_FILE, prefix: str = "thermowatch-"
) -> ImportReport:
    """Refuse broken objects, refuse an unsupported Kibana, then import with overwrite."""
    problems = static_check(text, prefix=prefix)
    if problems:
        raise ValueError(
            "refusing to import broken saved objects:\n  " + "\n  ".join(map(str, problems))
        )
    version = client.check_version()
    log.info("event=kibana_version url=%s version=%s", client.url, ".".join(map(str, version)))
    return client.import_ndjson(text.encode("utf-8"), filename=filename)
