"""The search server's connection settings, shared by every stage that reads or writes it.

The processor writes, the web view, Kibana checks and the demo read: all of
them reach the server through this one block (``[search]``), so TLS and
authentication are set once, the same way. A stage subclasses it to add its
own keys (the processor's bulk sizes, the web view's refresh period).

>>> SearchSettings(url="ftp://x").problems()
["search.url: must start with http:// or https://, got 'ftp://x'"]
>>> SearchSettings(index_prefix="Bad Prefix").problems()[0][:40]
'search.index_prefix: must be lower case '
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from stagekit.address import url_problems
from stagekit.settings import file_problems

__all__ = ["SearchSettings"]


class SearchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which server, where, how to authenticate, and the index name prefix."""

    backend: Literal["opensearch", "elasticsearch"] = "opensearch"
    url: str = "http://127.0.0.1:19200"
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

    def problems(self, section: str = "search") -> list[str]:
        """Problems as ``section.key: problem``."""
        out: list[str] = []
        out += url_problems(f"{section}.url", self.url)
        prefix = self.index_prefix
        if prefix != prefix.lower() or any(c in prefix for c in " ,*/"):
            out.append(
                f"{section}.index_prefix: must be lower case without spaces, commas, * or /, "
                f"got {prefix!r}"
            )
        out += file_problems(section, self, ("ca_file",))
        return out
