"""Exact accounting: was every reading the edge produced stored exactly once?

The promise of the pipeline is checked from what is really stored, not from
anybody's counters. A pure core and the sources that feed it:

* :mod:`~thermowatch.accounting.readings` -- :func:`account`: every seq an
  outbox allocated is stored, covered by a Gap, or lost; copies beyond the
  first are duplicates;
* :mod:`~thermowatch.accounting.alerts` -- :func:`score_alerts` (incidents
  alerted or missed, latency) and :func:`alert_integrity` (the alerts index
  and the alerts topic agree);
* :mod:`~thermowatch.accounting.incidents` -- :func:`count_notifications`
  (the processor's incidents per injected incident, their notifications) and
  :func:`shutdown_alerts`;
* :mod:`~thermowatch.accounting.stats` -- :func:`percentiles`;
* sources: :mod:`~thermowatch.accounting.outbox` (seqs the edge allocated),
  :mod:`~thermowatch.accounting.search` (documents in the search server),
  :mod:`~thermowatch.accounting.kafka` (Gaps, readings and alert changes in
  the Kafka topics).

Every name is importable from here (the demo, the chaos tests and the
benchmarks do).

>>> acc = account({"d": range(3)}, {("d", 0): 1, ("d", 1): 2}, [GapRange("d", 2, 2)])
>>> acc.stored, acc.duplicated, acc.covered, acc.ok
(2, 1, 1, False)
"""

from thermowatch.accounting.alerts import (
    AlertDoc,
    AlertIntegrity,
    AlertScore,
    Incident,
    PublishedChange,
    alert_integrity,
    first_published,
    parse_alert_changes,
    score_alerts,
)
from thermowatch.accounting.incidents import (
    Notifications,
    count_notifications,
    shutdown_alerts,
)
from thermowatch.accounting.kafka import (
    fetch_alert_changes,
    fetch_gaps,
    fetch_reading_keys,
    read_records,
    read_topic,
    topic_partitions,
    wait_devices_in_topic,
    wait_missing_in_topic,
)
from thermowatch.accounting.outbox import allocated_from_outboxes, pending_in_outboxes
from thermowatch.accounting.readings import (
    Accounting,
    GapRange,
    account,
    parse_gaps,
    reading_keys,
)
from thermowatch.accounting.search import fetch_alerts, fetch_incidents, fetch_stored
from thermowatch.accounting.stats import percentiles

__all__ = [
    "Accounting",
    "AlertDoc",
    "AlertIntegrity",
    "AlertScore",
    "GapRange",
    "Incident",
    "Notifications",
    "PublishedChange",
    "account",
    "alert_integrity",
    "allocated_from_outboxes",
    "count_notifications",
    "fetch_alert_changes",
    "fetch_alerts",
    "fetch_gaps",
    "fetch_incidents",
    "fetch_reading_keys",
    "fetch_stored",
    "first_published",
    "parse_alert_changes",
    "parse_gaps",
    "pending_in_outboxes",
    "percentiles",
    "read_records",
    "read_topic",
    "reading_keys",
    "score_alerts",
    "shutdown_alerts",
    "topic_partitions",
    "wait_devices_in_topic",
    "wait_missing_in_topic",
]
