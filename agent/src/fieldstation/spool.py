"""The crash-safe spool: what some sink has not confirmed is committed to SQLite, and only then acknowledged.

One table of line-protocol points with ever-increasing ids (``AUTOINCREMENT`` never reuses an id), and
one cursor per sink: the id of the last point that sink confirmed. A commit window every sink confirmed
never comes here (the agent delivers it first); one that some sink missed is appended with the cursors of
the sinks that did confirm it moved past it in the same transaction. Points every configured sink has
confirmed are deleted. Beyond the disk budget (database, WAL and all) the oldest points are dropped and
counted, loudly. WAL mode with ``synchronous=FULL``: a commit survives a killed process and a power cut.
See docs/decisions/0001-store-and-forward.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
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


#: Where a job running as another user than the agent's (a backup, as root) leaves its readings: one file of line
#: protocol each, taken into the spool by the agent (:meth:`Spool.take_queued`, every second). Opening the spool
#: itself would create SQLite's WAL files as that user, or need CAP_CHOWN to hand them back to the agent.
QUEUE_DIR = "incoming"
QUEUE_SUFFIX = ".lp"
QUEUE_MAX_BYTES = 1 << 20  # a job's result is a line or two; anything bigger is not ours


def queue_dir(spool_path: Path) -> Path:
    return Path(spool_path).parent / QUEUE_DIR


def enqueue(spool_path: Path, lines: list[str], name: str) -> Path:
    """Leave ``lines`` for the agent to spool: written whole under a dot-name, made readable by the agent, synced,
    then renamed into place, so the agent never takes half a file."""
    folder = queue_dir(spool_path)
    if not folder.is_dir():
        raise SpoolError(f"{folder}: the agent's queue folder is missing (the agent and the playbook create it)")
    final = folder / f"{time.time_ns()}-{name}{QUEUE_SUFFIX}"  # in time order by name
    tmp = folder / f".{final.name}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # not secret: a result; the folder itself is the agent's 0700
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SpoolError(f"{final}: cannot queue the reading: {exc.strerror or exc}") from None
    return final


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
            if db.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file (before WAL mode and the first table; on an existing one it would cost a write per
                # connection): pages freed by a drop go back to the filesystem, so the files, not just the live
                # pages, stay within the disk budget.
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # The WAL counts against the disk budget: checkpoint it before it outgrows an eighth of it
            # (1000 pages, SQLite's default, at most), and truncate it back to that size afterwards.
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            wal_pages = max(16, min(1000, self.max_bytes // page_size // 8))
            db.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
            db.execute(f"PRAGMA journal_size_limit={wal_pages * page_size}")
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

    def take_queued(self) -> int:
        """Spool the files other jobs queued (:func:`enqueue`), oldest first, and delete them; returns the lines
        taken. A file that cannot be read as text, or is over ``QUEUE_MAX_BYTES``, is renamed ``*.rejected`` with one
        log line, and never retried."""
        folder = queue_dir(self.path)
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix == QUEUE_SUFFIX and not p.name.startswith("."))
        except FileNotFoundError:
            return 0
        taken = 0
        for path in files:
            try:
                if path.stat().st_size > QUEUE_MAX_BYTES:
                    raise ValueError(f"over {QUEUE_MAX_BYTES} bytes")
                lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                log.error("%s: not taken into the spool (%s); renamed .rejected", path, exc)
                with contextlib.suppress(OSError):
                    path.replace(path.with_name(path.name + ".rejected"))
                continue
            if lines:
                self.append(lines)
            path.unlink()
            taken += len(lines)
        return taken

    def append(self, lines: list[str], confirmed: Iterable[str] = ()) -> int:
        """Commit points; when this returns they are acknowledged. Returns the last id.

        ``confirmed``: sinks that already confirmed these very points. A sink that had nothing else pending
        has its cursor moved past them in the same transaction (no resend, no write of its own); one that had
        (an inbox file appended meanwhile, a backlog) keeps its cursor and resends them, which is idempotent.
        """
        if not lines:
            return self._max_id()
        now = time.time_ns()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            before = self._max_id()
            db.executemany("INSERT INTO points(line, spooled) VALUES (?, ?)", ((ln, now) for ln in lines))
            after = self._max_id()
            db.executemany(
                "UPDATE cursors SET last_id = ?, last_success = ? WHERE sink = ? AND last_id >= ?",
                ((after, now, sink, before) for sink in confirmed),
            )
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may already have rolled back: a second error from ROLLBACK must not hide the
            # real one (ENOSPC, "database or disk is full").
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return self._max_id()

    # -- reading, per sink -------------------------------------------------------------------------

    def caught_up(self, sink: str) -> bool:
        """The sink confirmed every spooled point: new readings may go to it directly."""
        return self.cursor(sink) >= self._max_id()

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
        """Live pages of the database plus the WAL file: what the budget counts."""
        db = self._db()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * page_size) + self._wal_bytes()

    def file_bytes(self) -> int:
        """What the spool's files take on disk now (database, WAL, shared-memory index)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def trim(self) -> int:
        """Delete what every sink confirmed; enforce the disk budget. Returns points dropped unsent."""
        db = self._db()
        if self.sinks:
            marks = ",".join("?" * len(self.sinks))
            low = db.execute(f"SELECT min(last_id) FROM cursors WHERE sink IN ({marks})", self.sinks).fetchone()[0]  # noqa: S608  (placeholders only)
            oldest = db.execute("SELECT min(id) FROM points").fetchone()[0]
            # Only when there is something to delete: an empty DELETE still costs a write transaction.
            if low is not None and oldest is not None and oldest <= low:
                db.execute("DELETE FROM points WHERE id <= ?", (low,))
                db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
        used = self.used_bytes()
        if used <= self.max_bytes:
            return 0
        if self._wal_bytes():
            # Most of the excess may be WAL: fold it back into the database and truncate it first.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
        db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.error(
            "spool over its disk budget (%d of %d bytes): dropped the %d oldest unsent points (%d dropped in total)",
            used,
            self.max_bytes,
            drop,
            self.counter("dropped"),
        )
        return int(drop)
