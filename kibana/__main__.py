"""``thermowatch kibana``: dashboards as code.

Commands: ``generate`` (rewrite kibana/saved_objects/*.ndjson from the
processor's field definitions; ``--check`` fails when the committed file is
stale), ``check`` (structure, references and fields against the mapping
definitions, and with ``--search-url`` against the live mapping), ``import``,
``export`` and ``status`` (talk to a running Kibana). The password is read
from KIBANA_PASSWORD (SEARCH_PASSWORD for ``--search-user``) or asked for,
never taken from the command line. Also ``python -m kibana ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from stagekit.stage import StageCommand, SubParsers

__all__ = ["COMMAND", "main", "register"]

_PROG = "thermowatch kibana"


def _err(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 1


def _add_prefix(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prefix",
        default="thermowatch-",
        help="processor search.index_prefix the objects are built for (default: thermowatch-)",
    )


def _add_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--file",
        type=Path,
        default=None,
        help="NDJSON file (default: the committed kibana/saved_objects/thermowatch.ndjson, "
        "or freshly generated objects when --prefix is not the default)",
    )


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="Kibana base URL, e.g. http://localhost:5601")
    p.add_argument("--space", default=None, help="Kibana space id (default: the default space)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="file holding the Kibana API key (base64 'id:key' as Kibana shows it); "
        "or set KIBANA_API_KEY. Never the key itself: it would show in ps and shell history",
    )
    # Refused with a hint (and so that argparse does not take it for --api-key-file).
    auth.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    auth.add_argument(
        "--user", default=None, help="basic-auth user; password from KIBANA_PASSWORD or a prompt"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument(
        "--retries", type=int, default=5, help="retries on connection errors and 5xx (default 5)"
    )


def _add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--search-url", default=None, help="also check against the live mapping of this server"
    )
    p.add_argument(
        "--search-backend",
        choices=["opensearch", "elasticsearch"],
        default="opensearch",
        help="kind of search server (default: opensearch)",
    )
    p.add_argument(
        "--search-user",
        default=None,
        help="search server user; password from SEARCH_PASSWORD or a prompt "
        "(Elasticsearch API key: SEARCH_API_KEY)",
    )
    p.add_argument("--search-ca-file", default=None, help="CA bundle of an https:// search server")


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate", help="rewrite the saved-object NDJSON from the field definitions"
    )
    _add_prefix(p)
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default: the committed one)"
    )
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is stale")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("check", help="check the NDJSON (structure, references, fields)")
    _add_prefix(p)
    _add_file(p)
    _add_search(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("import", help="import the saved objects (overwrite) into Kibana")
    _add_target(p)
    _add_prefix(p)
    _add_file(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export thermowatch's dashboards (with references)")
    _add_target(p)
    _add_prefix(p)
    p.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", help="Kibana version and whether it is supported")
    _add_target(p)
    p.set_defaults(func=cmd_status)


#: ``thermowatch kibana ...`` and ``python -m kibana ...``.
COMMAND = StageCommand(
    name="kibana",
    help="Kibana dashboards as code",
    description=__doc__ or "",
    add_commands=_add_commands,
)


#: Adds the command to ``thermowatch``'s parser.
register = COMMAND.register
#: ``python -m ...``: the same sub-commands.
main = COMMAND.main


def _text(args: argparse.Namespace) -> tuple[str, str]:
    """(NDJSON text, file name) the command works on."""
    from kibana.app import committed_file
    from kibana.objects import DEFAULT_FILE, build_objects, to_ndjson

    if args.file is not None:
        # Bytes that are not UTF-8 are kept (as surrogates) for the check to
        # report by line, instead of a traceback here.
        return args.file.read_bytes().decode("utf-8", "surrogateescape"), args.file.name
    if args.prefix != "thermowatch-":
        return to_ndjson(build_objects(args.prefix)), DEFAULT_FILE
    return committed_file().read_text(encoding="utf-8"), DEFAULT_FILE


def cmd_generate(args: argparse.Namespace) -> int:
    """Write (or with --check compare) the NDJSON."""
    from kibana.app import committed_file, generate
    from kibana.objects import build_objects, to_ndjson

    if args.check:
        path = args.out or committed_file()
        want = to_ndjson(build_objects(args.prefix))
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have != want:
            return _err(f"{path} is stale: run 'thermowatch kibana generate'")
        print(f"{path}: up to date")
        return 0
    path, changed = generate(args.out, prefix=args.prefix)
    print(f"{path}: {'written' if changed else 'unchanged'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Static checks, and live-mapping checks with --search-url."""
    from kibana.app import live_check, static_check

    text, name = _text(args)
    problems = static_check(text, prefix=args.prefix)
    if args.search_url:
        problems += live_check(text, _search(args))
    for p in problems:
        print(f"{name}: {p}", file=sys.stderr)
    if problems:
        return _err(f"{len(problems)} problem(s) in {name}")
    print(f"{name}: ok")
    return 0


def _search(args: argparse.Namespace) -> Any:
    from kibana.config import search_settings

    return search_settings(
        args.search_url,
        os.environ,
        backend=args.search_backend,
        user=args.search_user,
        ca_file=args.search_ca_file,
    )


def _target(args: argparse.Namespace) -> Any:
    from kibana.config import ENV_API_KEY, KibanaTarget, read_secret_file, resolve_password

    if args.api_key is not None:
        raise ValueError(
            "--api-key: a key on the command line shows in ps and the shell history; "
            "put it in a file (--api-key-file FILE) or in KIBANA_API_KEY"
        )
    api_key: str | None
    if args.api_key_file is not None:
        api_key = read_secret_file(args.api_key_file, "--api-key-file")
    else:
        api_key = None if args.user else os.environ.get(ENV_API_KEY)
    password = resolve_password(args.user, os.environ) if args.user else None
    target = KibanaTarget(
        url=args.url,
        space=args.space,
        api_key=api_key,
        user=args.user,
        password=password,
        timeout_s=args.timeout,
        retries=args.retries,
    )
    problems = target.validate()
    if problems:
        raise ValueError("; ".join(problems))
    return target


def _with_client(args: argparse.Namespace, action: Any) -> int:
    from kibana.app import open_client
    from kibana.client import KibanaError

    try:
        target = _target(args)
        with open_client(target) as client:
            code: int = action(client)
            return code
    except (KibanaError, ValueError, OSError) as exc:
        return _err(str(exc))


def cmd_import(args: argparse.Namespace) -> int:
    """Import with overwrite; print one line per object."""
    from kibana.app import import_objects

    def action(client: Any) -> int:
        text, name = _text(args)
        report = import_objects(client, text, filename=name, prefix=args.prefix)
        for r in report.results:
            print(f"{'ok    ' if r.ok else 'FAILED'} {r}")
        if not report.success:
            kinds = sorted({r.outcome for r in report.errors})
            return _err(
                f"import into {client.url} failed for {len(report.errors)} object(s) "
                f"({', '.join(kinds)}); {report.success_count} imported"
            )
        print(f"imported {report.success_count} object(s) into {client.url}")
        return 0

    return _with_client(args, action)


def cmd_export(args: argparse.Namespace) -> int:
    """Export the dashboards (deep) and every data view (the incidents' one is on
    no dashboard) as NDJSON."""
    from kibana.objects import build_objects

    def action(client: Any) -> int:
        client.check_version()
        kinds = ("index-pattern", "dashboard")
        wanted = [(o["type"], o["id"]) for o in build_objects(args.prefix) if o["type"] in kinds]
        data = client.export_ndjson(wanted)
        if args.out:
            args.out.write_bytes(data)
            lines = data.count(b"\n")
            print(f"{args.out}: {lines} line(s)")
        else:
            sys.stdout.buffer.write(data)
        return 0

    return _with_client(args, action)


def cmd_status(args: argparse.Namespace) -> int:
    """Print Kibana's version and overall status."""
    from kibana.client import UnsupportedVersionError
    from kibana.objects import MIN_KIBANA

    def action(client: Any) -> int:
        status = client.status()
        number = status.get("version", {}).get("number", "?")
        level = status.get("status", {}).get("overall", {}).get("level", "?")
        print(f"kibana {number} at {client.url}: status={level}")
        try:
            client.check_version()
        except UnsupportedVersionError as exc:
            return _err(str(exc))
        print(f"supported (minimum {'.'.join(map(str, MIN_KIBANA))})")
        return 0

    return _with_client(args, action)


if __name__ == "__main__":
    sys.exit(main())
