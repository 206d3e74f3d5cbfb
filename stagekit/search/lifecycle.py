"""Retention by the search cluster's own lifecycle management: the policy bodies.

The processor installs one policy, ``<prefix>retention``, at start: an
Elasticsearch ILM policy or an OpenSearch ISM policy, whichever the cluster
has. It deletes a monthly readings or aggregates index (``<prefix>readings-2026.01``)
``retention_days + 31`` days after the index was created. The monthly design
stays (see :mod:`stagekit.search.indices`: the ``(index, _id)`` of a reading
is a pure function of the reading, so a redelivered reading is refused with a
409 for ever), and so retention deletes one month of data at a time: data is
kept *at least* ``retention_days`` and at most about a month longer.

Why creation time plus 31 days: neither engine knows the month an index
holds, only when the index was created. The processor creates the index of
the current month at start and the others when their first document comes,
so an index is created at the latest when its month starts (late data of an
old month creates the index later, which only keeps it longer). Its newest
document is at most 31 days younger than its creation.

The policy carries a marker of what it says (:func:`policy_marker`): when
``search.retention_days`` changes, the marker differs and the processor
replaces the policy; when it is the same, the processor leaves it alone.

``retention_days = 0`` keeps data for ever: the policy is installed without a
delete step (so indices managed by an earlier policy stop being deleted).

>>> ilm_policy(90)["policy"]["phases"]["delete"]["min_age"]
'121d'
>>> [s["name"] for s in ism_policy(IndexNames("tw-"), 90)["policy"]["states"]]
['hot', 'delete']
"""

from __future__ import annotations

from typing import Any, Final

from stagekit.search.indices import INDEXES, IndexNames

__all__ = [
    "MAX_RETENTION_DAYS",
    "MONTH_SLACK_DAYS",
    "delete_after_days",
    "ilm_policy",
    "ism_policy",
    "managed_patterns",
    "policy_marker",
    "policy_name",
    "replica_problem",
]

#: A monthly index holds data up to 31 days younger than its creation.
MONTH_SLACK_DAYS: Final = 31
#: 100 years: a larger value is a typo, not a retention.
MAX_RETENTION_DAYS: Final = 36_500
#: Bumped when the policy's shape changes for the same retention (forces an update).
POLICY_REVISION: Final = 1
_KEY: Final = "search.retention_days"


def _checked(retention_days: int) -> int:
    """``retention_days`` if it is a whole number of days in range, else a ValueError
    naming the key.

    >>> _checked(-1)
    Traceback (most recent call last):
    ...
    ValueError: search.retention_days: must be 0 (keep for ever) or 1..36500 days, got -1
    """
    if (
        isinstance(retention_days, bool)
        or not isinstance(retention_days, int)
        or not 0 <= retention_days <= MAX_RETENTION_DAYS
    ):
        raise ValueError(
            f"{_KEY}: must be 0 (keep for ever) or 1..{MAX_RETENTION_DAYS} days, "
            f"got {retention_days!r}"
        )
    return retention_days


def policy_name(names: IndexNames) -> str:
    """``<prefix>retention``: one policy per index prefix.

    >>> policy_name(IndexNames("tw-"))
    'tw-retention'
    """
    return f"{names.prefix}retention"


def managed_patterns(names: IndexNames) -> list[str]:
    """Index patterns the policy manages: every monthly family (readings, aggregates).

    The alerts and incidents indices are single indices kept for ever.

    >>> managed_patterns(IndexNames("tw-"))
    ['tw-readings-*', 'tw-agg1m-*']
    """
    return [names.pattern(spec) for spec in INDEXES if spec.monthly]


def delete_after_days(retention_days: int) -> int | None:
    """Days after an index's creation when the policy deletes it (None: never).

    >>> delete_after_days(400), delete_after_days(0)
    (431, None)
    """
    days = _checked(retention_days)
    return days + MONTH_SLACK_DAYS if days else None


def policy_marker(retention_days: int) -> str:
    """What the installed policy says, in words: compared at start to decide on an update.

    >>> policy_marker(400)
    'thermowatch retention r1: delete monthly indices 431 days after creation (retention_days=400)'
    >>> policy_marker(0)
    'thermowatch retention r1: keep monthly indices for ever (retention_days=0)'
    """
    after = delete_after_days(retention_days)
    what = (
        f"delete monthly indices {after} days after creation"
        if after
        else "keep monthly indices for ever"
    )
    return f"thermowatch retention r{POLICY_REVISION}: {what} (retention_days={retention_days})"


def ilm_policy(retention_days: int) -> dict[str, Any]:
    """Elasticsearch ILM policy (``PUT _ilm/policy/<name>``).

    Without rollover, ILM counts ``min_age`` from the index's creation. The
    marker sits in ``_meta``, which ILM stores and returns.

    >>> p = ilm_policy(90)["policy"]
    >>> p["phases"]["delete"], p["_meta"]["retention_days"]
    ({'min_age': '121d', 'actions': {'delete': {}}}, 90)
    >>> sorted(ilm_policy(0)["policy"]["phases"])
    ['hot']
    """
    after = delete_after_days(retention_days)
    phases: dict[str, Any] = {"hot": {"min_age": "0ms", "actions": {}}}
    if after:
        phases["delete"] = {"min_age": f"{after}d", "actions": {"delete": {}}}
    return {
        "policy": {
            "_meta": {
                "managed_by": "thermowatch",
                "description": policy_marker(retention_days),
                "retention_days": retention_days,
            },
            "phases": phases,
        }
    }


def ism_policy(names: IndexNames, retention_days: int) -> dict[str, Any]:
    """OpenSearch ISM policy (``PUT _plugins/_ism/policies/<name>``).

    Its ``ism_template`` makes ISM manage every new index matching the monthly
    patterns (the way ISM attaches a policy since index templates' ``policy_id``
    setting was removed); indices that existed before are attached by the
    processor with the add API. ISM has no ``_meta``: the marker is the
    ``description``.

    >>> p = ism_policy(IndexNames("tw-"), 90)["policy"]
    >>> p["default_state"], p["ism_template"][0]["index_patterns"]
    ('hot', ['tw-readings-*', 'tw-agg1m-*'])
    >>> p["states"][0]["transitions"]
    [{'state_name': 'delete', 'conditions': {'min_index_age': '121d'}}]
    >>> p["states"][1]["actions"]
    [{'delete': {}}]
    >>> [s["transitions"] for s in ism_policy(IndexNames("tw-"), 0)["policy"]["states"]]
    [[]]
    """
    after = delete_after_days(retention_days)
    hot: dict[str, Any] = {"name": "hot", "actions": [], "transitions": []}
    states = [hot]
    if after:
        hot["transitions"] = [
            {"state_name": "delete", "conditions": {"min_index_age": f"{after}d"}}
        ]
        states.append({"name": "delete", "actions": [{"delete": {}}], "transitions": []})
    return {
        "policy": {
            "description": policy_marker(retention_days),
            "default_state": "hot",
            "states": states,
            # Above any catch-all template, unique per prefix like the index templates.
            "ism_template": [
                {"index_patterns": managed_patterns(names), "priority": 200 + len(names.prefix)}
            ],
        }
    }


def replica_problem(replicas: int, data_nodes: int) -> str | None:
    """Why ``replicas`` cannot all be placed on ``data_nodes`` nodes (None: they can).

    A replica never shares a node with its primary: on one node any replica
    stays unassigned and the cluster is yellow, never green.

    >>> replica_problem(0, 1) is None, replica_problem(1, 3) is None
    (True, True)
    >>> print(replica_problem(1, 1))
    search.replicas: 1 need 2 data nodes or more, the cluster has 1 (indices stay yellow)
    """
    if replicas + 1 <= data_nodes:
        return None
    return (
        f"search.replicas: {replicas} need {replicas + 1} data nodes or more, "
        f"the cluster has {data_nodes} (indices stay yellow)"
    )
