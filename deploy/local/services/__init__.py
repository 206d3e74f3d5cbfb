"""The services of the local stack, one module each, and the registry that lists them.

To add a service: write ``<name>.py`` with a :class:`~deploy.local.services.base.Service`
subclass and add it to :data:`REGISTRY` below (start order: the default services in
registry order, then the optional ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from deploy.local.errors import StackError
from deploy.local.services.artemis import Artemis
from deploy.local.services.base import Launch, SearchNode, Service, StackContext
from deploy.local.services.elasticsearch import Elasticsearch
from deploy.local.services.kafka import Kafka
from deploy.local.services.mosquitto import Mosquitto
from deploy.local.services.opensearch import OpenSearch

__all__ = [
    "KNOWN",
    "OPTIONAL_SERVICES",
    "REGISTRY",
    "SEARCH_SERVICES",
    "SERVICES",
    "Launch",
    "Service",
    "StackContext",
    "check_names",
    "search_service",
]

#: Every service; a service's consumers come after it (``down`` stops in reverse order).
REGISTRY: Final[tuple[type[Service], ...]] = (
    Mosquitto,
    Kafka,
    OpenSearch,
    Elasticsearch,
    Artemis,
)
#: What ``stack up`` starts when no service is named.
SERVICES: Final[tuple[str, ...]] = tuple(s.name for s in REGISTRY if not s.optional)
#: Started, stopped and shown only when named (``stack up elasticsearch``);
#: ``down`` with no names stops them too when they run.
OPTIONAL_SERVICES: Final[tuple[str, ...]] = tuple(s.name for s in REGISTRY if s.optional)
KNOWN: Final[tuple[str, ...]] = (*SERVICES, *OPTIONAL_SERVICES)
#: Search backend -> the service that serves it (``thermowatch demo --search``).
SEARCH_SERVICES: Final[Mapping[str, str]] = {
    s.backend: s.name for s in REGISTRY if issubclass(s, SearchNode)
}


def search_service(backend: str) -> str:
    """The service serving the search ``backend``; StackError naming the choices otherwise.

    >>> search_service("opensearch"), search_service("elasticsearch")
    ('search', 'elasticsearch')
    >>> search_service("solr")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    deploy.local.errors.StackError: search backend: must be one of opensearch, ... got 'solr'
    """
    try:
        return SEARCH_SERVICES[backend]
    except KeyError:
        choices = ", ".join(SEARCH_SERVICES)
        raise StackError(f"search backend: must be one of {choices}, got {backend!r}") from None


def check_names(services: Iterable[str] | None) -> list[str]:
    """The named services in start order; the default ones (never the optional) when none.

    >>> check_names(None), check_names(["elasticsearch", "kafka"])
    (['mosquitto', 'kafka', 'search'], ['kafka', 'elasticsearch'])
    >>> check_names(["bogus"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    deploy.local.errors.StackError: unknown service(s) bogus; known: mosquitto, kafka, ...
    """
    if services is None:
        return list(SERVICES)
    names = list(dict.fromkeys(services))
    if not names:
        return list(SERVICES)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    # Always in dependency order, whatever order was asked for.
    return [n for n in KNOWN if n in names]
