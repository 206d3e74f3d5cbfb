"""Typed, frozen settings of one Kibana target, and where the password comes from.

The password is never a command-line argument (it would show in ``ps`` and
shell history): it comes from ``KIBANA_PASSWORD`` or an interactive prompt.
An API key may be given with ``--api-key`` or ``KIBANA_API_KEY``.

>>> t = KibanaTarget(url="http://kibana:5601", api_key="k")
>>> t.validate()
[]
>>> for problem in KibanaTarget(url="kibana:5601", api_key="k", user="u").validate():
...     print(problem)
url: must start with http:// or https://, got kibana:5601
auth: give --api-key or --user, not both
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["ENV_API_KEY", "ENV_PASSWORD", "KibanaTarget", "resolve_password"]

ENV_PASSWORD = "KIBANA_PASSWORD"  # noqa: S105 (a variable name, not a password)
ENV_API_KEY = "KIBANA_API_KEY"


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
            out.append("auth: give --api-key or --user, not both")
        if self.retries < 0:
            out.append(f"retries: must be >= 0, got {self.retries}")
        if self.timeout_s <= 0:
            out.append(f"timeout: must be > 0, got {self.timeout_s}")
        return out


def resolve_password(
    user: str,
    env: Mapping[str, str],
    *,
    prompt: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> str:
    """``KIBANA_PASSWORD`` if set, else ask on the terminal, else fail clearly.

    >>> resolve_password("elastic", {"KIBANA_PASSWORD": "s3cret"})
    's3cret'
    """
    if env.get(ENV_PASSWORD):
        return env[ENV_PASSWORD]
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise ValueError(f"--user {user}: set {ENV_PASSWORD} (no terminal to ask for the password)")
    return prompt(f"Kibana password for {user}: ")
