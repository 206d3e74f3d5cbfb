"""Source: the seqs the edge outboxes allocated, and those still waiting in them.

Read from each agent's outbox file after (or while) it runs: what the edge
promised to deliver is the input exact accounting starts from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["allocated_from_outboxes", "pending_in_outboxes"]


def allocated_from_outboxes(outboxes: Mapping[str, Path]) -> dict[str, range]:
    """``device -> range(next_seq)`` read from each agent's outbox database.

    Exact for a stopped fleet, and a consistent snapshot of a running one: the
    outbox is in WAL mode and allocates seqs in the same transaction that
    stores their readings, so every seq below the ``next_seq`` read here is
    durably in the outbox (on its way, or already delivered).
    """
    from edge_agent.outbox import read_next_seq

    return {device: range(read_next_seq(path)) for device, path in outboxes.items()}


def pending_in_outboxes(outboxes: Mapping[str, Path]) -> dict[str, set[int]]:
    """``device -> seqs`` still in each outbox: not (yet) acknowledged by the broker.

    Where a missing reading is tells which hop has it: still here means the
    edge has not delivered it (yet); gone means the broker acknowledged it.
    """
    from edge_agent.outbox import read_pending_seqs

    return {device: read_pending_seqs(path) for device, path in outboxes.items()}
