"""The search server (OpenSearch or Elasticsearch): one package for every stage.

* :mod:`~stagekit.search.settings` -- where the server is and how to log in
  (``[search]``, TLS and authentication included);
* :mod:`~stagekit.search.api` -- the port: requests as data
  (:class:`Request`), one error type, the :class:`SearchBackend` protocol;
* :mod:`~stagekit.search.backends` -- the OpenSearch and Elasticsearch
  adapters and :func:`make_backend`;
* :mod:`~stagekit.search.indices` -- index names and field definitions (the
  mappings, and the Kibana objects, are generated from them);
* :mod:`~stagekit.search.alerts` -- the alerts-index document of an alert;
* :mod:`~stagekit.search.incidents` -- the incidents-index document of an incident change;
* :mod:`~stagekit.search.queries` -- the queries readers run.

The processor writes through it; the web view, Kibana checks, accounting and
the demo read through it.
"""

from stagekit.search.api import Request, SearchBackend, SearchError
from stagekit.search.backends import ThreadedBackend, make_backend
from stagekit.search.indices import (
    AGGREGATES,
    ALERTS,
    INDEXES,
    READINGS,
    FieldSpec,
    IndexNames,
    IndexSpec,
)
from stagekit.search.settings import SearchSettings

__all__ = [
    "AGGREGATES",
    "ALERTS",
    "INDEXES",
    "READINGS",
    "FieldSpec",
    "IndexNames",
    "IndexSpec",
    "Request",
    "SearchBackend",
    "SearchError",
    "SearchSettings",
    "ThreadedBackend",
    "make_backend",
]
