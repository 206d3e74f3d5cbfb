"""Typed, frozen settings of one Kibana target (and of the search server to check
against), and where the passwords come from.

A password is never a command-line argument (it would show in ``ps`` and
shell history): it comes from ``KIBANA_PASSWORD`` (``SEARCH_PASSWORD`` for
the search server) or an interactive prompt. An API key neither: it comes
from a file (``--api-key-file``) or ``KIBANA_API_KEY`` (``SEARCH_API_KEY``).

>>> t = KibanaTarget(url="http://kibana:5601", api_key="k")
>>> t.validate()
[]
>>> for problem in KibanaTarget(url="kibana:5601", api_key="k", user="u").validate():
...     print(problem)
url: must start with http:// or https://, got kibana:5601
auth: give --api-key-file or --user, not both
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stagekit.search import SearchSettings

__all__ = [
    "ENV_API_KEY",
    "ENV_PASSWORD",
    "ENV_SEARCH_API_KEY",
    "ENV_SEARCH_PASSWORD",
    "KibanaTarget",
    "read_secret_file",
    "resolve_password",
    "search_settings",
]

ENV_PASSWORD = "KIBANA_PASSWORD"  # noqa: S105 (a variable name, not a password)
ENV_API_KEY = "KIBANA_API_KEY"
ENV_SEARCH_PASSWORD = "SEARCH_PASSWORD"  # noqa: S105 (a variable name, not a password)
ENV_SEARCH_API_KEY = "SEARCH_API_KEY"


@dataclass(frozen=True, slots=True)
class KibanaTarget:
    """Where and as whom to talk to Kibana."""

    url: str
    space: str | None = None
    api_key: str | None = None
    user: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5

    def __repr__(self) -> str:  # never show secrets, even in a debugger or traceback
        return (
            f"KibanaTarget(url={self.url!r}, space={self.space!r}, "
            f"api_key={'***' if self.api_key else None}, user={self.user!r})"
        )

    def validate(self) -> list[str]:
        """Problems as ``key: problem`` (empty when fine)."""
        out = []
        if not self.url.startswith(("http://", "https://")):
            out.append(f"url: must start with http:// or https://, got {self.url}")
        if self.api_key and self.user:
            out.append("auth: give --api-key-file or --user, not both")
        if self.retries < 0:
            out.append(f"retries: must be >= 0, got {self.retries}")
        if self.timeout_s <= 0:
            out.append(f"timeout: must be > 0, got {self.timeout_s}")
        return out


def read_secret_file(path: Path, option: str) -> str:
    """The secret in ``path`` (its first line, stripped); ValueError naming ``option``.

    >>> read_secret_file(Path("/nonexistent/key"), "--api-key-file")
    Traceback (most recent call last):
    ...
    ValueError: --api-key-file: cannot read /nonexistent/key (FileNotFoundError)
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{option}: cannot read {path} ({type(exc).__name__})") from None
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ValueError(f"{option}: {path} is empty")
    return secret


def resolve_password(
    user: str,
    env: Mapping[str, str],
    *,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
    variable: str = ENV_PASSWORD,
    option: str = "--user",
    server: str = "Kibana",
) -> str:
    """``KIBANA_PASSWORD`` (``variable``) if set, else ask on the terminal, else fail clearly.

    >>> resolve_password("elastic", {"KIBANA_PASSWORD": "s3cret"})
    's3cret'
    """
    if env.get(variable):
        return env[variable]
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise ValueError(f"{option} {user}: set {variable} (no terminal to ask for the password)")
    return prompt(f"{server} password for {user}: ")


def search_settings(
    url: str,
    env: Mapping[str, str],
    *,
    backend: Literal["opensearch", "elasticsearch"] = "opensearch",
    user: str | None = None,
    ca_file: str | None = None,
    timeout_s: float = 30.0,
    interactive: bool | None = None,
) -> SearchSettings:
    """The search server to check the live mapping on, as the stages reach it.

    The password of ``user`` comes from ``SEARCH_PASSWORD`` or a prompt, an
    Elasticsearch API key from ``SEARCH_API_KEY``. Raises ValueError naming
    the problem.

    >>> search_settings("https://search:9200", {"SEARCH_PASSWORD": "pw"}, user="kib").username
    'kib'
    >>> search_settings("search:9200", {})
    Traceback (most recent call last):
    ...
    ValueError: search.url: must start with http:// or https://, got 'search:9200'
    """
    password = ""
    if user:
        password = resolve_password(
            user,
            env,
            interactive=interactive,
            variable=ENV_SEARCH_PASSWORD,
            option="--search-user",
            server="Search server",
        )
    settings = SearchSettings(
        backend=backend,
        url=url,
        username=user or "",
        password=password,
        api_key=env.get(ENV_SEARCH_API_KEY, "") if backend == "elasticsearch" else "",
        ca_file=ca_file or "",
        timeout_s=timeout_s,
    )
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return settings
