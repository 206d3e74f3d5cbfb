"""The stack's search server refuses what it should, by default (security plugin, TLS on HTTP).

Each test is a handful of requests against the running server.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from deploy.local.layout import write_private
from deploy.local.services.opensearch import OpenSearch
from deploy.local.stack import LocalStack
from stagekit.search import SearchSettings, ThreadedBackend, make_backend
from stagekit.search import api as search
from stagekit.search.api import SearchError

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]


def _context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


@pytest.fixture
def backend_of(stack: dict[str, Any]) -> Iterator[Any]:
    opened: list[ThreadedBackend] = []

    def make(user: str) -> ThreadedBackend:
        backend = make_backend(SearchSettings.from_endpoint(stack["search"], user, timeout_s=10))
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close_sync()


def test_status_says_tls_and_basic_auth(local_stack: LocalStack) -> None:
    status = local_stack.status(["search"])["search"]
    assert (status["tls"], status["auth"]) == (True, "basic")
    assert status["url"].startswith("https://") and "users" not in status


def test_an_unauthenticated_request_is_refused(stack: dict[str, Any]) -> None:
    ep = stack["search"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{ep['url']}/_search", context=_context(ep["ca_file"]), timeout=10)
    err.value.close()
    assert err.value.code == 401


def test_a_wrong_password_is_refused(stack: dict[str, Any]) -> None:
    settings = SearchSettings.from_endpoint(stack["search"], "web", timeout_s=10)
    backend = make_backend(msgspec.structs.replace(settings, password="not-" + settings.password))
    try:
        with pytest.raises(SearchError) as err:
            backend.perform_sync(search.info())
        assert err.value.status == 401
    finally:
        backend.close_sync()


def test_plain_http_is_refused(stack: dict[str, Any]) -> None:
    ep = stack["search"]
    with pytest.raises(OSError):  # the TLS listener drops a plaintext request
        urllib.request.urlopen(f"http://{ep['host']}:{ep['port']}/", timeout=10)


def test_a_client_that_does_not_trust_the_stack_ca_is_refused(stack: dict[str, Any]) -> None:
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(
            stack["search"]["url"], context=ssl.create_default_context(), timeout=10
        )
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_the_web_view_user_reads_but_cannot_write(backend_of: Any) -> None:
    web = backend_of("web")
    index = f"thermowatch-sec{RUN}-readings"
    assert web.perform_sync(search.info())["version"]["distribution"] == "opensearch"
    for request in (
        search.create_index(index),
        search.create_doc(index, "d1", {"device_id": "d1"}),
        search.put_index_template(f"thermowatch-sec{RUN}", {"index_patterns": [index]}),
    ):
        with pytest.raises(SearchError) as err:
            web.perform_sync(request)
        assert err.value.status == 403, request


def test_the_processor_writes_only_thermowatch_indices(backend_of: Any) -> None:
    processor, admin = backend_of("processor"), backend_of("admin")
    index = f"thermowatch-sec{RUN}-readings"
    try:
        processor.perform_sync(search.create_doc(index, "d1", {"device_id": "d1"}, refresh=True))
        assert backend_of("web").perform_sync(search.count(index))["count"] == 1
        kibana = backend_of("kibana")  # the kibana tool's live check reads mappings
        assert index in kibana.perform_sync(search.get_mapping(index))
        with pytest.raises(SearchError) as err:
            kibana.perform_sync(search.create_doc(index, "d2", {"device_id": "d2"}))
        assert err.value.status == 403
        with pytest.raises(SearchError) as err:
            processor.perform_sync(search.create_doc(f"other-sec{RUN}", "d1", {"x": 1}))
        assert err.value.status == 403
        with pytest.raises(SearchError) as err:
            processor.perform_sync(search.delete_index(index))
        assert err.value.status == 403
    finally:
        admin.perform_sync(search.delete_index(index))


def test_the_processor_may_delete_monthly_readings_indices_only(backend_of: Any) -> None:
    """ISM runs the retention policy's delete step as the processor, who installed it."""
    processor, admin = backend_of("processor"), backend_of("admin")
    monthly, single = f"thermowatch-readings-sec{RUN}", f"thermowatch-alerts-sec{RUN}"
    try:
        for index in (monthly, single):
            processor.perform_sync(search.create_index(index))
        processor.perform_sync(search.delete_index(monthly))
        with pytest.raises(SearchError) as err:
            processor.perform_sync(search.delete_index(single))
        assert err.value.status == 403
    finally:
        for index in (monthly, single):
            with contextlib.suppress(SearchError):
                admin.perform_sync(search.delete_index(index))


def test_a_rotated_password_replaces_the_old_one(local_stack: LocalStack) -> None:
    """Rotation as docs/security.md says: drop the user's password, ``stack up``.
    The ``kibana`` user (only the kibana tool's tests use it); restored at the end."""
    node = local_stack.service("search")
    assert isinstance(node, OpenSearch)
    old = node.users.all()

    def status(password: str) -> int:
        ep = {**local_stack.endpoints()["search"], "users": {"kibana": password}}
        backend = make_backend(SearchSettings.from_endpoint(ep, "kibana", timeout_s=10))
        try:
            backend.perform_sync(search.info())
        except SearchError as exc:
            return exc.status or 0
        finally:
            backend.close_sync()
        return 200

    try:
        node.users.path.write_text(json.dumps({k: v for k, v in old.items() if k != "kibana"}))
        local_stack.up(["search"])
        new = node.users.all()["kibana"]
        assert new != old["kibana"]
        assert (status(old["kibana"]), status(new)) == (401, 200)
    finally:
        write_private(node.users.path, json.dumps(old))
        local_stack.up(["search"])
    assert status(old["kibana"]) == 200
