"""The crash-safe spool: every reading is committed to SQLite before it counts as acknowledged.

One table of line-protocol points with ever-increasing ids (``AUTOINCREMENT`` never reuses an id), and
one cursor per sink: the id of the last point that sink confirmed. Points every configured sink has
confirmed are deleted. Beyond the disk budget the oldest points are dropped and counted, loudly.
WAL mode with ``synchronous=FULL``: a commit survives a killed process and a power cut.
See docs/decisions/0001-store-and-forward.md.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fieldstation.spool")

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    line    TEXT    NOT NULL,
    spooled INTEGER NOT NULL            -- wall clock, ns, when committed
);
CREATE TABLE IF NOT EXISTS cursors (
    sink         TEXT PRIMARY KEY,
    last_id      INTEGER NOT NULL,
    last_success INTEGER                -- wall clock, ns, of the last confirmed write
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    sink: str
    depth: int
    oldest_age_s: float
    last_success_ns: int | None


class SpoolError(Exception):
    """The spool file cannot be used; the message is one line naming it."""


class Spool:
    """Thread-safe: each thread gets its own SQLite connection."""

    def __init__(self, path: Path, *, max_bytes: int = 1 << 30, sinks: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.sinks = list(sinks)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            db.executescript(SCHEMA)
        except (OSError, sqlite3.OperationalError) as exc:
            self.close()
            raise SpoolError(f"{self.path}: cannot open the spool: {exc}") from None
        except sqlite3.DatabaseError as exc:
            # Never "repair" by recreating: the file may hold the only copy of unsent readings.
            self.close()
            raise SpoolError(f"{self.path}: not a usable spool ({exc}); move it aside to start a new one") from None
        for sink in self.sinks:
            # A new sink starts with what is still spooled, not with all history.
            db.execute("INSERT OR IGNORE INTO cursors(sink, last_id) VALUES (?, ?)", (sink, self._min_id() - 1))

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            with self._all_lock:
                self._all.append(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection (call once the threads using the spool have stopped)."""
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    def _min_id(self) -> int:
        row = self._db().execute("SELECT min(id) FROM points").fetchone()
        return int(row[0]) if row[0] is not None else self._max_id() + 1

    def _max_id(self) -> int:
        # sqlite_sequence keeps the highest id ever issued, even after the rows are deleted.
        row = self._db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'points'").fetchone()
        return int(row[0]) if row else 0

    # -- writing -----------------------------------------------------------------------------------

    def append(self, lines: list[str]) -> int:
        """Commit points; when this returns they are acknowledged. Returns the last id."""
        if not lines:
            return self._max_id()
        now = time.time_ns()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO points(line, spooled) VALUES (?, ?)", ((ln, now) for ln in lines))
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may already have rolled back: a second error from ROLLBACK must not hide the
            # real one (ENOSPC, "database or disk is full").
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return self._max_id()

    # -- reading, per sink -------------------------------------------------------------------------

    def cursor(self, sink: str) -> int:
        row = self._db().execute("SELECT last_id FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def fetch(self, sink: str, limit: int) -> list[tuple[int, str]]:
        c = self.cursor(sink)
        rows = self._db().execute("SELECT id, line FROM points WHERE id > ? ORDER BY id LIMIT ?", (c, limit))
        return [(int(i), str(line)) for i, line in rows]

    def advance(self, sink: str, last_id: int) -> None:
        db = self._db()
        if not getattr(self._local, "relaxed", False):
            # A cursor lost in a power cut only means a resend, and resends are idempotent: no fsync per
            # confirmed batch on this thread's connection (points themselves are still committed with FULL).
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.relaxed = True
        db.execute(
            "UPDATE cursors SET last_id = max(last_id, ?), last_success = ? WHERE sink = ?",
            (last_id, time.time_ns(), sink),
        )

    def backlog(self, sink: str) -> SinkBacklog:
        db = self._db()
        row = db.execute("SELECT last_id, last_success FROM cursors WHERE sink = ?", (sink,)).fetchone()
        last_id, last_success = (int(row[0]), row[1]) if row else (0, None)
        depth, oldest = db.execute("SELECT count(*), min(spooled) FROM points WHERE id > ?", (last_id,)).fetchone()
        age = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest is not None else 0.0
        return SinkBacklog(sink, int(depth), age, last_success)

    def known_sinks(self) -> list[str]:
        return [str(r[0]) for r in self._db().execute("SELECT sink FROM cursors ORDER BY sink")]

    # -- housekeeping ------------------------------------------------------------------------------

    def counter(self, name: str) -> int:
        row = self._db().execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def used_bytes(self) -> int:
        db = self._db()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * page_size)

    def trim(self) -> int:
        """Delete what every sink confirmed; enforce the disk budget. Returns points dropped unsent."""
        db = self._db()
        if self.sinks:
            marks = ",".join("?" * len(self.sinks))
            low = db.execute(f"SELECT min(last_id) FROM cursors WHERE sink IN ({marks})", self.sinks).fetchone()[0]  # noqa: S608  (placeholders only)
            if low is not None:
                db.execute("DELETE FROM points WHERE id <= ?", (low,))
        used = self.used_bytes()
        if used <= self.max_bytes:
            return 0
        count = db.execute("SELECT count(*) FROM points").fetchone()[0]
        if not count:
            return 0
        # Free down to 90 % of the budget, estimating from the average point size.
        excess = used - int(self.max_bytes * 0.9)
        drop = min(count, max(1, excess * count // used))
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM points WHERE id IN (SELECT id FROM points ORDER BY id LIMIT ?)", (drop,))
        db.execute(
            "INSERT INTO counters(name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (drop,),
        )
        db.execute("COMMIT")
        log.error(
            "spool over its disk budget (%d of %d bytes): dropped the %d oldest unsent points (%d dropped in total)",
            used,
            self.max_bytes,
            drop,
            self.counter("dropped"),
        )
        return int(drop)
