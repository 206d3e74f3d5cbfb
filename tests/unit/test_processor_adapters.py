"""Both search adapters map their client's failures onto one SearchError."""

from __future__ import annotations

from typing import Any

import pytest

from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.backends import ElasticsearchBackend, OpenSearchBackend


class _Raiser:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls: list[dict[str, Any]] = []

    def perform_request(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append({"args": args, **kwargs})
        raise self.exc

    def close(self) -> None:
        pass


def _es_api_error(status: int) -> Exception:
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import ApiError

    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "x", 9200))
    return ApiError("rejected", meta, {"error": {"type": "es_rejected_execution_exception"}})


@pytest.mark.parametrize(("status", "retriable"), [(429, True), (503, True), (400, False)])
async def test_elasticsearch_api_errors_keep_status(status: int, retriable: bool) -> None:
    backend = ElasticsearchBackend("http://127.0.0.1:1")
    fake = _Raiser(_es_api_error(status))
    backend._client.close()
    backend._client = fake  # type: ignore[assignment]
    with pytest.raises(SearchError) as err:
        await backend.perform(search.bulk(b'{"create":{}}\n{}\n'))
    assert err.value.status == status and err.value.retriable is retriable
    call = fake.calls[0]
    assert call["headers"]["Content-Type"] == "application/x-ndjson"
    assert call["body"] == b'{"create":{}}\n{}\n'
    await backend.close()


async def test_elasticsearch_connection_error_is_retriable() -> None:
    from elastic_transport import ConnectionError as ESConnectionError

    backend = ElasticsearchBackend("http://127.0.0.1:1")
    backend._client.close()
    backend._client = _Raiser(ESConnectionError("refused"))  # type: ignore[assignment]
    with pytest.raises(SearchError) as err:
        await backend.perform(search.info())
    assert err.value.status is None and err.value.retriable
    await backend.close()


async def test_opensearch_unreachable_is_retriable_and_dict_bodies_are_json() -> None:
    backend = OpenSearchBackend("http://127.0.0.1:1", timeout_s=2)
    with pytest.raises(SearchError) as err:
        await backend.perform(search.search("x", {"size": 0}))
    assert err.value.retriable
    await backend.close()
    await backend.close()  # idempotent
    with pytest.raises(SearchError):
        await backend.perform(search.info())


async def test_the_producer_creates_its_topics_with_the_configured_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stagekit.kafka
    from cloud_processor import kafka
    from cloud_processor.config import KafkaSettings

    created: list[dict[str, Any]] = []

    async def create_topics(target: Any, names: list[str], **kwargs: Any) -> list[str]:
        created.append({"names": names, **kwargs})
        return names

    class _Producer:
        async def start(self) -> None:
            pass

    monkeypatch.setattr(stagekit.kafka, "create_topics", create_topics)
    monkeypatch.setattr(kafka, "make_producer", lambda settings: _Producer())
    settings = KafkaSettings(partitions=4, replication_factor=3)
    await kafka.KafkaProducer(settings, ["t.alerts", "t.deadletter"]).start()
    assert created == [{"names": ["t.alerts", "t.deadletter"], "partitions": 4, "replication": 3}]
