"""Keep an aiokafka client calm while Kafka is unreachable.

aiokafka's metadata synchronizer retries a failed metadata update with no
pause whenever someone is waiting for metadata: a producer holding a batch
for a partition with no known leader asks again as soon as the previous try
failed, and each try logs an error ("Unable connect to node ...", "Unable to
update metadata ..."). With Kafka down that is hundreds of connection attempts
and log lines per second and a whole core. None of aiokafka's settings
(``retry_backoff_ms``, ``metadata_max_age_ms``, ``request_timeout_ms``,
``connections_max_idle_ms``) paces that loop: ``retry_backoff_ms`` only
spaces produce retries and ``_wait_on_metadata``.

* :func:`pace_metadata` makes a client's failed metadata update wait a
  :class:`~stagekit.backoff.Backoff` delay (bounded exponential, jittered)
  before it reports the failure, so every waiter retries at that pace; the
  first successful update resets it.
* :func:`quiet_client_logs` lets through, per aiokafka logger and message,
  one line a minute and says on the next one how many it held back
  (``suppressed=N``), using :class:`~stagekit.ratelog.RateLimitedLog`.

Hand-written: it wraps one private method of aiokafka's client
(``AIOKafkaClient._metadata_update``, the same since 0.5), checked by
:func:`pace_metadata` at run time; no library offers this pacing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from stagekit.backoff import Backoff
from stagekit.ratelog import RateLimitedLog

__all__ = ["AIOKAFKA_LOGGERS", "RateLimitedFilter", "pace_metadata", "quiet_client_logs"]

log = logging.getLogger(__name__)

#: aiokafka's loggers that repeat a line per failed attempt while Kafka is away.
AIOKAFKA_LOGGERS: Final = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
)


def pace_metadata(
    client: Any,
    backoff: Callable[[], Backoff],
    *,
    min_interval_s: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Make ``client``'s failed metadata updates wait a backoff delay; False if not possible.

    ``backoff()`` makes the client's one :class:`Backoff`. Updates also start
    at least ``min_interval_s`` apart, as the Java client spaces its metadata
    refreshes by ``retry.backoff.ms``: a broker that answers but names no
    leader (it is shutting down or starting) would otherwise be asked again
    at once. Call before the client starts (e.g.
    ``pace_metadata(producer.client, ...)`` right after creating an
    ``AIOKafkaProducer``).
    """
    update = getattr(client, "_metadata_update", None)
    if update is None or not asyncio.iscoroutinefunction(update):
        log.warning("event=kafka_metadata_pacing_unavailable client=%s", type(client).__name__)
        return False
    delays = backoff()
    last_end = [-math.inf]

    async def paced(*args: Any, **kwargs: Any) -> Any:
        wait = last_end[0] + min_interval_s - clock()
        if wait > 0:
            await sleep(wait)
        try:
            ok = await update(*args, **kwargs)
        finally:
            last_end[0] = clock()
        if ok:
            delays.reset()
        else:
            await sleep(delays.next())
        return ok

    client._metadata_update = paced
    return True


class RateLimitedFilter(logging.Filter):
    """A logging filter: per logger and message template, ``lines`` lines per ``per_s`` seconds."""

    def __init__(self, limiter: RateLimitedLog) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._limiter.take(f"{record.name}:{record.msg}")
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} suppressed=%d"
            record.args = (*_as_tuple(record.args), held)
        return True


def _as_tuple(args: Any) -> tuple[Any, ...]:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


_installed: RateLimitedFilter | None = None


def quiet_client_logs(*, per_s: float = 60.0) -> RateLimitedFilter:
    """Rate-limit aiokafka's loggers (idempotent: installed once per process).

    >>> quiet_client_logs() is quiet_client_logs()
    True
    """
    global _installed  # one filter per process, like the loggers it sits on
    if _installed is None:
        _installed = RateLimitedFilter(RateLimitedLog(lines=1, per_s=per_s, max_keys=256))
        for name in AIOKAFKA_LOGGERS:
            logging.getLogger(name).addFilter(_installed)
    return _installed
