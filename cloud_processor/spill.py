"""Compact records of idle devices in an SQLite file, off the Python heap.

:class:`~cloud_processor.rules.FleetRules` compacts a device idle for
``rules.device_idle_s`` into a record of a few hundred bytes (its rule state
and open alerts). Kept in a dict, that is still a few hundred bytes of memory
per idle device; with ``rules.state_spill_dir`` set, the records go to an
SQLite file in that directory instead (the standard library's ``sqlite3``:
one table, no journal, no fsync -- it is a cache of this process, never read
by another), and an idle device costs only its entry in the processor's
last-heard index. The file is created at the first compaction and deleted by
:meth:`SpillStore.close`; after a restart, state is rebuilt from the alerts
index as before (``Processor._restore``).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = SpillStore(tmp)
...     store["d1"] = b"record"
...     found = (store["d1"], "d1" in store, len(store), store.pop("d1"), "d1" in store)
...     store.close()
>>> found
(b'record', True, 1, b'record', False)
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

__all__ = ["SpillStore"]


class SpillStore(MutableMapping[str, bytes]):
    """device_id -> compact record, in an SQLite file in ``directory``."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._db: sqlite3.Connection | None = None
        self._path = ""

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            fd, path = tempfile.mkstemp(
                prefix="thermowatch-state-", suffix=".sqlite", dir=self._directory
            )
            os.close(fd)
            db = sqlite3.connect(path, isolation_level=None)  # autocommit
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(
                "CREATE TABLE records (device TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID"
            )
            self._db, self._path = db, path
        return self._db

    def __getitem__(self, device_id: str) -> bytes:
        row = (
            self._conn()
            .execute("SELECT record FROM records WHERE device = ?", (device_id,))
            .fetchone()
        )
        if row is None:
            raise KeyError(device_id)
        record: bytes = row[0]
        return record

    def __setitem__(self, device_id: str, record: bytes) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO records (device, record) VALUES (?, ?)", (device_id, record)
        )

    def __delitem__(self, device_id: str) -> None:
        if self._conn().execute("DELETE FROM records WHERE device = ?", (device_id,)).rowcount == 0:
            raise KeyError(device_id)

    def pop(self, device_id: str, *default: bytes) -> bytes:  # type: ignore[override]
        """Remove and return a record in one statement (``DELETE ... RETURNING``)."""
        row = (
            self._conn()
            .execute("DELETE FROM records WHERE device = ? RETURNING record", (device_id,))
            .fetchone()
        )
        if row is None:
            if default:
                return default[0]
            raise KeyError(device_id)
        record: bytes = row[0]
        return record

    def __iter__(self) -> Iterator[str]:
        return (row[0] for row in self._conn().execute("SELECT device FROM records"))

    def __len__(self) -> int:
        count: int = self._conn().execute("SELECT count(*) FROM records").fetchone()[0]
        return count

    def close(self) -> None:
        """Close and delete the file (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None
            Path(self._path).unlink(missing_ok=True)
