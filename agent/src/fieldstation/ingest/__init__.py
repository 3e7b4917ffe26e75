"""File-drop ingestion: logger exports and trend reports dropped into the inbox (SFTP, HTTP upload) become readings.

A parser is a module of this package with one function::

    def parse(stream: BinaryIO, ctx: FileContext, report: Report) -> Iterator[Reading]

It reads the file as a stream (constant memory, whatever the size), as text through
``fieldstation.ingest.text.open_text`` (in the encoding the inbox chose for the file), yields readings, and counts
in ``report`` what it read and what it skipped and why. A file it cannot take at all raises :class:`Rejected` with
a one-line reason. Parsers never write anywhere: the inbox (``fieldstation.ingest.inbox``) spools their readings,
moves the file to ``archive/`` or ``rejected/`` and writes the report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


class Rejected(Exception):
    """The whole file is unusable; the message is the one-line reason written next to it in ``rejected/``."""


@dataclass(frozen=True)
class FileContext:
    """What the inbox knows about a file before reading it."""

    #: The path below the inbox: ``<source>/<client>/<campaign>/<serial>/<name>`` for loggers,
    #: ``<source>/<name>`` for uploads.
    relpath: PurePosixPath
    #: The site's time zone (inventory), for formats whose timestamps carry none (Siemens, generic CSV).
    timezone: str = "UTC"
    #: Options of the source from the agent's settings (a generic CSV's column mapping, a client override).
    options: dict[str, Any] = field(default_factory=dict)
    #: The codec the file is read with (``fieldstation.ingest.text.examine`` chooses it; UTF-8 by default).
    encoding: str = "utf-8-sig"

    @property
    def source(self) -> str:
        return self.relpath.parts[0]

    @property
    def name(self) -> str:
        return self.relpath.name

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders between the source and the file: (client, campaign, serial) for MV2 loggers."""
        return self.relpath.parts[1:-1]


@dataclass
class Report:
    """What happened to one file, written as JSON next to it in archive/ or rejected/."""

    file: str = ""
    sha256: str = ""
    parser: str = ""
    encoding: str = ""
    rows_read: int = 0
    points: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_time: str | None = None
    last_time: str | None = None
    result: str = "ingested"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count a skipped row (or value) under a short reason: ``clock reset``, ``No Data``, ``truncated line``."""
        self.skipped[reason] += n

    def to_json(self) -> str:
        data = {**self.__dict__, "skipped": dict(sorted(self.skipped.items())), "rows_skipped": self.skipped.total()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
