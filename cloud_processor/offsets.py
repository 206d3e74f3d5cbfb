"""Which Kafka offsets may be committed: the processor's bookkeeping (pure).

An offset becomes *pending* once every document of the records before it is
stored and their alert changes are published (:meth:`Offsets.written`). It is
committed later, but never past a reading the rules still hold for
reordering (:meth:`Offsets.floor`): that reading's alerts are not decided
yet, and a crash after such a commit would lose them. In replay mode nothing
is committed; the replay ends once every partition reached its end offset.

>>> from aiokafka.structs import TopicPartition
>>> tp = TopicPartition("t.telemetry", 0)
>>> book = Offsets()
>>> book.hold(("d1", 3), tp, 11)      # seq 3 of d1 waits for seq 2
>>> book.written({tp: 13})            # records up to offset 12 are stored
>>> floor = book.floor(lambda device, seq: True)
>>> floor
{TopicPartition(topic='t.telemetry', partition=0): 11}
>>> book.to_commit({tp}, floor)
{TopicPartition(topic='t.telemetry', partition=0): 11}
>>> book.committed({tp: 11}); book.pending    # 13 waits for the next commit
{TopicPartition(topic='t.telemetry', partition=0): 13}
>>> book.floor(lambda device, seq: False)     # seq 3 was judged meanwhile
{}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from cloud_processor.ports import Partition

__all__ = ["Offsets"]


class Offsets:
    """Pending offsets, readings held for reordering, consumed positions, replay end."""

    def __init__(self) -> None:
        #: Per partition, the offset after the last record whose documents are stored.
        self.pending: dict[Partition, int] = {}
        #: (device_id, seq) -> (partition, offset) of readings the rules hold
        #: for reordering: no offset past one of them is committed.
        self._held_at: dict[tuple[str, int], tuple[Partition, int]] = {}
        #: Per partition, the offset after the last record consumed.
        self.positions: dict[Partition, int] = {}
        #: Replay only: per partition, the end offset to reach.
        self.replay_end: dict[Partition, int] = {}

    def consumed(self, tp: Partition, next_offset: int) -> None:
        """Records of ``tp`` before ``next_offset`` were read."""
        self.positions[tp] = next_offset

    def lag(self, tp: Partition, highwater: int | None) -> int | None:
        """Records of ``tp`` behind its end, when both are known."""
        pos = self.positions.get(tp)
        if highwater is None or pos is None:
            return None
        return max(highwater - pos, 0)

    def hold(self, reading: tuple[str, int], tp: Partition, offset: int) -> None:
        """The rules hold ``reading`` (device_id, seq), read at ``tp``/``offset``."""
        self._held_at[reading] = (tp, offset)

    def release_all(self) -> None:
        """The rules judged every held reading (end of a replay)."""
        self._held_at.clear()

    def written(self, offsets: Mapping[Partition, int]) -> None:
        """The documents of these records are stored: their offsets may be committed."""
        self.pending.update(offsets)

    def floor(self, is_held: Callable[[str, int], bool]) -> dict[Partition, int]:
        """Per partition, the offset of its oldest reading still held
        (``is_held(device_id, seq)``); forgets the readings judged since."""
        floor: dict[Partition, int] = {}
        for key, (tp, offset) in list(self._held_at.items()):
            if not is_held(*key):
                del self._held_at[key]
            elif offset < floor.get(tp, offset + 1):
                floor[tp] = offset
        return floor

    def to_commit(
        self, assigned: Collection[Partition], floor: Mapping[Partition, int]
    ) -> dict[Partition, int]:
        """What to commit now: the pending offsets of ``assigned``, capped by ``floor``."""
        return {
            tp: min(off, floor.get(tp, off)) for tp, off in self.pending.items() if tp in assigned
        }

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """``offsets`` are committed; a partition capped by a held reading keeps
        its pending offset for the next commit."""
        self.pending = {tp: off for tp, off in self.pending.items() if off > offsets.get(tp, off)}

    def revoke(self, revoked: Iterable[Partition]) -> None:
        """The group took ``revoked`` away: forget their offsets and held readings.

        Readings held for them stay held by the rules and are judged at expiry;
        the new owner re-reads them too (the commit stopped before them): the
        same alert ids, so at worst a repeated webhook.
        """
        gone = set(revoked)
        for tp in gone:
            self.pending.pop(tp, None)
            self.positions.pop(tp, None)
        self._held_at = {k: v for k, v in self._held_at.items() if v[0] not in gone}

    def replay_done(self) -> bool:
        """Every replayed partition has been read up to its end offset."""
        return all(self.positions.get(tp, -1) >= end for tp, end in self.replay_end.items())
