"""The inbox: files dropped by SFTP or the upload endpoint become readings in the agent's spool.

Layout on the data drive (``[ingest]`` in agent.toml)::

    inbox/<source>/<…>/<file>       what arrives (SFTP writes here; <source> names a configured source)
    archive/<source>/<…>/<file>     ingested, with <file>.report.json beside it
    rejected/<source>/<…>/<file>    unusable, with <file>.error.txt (one line) and <file>.report.json

A file is taken only once it is complete: it was renamed into place from a ``.part`` name (seen by inotify, or by
two scans: the ``.part`` gone and the file there), taken at once; or its size and mtime have not changed for
``stable_seconds``. ``*.part`` files and dot-files are never taken.

Every file's sha256 is recorded in ``archive/.ledger.jsonl``: a file dropped again is archived with a
``duplicate`` report and writes nothing. An overlapping later export writes points with the same timestamps
and tags, which replace the earlier ones in InfluxDB: never duplicates.

Files are read twice as streams (hash, then parse), so memory stays constant whatever the size; readings go to the
spool in batches, and the log shows progress for large files.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import hashlib
import importlib
import json
import logging
import os
import select
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from fieldstation.ingest import FileContext, Rejected, Report
from fieldstation.ingest.text import check_encoding, examine, label
from fieldstation.reading import with_policy

log = logging.getLogger("fieldstation.ingest")

#: Source format → parser module in fieldstation.ingest.
PARSERS = {"mv2": "mv2", "siemens": "siemens", "alc": "alc", "csv": "generic_csv"}
#: Lines per spool commit: each commit is an fsync (tens of ms on an SD card), and a batch is ~3 MB of lines held.
BATCH = 20_000
MIN_TOKEN_LENGTH = 12  # = the playbook's preflight_min_password_length
PROGRESS_EVERY = 50_000


class SourceSettings(BaseModel):
    """One kind of file, in its own inbox folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Folder under inbox/ and the upload path.")
    format: Literal["mv2", "siemens", "alc", "csv"]
    token: SecretStr | None = Field(None, description="Bearer token for POST /upload/<name>; none: no HTTP upload.")
    max_bytes: int = Field(64 << 20, ge=1, description="Largest upload accepted.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Parser options (a CSV's column mapping); every format takes `encoding`, a Python codec name "
        "(default: UTF-8, falling back to cp1252 for a file that is not UTF-8).",
    )

    @field_validator("options")
    @classmethod
    def _encoding_is_known(cls, options: dict[str, Any]) -> dict[str, Any]:
        # Checked here, at load, rather than on the first file: a typo would otherwise reject every file.
        declared = options.get("encoding")
        if declared is None:
            return options
        if not isinstance(declared, str):
            raise ValueError(f"options.encoding must be a codec name such as 'cp1252' (got {declared!r})")
        return {**options, "encoding": check_encoding(declared)}

    @field_validator("token")
    @classmethod
    def _token_is_strong(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty token would match 'Authorization: Bearer ' from anyone on the LAN. The playbook's preflight
        # refuses short ones before they get here; this guards a hand-written agent.toml.
        if token is not None and len(token.get_secret_value().strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"an upload token needs {MIN_TOKEN_LENGTH} characters or more (omit it for no upload)")
        return token


class IngestSettings(BaseModel):
    """``[ingest]`` in agent.toml."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(Path("/srv/data"), description="inbox/, archive/, rejected/ and the ledger live here.")
    timezone: str = Field("UTC", description="The site's time zone, for files whose timestamps carry none.")
    stable_seconds: float = Field(5.0, ge=0, description="A file whose size has not changed for this long is taken.")
    poll_seconds: float = Field(2.0, gt=0, description="How often the inbox is scanned when inotify is unavailable.")
    retention_policy: str | None = Field(
        "files",
        description="InfluxDB retention policy of dropped files' points: their data is often older than raw points "
        "are kept (a logger's months-long export), so it goes to its own policy; None writes to the sink's.",
    )
    sources: list[SourceSettings] = Field(default_factory=list)
    client_databases: dict[str, str] = Field(
        default_factory=dict,
        description="Client folder → its own InfluxDB database (isolation: a read-only user per client). When set, "
        "a logger file of a client without a database is rejected.",
    )
    campaigns_stamp: Path | None = Field(
        None, description="Touched when a file lands in a new folder (fieldstation-grafana.path re-renders)."
    )

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[SourceSettings]) -> list[SourceSettings]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        return v

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    def source(self, name: str) -> SourceSettings | None:
        return next((s for s in self.sources if s.name == name), None)


def sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass
class Ledger:
    """sha256 → where the file was archived, appended to a JSON-lines file (one fsync per file)."""

    path: Path
    seen: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.seen[entry["sha256"]] = entry["file"]
                    except (ValueError, KeyError):
                        continue  # a torn last line after a power cut: the file is ingested again, harmlessly

    def add(self, sha: str, file: str) -> None:
        self.seen[sha] = file
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"sha256": sha, "file": file, "at": datetime.now(UTC).isoformat()}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def plain_reason(exc: Exception, parser: str) -> str:
    """One line a user can act on for an error no parser anticipated (Python's own words only as the detail)."""
    detail = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, csv.Error):
        return f"not readable as CSV: {detail}"
    if isinstance(exc, UnicodeError):
        return f"not readable as text: {detail}"
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or detail}"
    return f"the {parser or 'file'} parser failed ({type(exc).__name__}: {detail}): please report it with the file"


def _lines(parser: Any, stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[tuple[int, list[str]]]:
    """(time in ns, lines) from a parser module: its own ``lines`` when it has one (mv2 encodes each column's tags
    once), else ``parse`` with every reading's ``to_line``."""
    fast = getattr(parser, "lines", None)
    if fast is not None:
        rows: Iterator[tuple[int, list[str]]] = fast(stream, ctx, report)
        return rows
    return ((r.time_ns, [r.to_line()]) for r in parser.parse(stream, ctx, report))


def _move(src: Path, dest: Path) -> Path:
    """Move ``src`` to ``dest``; an existing file there gets a numbered name rather than being overwritten."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = dest, 1
    while candidate.exists():
        candidate = dest.with_name(f"{dest.stem}.{n}{dest.suffix}")
        n += 1
    shutil.move(str(src), candidate)
    return candidate


class Inbox:
    """Takes complete files from the inbox, parses them into the spool, archives or rejects them."""

    def __init__(self, settings: IngestSettings, append: Callable[[list[str]], object]) -> None:
        self.settings = settings
        self.append = append
        for d in (settings.inbox, settings.archive, settings.rejected):
            d.mkdir(parents=True, exist_ok=True)
        for s in settings.sources:
            (settings.inbox / s.name).mkdir(exist_ok=True)
        self.ledger = Ledger(settings.archive / ".ledger.jsonl")  # beside what it describes
        self._sizes: dict[Path, tuple[int, int, float]] = {}  # path → (size, mtime_ns, unchanged since)
        self._ready: set[Path] = set()  # renamed into place: complete at once
        self._parts: set[Path] = set()  # the *.part files of the last scan (for renames when inotify is missing)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports: list[Report] = []

    # -- one file ----------------------------------------------------------------------------------

    def ingest(self, path: Path, relpath: PurePosixPath) -> Report:
        """Parse one complete file into the spool; move it to archive/ or rejected/; return its report."""
        report = Report(file=str(relpath))
        source = self.settings.source(relpath.parts[0])
        try:
            if source is None:
                raise Rejected(f"no source {relpath.parts[0]!r} is configured (agent.toml [ingest] sources)")
            report.parser = source.format
            database = self._database(source, relpath)
            examined = examine(path, source.options.get("encoding"))
            report.sha256, report.encoding = examined.sha256, label(examined.encoding)
            if examined.note is not None:
                report.notes.append(examined.note)
            if examined.blank:
                raise Rejected("empty file (0 bytes)" if examined.size == 0 else "empty file: only blank lines")
            # The same bytes for another client's database are not a duplicate: the ledger keys on both.
            key = f"{report.sha256}:{database}" if database else report.sha256
            if key in self.ledger.seen:
                report.result = "duplicate"
                report.reason = f"same content as {self.ledger.seen[key]}: nothing written"
                return self._archive(path, relpath, report)
            ctx = FileContext(
                relpath=relpath, timezone=self.settings.timezone, options=source.options, encoding=examined.encoding
            )
            parser = importlib.import_module(f"fieldstation.ingest.{PARSERS[source.format]}")
            with path.open("rb") as f:
                self._write(_lines(parser, f, ctx, report), report, database)
            if report.points == 0:
                raise Rejected(f"no usable rows ({report.rows_read} read, {report.skipped.total()} skipped)")
        except Rejected as exc:
            report.result, report.reason = "rejected", str(exc)
            return self._reject(path, relpath, report)
        except Exception as exc:  # a parser's bug or an unreadable file: rejected with a reason, never retried
            report.result, report.reason = "rejected", plain_reason(exc, report.parser)
            return self._reject(path, relpath, report)
        self.ledger.add(key, str(relpath))
        new_folder = not (self.settings.archive / relpath).parent.exists()
        archived = self._archive(path, relpath, report)
        if new_folder and self.settings.campaigns_stamp is not None:
            # A new client or campaign: fieldstation-grafana.path re-renders, and its dashboard appears.
            with contextlib.suppress(OSError):
                self.settings.campaigns_stamp.touch()
        return archived

    def _database(self, source: SourceSettings, relpath: PurePosixPath) -> str | None:
        """A client's own database, when clients are isolated (mv2 sources: inbox/<source>/<client>/...)."""
        if source.format != "mv2" or not self.settings.client_databases:
            return None
        client = relpath.parts[1] if len(relpath.parts) > 2 else ""
        database = self.settings.client_databases.get(client)
        if database is None:
            raise Rejected(f"client {client!r} has no database of its own (inventory: influxdb_clients)")
        return database

    def _write(self, rows: Iterator[tuple[int, list[str]]], report: Report, database: str | None = None) -> None:
        batch: list[str] = []
        first = last = None
        route = with_policy("", self.settings.retention_policy, database)  # the prefix of every line, or ""
        for ns, lines in rows:
            batch.extend([route + line for line in lines] if route else lines)
            if first is None or last is None:
                first = last = ns
            elif ns < first:
                first = ns
            elif ns > last:
                last = ns
            if len(batch) >= BATCH:
                self.append(batch)
                report.points += len(batch)
                if report.points % PROGRESS_EVERY < len(batch):
                    log.info("%s: %d rows, %d points so far", report.file, report.rows_read, report.points)
                batch = []
        if batch:
            self.append(batch)
            report.points += len(batch)
        if first is not None and last is not None:
            report.first_time = datetime.fromtimestamp(first / 1e9, UTC).isoformat()
            report.last_time = datetime.fromtimestamp(last / 1e9, UTC).isoformat()

    def _archive(self, path: Path, relpath: PurePosixPath, report: Report) -> Report:
        dest = _move(path, self.settings.archive / relpath)
        dest.with_name(dest.name + ".report.json").write_text(report.to_json())
        log.info(
            "%s: %s, %d rows, %d points, %d skipped",
            relpath,
            report.result,
            report.rows_read,
            report.points,
            report.skipped.total(),
        )
        self.reports.append(report)
        return report

    def _reject(self, path: Path, relpath: PurePosixPath, report: Report) -> Report:
        dest = _move(path, self.settings.rejected / relpath)
        dest.with_name(dest.name + ".error.txt").write_text(f"{report.reason}\n")
        dest.with_name(dest.name + ".report.json").write_text(report.to_json())
        log.warning("%s: rejected: %s", relpath, report.reason)
        self.reports.append(report)
        return report

    # -- watching ----------------------------------------------------------------------------------

    def candidates(self, parts: set[Path] | None = None) -> Iterator[Path]:
        """Files that may be taken, in name order; the ``*.part`` files passed over are added to ``parts``."""
        for path in sorted(self.settings.inbox.rglob("*")):
            rel = path.relative_to(self.settings.inbox)
            if not path.is_file() or any(p.startswith(".") for p in rel.parts):
                continue
            if path.name.endswith(".part"):
                if parts is not None:
                    parts.add(path)
                continue
            yield path

    def scan(self, now: float | None = None) -> list[Report]:
        """One pass: ingest every complete file; returns their reports."""
        now = time.monotonic() if now is None else now
        done = []
        present = set()
        parts: set[Path] = set()
        for path in self.candidates(parts):
            present.add(path)
            part = path.with_name(path.name + ".part")
            if part in self._parts and not part.exists():
                # Its .part name was here at the last scan and is gone: renamed into place, so complete now
                # (what inotify's IN_MOVED_TO tells run(); this is the same without inotify, or between its waits).
                self._ready.add(path)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            seen = self._sizes.get(path)
            if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                self._sizes[path] = (st.st_size, st.st_mtime_ns, now)
                if path not in self._ready:
                    continue
            elif path not in self._ready and now - seen[2] < self.settings.stable_seconds:
                continue
            rel = PurePosixPath(path.relative_to(self.settings.inbox).as_posix())
            done.append(self.ingest(path, rel))
            self._sizes.pop(path, None)
            self._ready.discard(path)
        for gone in set(self._sizes) - present:
            del self._sizes[gone]
        self._parts = parts
        return done

    def run(self) -> None:
        """Scan until stopped: woken by inotify when it is available, else every poll_seconds."""
        watcher = _Inotify.create(self.settings.inbox)
        try:
            while not self._stop.is_set():
                try:
                    self.scan()
                except Exception:
                    log.exception("inbox scan failed")
                timeout = min(self.settings.poll_seconds, max(self.settings.stable_seconds / 2, 0.2))
                if watcher is None:
                    self._stop.wait(timeout)
                else:
                    self._ready |= watcher.wait(timeout)
        finally:
            if watcher is not None:
                watcher.close()

    def start(self) -> Inbox:
        self._thread = threading.Thread(target=self.run, name="inbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


# inotify(7) through libc: no dependency, and a polling fallback when it is missing.
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_ISDIR = 0x8, 0x80, 0x100, 0x40000000
_EVENT = struct.Struct("iIII")


class _Inotify:
    def __init__(self, libc: Any, fd: int, root: Path) -> None:
        self.libc, self.fd, self.root = libc, fd, root
        self.dirs: dict[int, Path] = {}
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            self._watch(d)

    @classmethod
    def create(cls, root: Path) -> _Inotify | None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        libc = ctypes.CDLL(name, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.info("inotify unavailable (errno %d): polling the inbox", ctypes.get_errno())
            return None
        return cls(libc, fd, root)

    def _watch(self, d: Path) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(d), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
        if wd >= 0:
            self.dirs[wd] = d

    def wait(self, timeout: float) -> set[Path]:
        """Files renamed into place since the last call (complete at once); new folders get watched."""
        ready: set[Path] = set()
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return ready
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return ready
        i = 0
        while i + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size : i + _EVENT.size + length].rstrip(b"\0").decode(errors="replace")
            i += _EVENT.size + length
            d = self.dirs.get(wd)
            if d is None or not name:
                continue
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                # mkdir -p makes the next level before this watch exists: watch what is already inside too.
                new = d / name
                for sub in [new, *(p for p in new.rglob("*") if p.is_dir())]:
                    self._watch(sub)
            elif mask & IN_MOVED_TO and not name.endswith(".part"):
                ready.add(d / name)
        return ready

    def close(self) -> None:
        os.close(self.fd)
