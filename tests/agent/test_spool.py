"""The spool: committed means kept, per-sink cursors, trimming, the disk budget, a broken file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.spool import Spool, SpoolError

Open = Callable[..., Spool]


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[Open]:
    """Opens spools at tmp_path/spool.db and closes them all after the test."""
    opened: list[Spool] = []

    def make(**kw: Any) -> Spool:
        opened.append(Spool(tmp_path / "spool.db", **kw))
        return opened[-1]

    yield make
    for spool in opened:
        spool.close()


def lines(n: int, start: int = 0, pad: int = 0) -> list[str]:
    return [f"m,sensor=s{'x' * pad} value={i}.0 {1_700_000_000_000_000_000 + i}" for i in range(start, start + n)]


def test_each_sink_reads_past_its_own_cursor(open_spool: Open) -> None:
    spool = open_spool(sinks=["local", "central"])
    spool.append(lines(10))
    first = spool.fetch("local", 4)
    assert [line for _, line in first] == lines(4)
    spool.advance("local", first[-1][0])
    assert [line for _, line in spool.fetch("local", 100)] == lines(6, 4)
    assert [line for _, line in spool.fetch("central", 100)] == lines(10)
    assert spool.backlog("local").depth == 6 and spool.backlog("central").depth == 10


def test_trim_deletes_only_what_every_sink_confirmed(open_spool: Open) -> None:
    spool = open_spool(sinks=["a", "b"])
    spool.append(lines(10))
    spool.advance("a", 10)
    spool.advance("b", 3)
    spool.trim()
    assert [line for _, line in spool.fetch("b", 100)] == lines(7, 3)
    spool.advance("b", 10)
    spool.trim()
    assert spool.fetch("a", 100) == [] and spool.fetch("b", 100) == []


def test_points_and_cursors_survive_reopening(open_spool: Open) -> None:
    spool = open_spool(sinks=["local"])
    spool.append(lines(5))
    spool.advance("local", 2)
    spool.close()
    again = open_spool(sinks=["local"])
    assert [line for _, line in again.fetch("local", 100)] == lines(3, 2)
    # Ids keep growing after a restart: a cursor never points at a reused id.
    assert again.append(lines(1, 5)) == 6


def test_a_new_sink_starts_with_what_is_still_spooled(open_spool: Open) -> None:
    spool = open_spool(sinks=["local"])
    spool.append(lines(5))
    spool.advance("local", 5)
    spool.trim()
    spool.append(lines(2, 5))
    spool.close()
    grown = open_spool(sinks=["local", "central"])
    assert [line for _, line in grown.fetch("central", 100)] == lines(2, 5)


def test_over_the_disk_budget_the_oldest_points_are_dropped_and_counted(
    open_spool: Open, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 1 << 20
    spool = open_spool(max_bytes=budget, sinks=["dead"])
    for batch in range(10):
        spool.append(lines(2000, batch * 2000, pad=100))  # ~3.5 MB in all, never sent
    with caplog.at_level(logging.ERROR):
        dropped = spool.trim()
    assert dropped > 0
    assert spool.counter("dropped") == dropped
    assert spool.used_bytes() <= budget
    assert spool.file_bytes() <= budget  # the files themselves, WAL and all, not just the live pages
    kept = spool.fetch("dead", 100_000)
    assert len(kept) == 20_000 - dropped
    assert kept[-1][1] == lines(1, 19_999, pad=100)[0]  # the newest are kept
    assert kept[0][0] == dropped + 1  # exactly the oldest went
    assert "over its disk budget" in caplog.text


def test_a_file_that_is_not_a_spool_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolError, match="not a usable spool"):
        Spool(path, sinks=["local"])
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_an_unwritable_place_gives_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match=r"file/sub/spool.db: cannot open the spool: "):
        Spool(blocker / "sub" / "spool.db")


def test_full_database_reports_the_real_error_and_keeps_what_was_committed(open_spool: Open) -> None:
    spool = open_spool(sinks=["influx"])
    spool.append(["m v=1i 1"])
    db = spool._db()
    # A full drive, at SQLite's narrowest boundary: no page may be added.
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(Exception, match="full"):
        spool.append(["m v=2i 2 " + "x" * 100_000])
    assert [line for _, line in spool.fetch("influx", 10)] == ["m v=1i 1"]


def test_the_budget_counts_the_wal(open_spool: Open, tmp_path: Path) -> None:
    spool = open_spool(sinks=["dead"])
    spool.append(lines(2000, pad=100))
    wal = (tmp_path / "spool.db-wal").stat().st_size
    assert wal > 0
    db = spool._db()
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    assert spool.used_bytes() == pages * db.execute("PRAGMA page_size").fetchone()[0] + wal


def test_a_window_some_sinks_confirmed_moves_only_their_cursors(open_spool: Open) -> None:
    spool = open_spool(sinks=["up", "down"])
    assert spool.caught_up("up") and spool.caught_up("down")
    spool.append(lines(3), confirmed=["up"])
    assert spool.caught_up("up") and not spool.caught_up("down")
    assert spool.fetch("up", 100) == []
    assert [line for _, line in spool.fetch("down", 100)] == lines(3)


def test_a_confirmed_window_does_not_skip_what_the_sink_still_had_pending(open_spool: Open) -> None:
    spool = open_spool(sinks=["up", "down"])
    spool.append(lines(2))  # e.g. an inbox file, appended between the delivery and the commit
    spool.append(lines(3, 2), confirmed=["up"])
    # "up" had not sent the first two: its cursor stays, and it resends the window too (idempotent).
    assert [line for _, line in spool.fetch("up", 100)] == lines(5)


def test_trim_with_nothing_to_delete_writes_nothing(open_spool: Open, tmp_path: Path) -> None:
    spool = open_spool(sinks=["local"])
    spool.append(lines(10), confirmed=["local"])
    spool.trim()
    files = [tmp_path / "spool.db", tmp_path / "spool.db-wal"]
    before = [(f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    for _ in range(3):
        spool.trim()
        assert spool.caught_up("local")
    assert [(f.stat().st_size, f.stat().st_mtime_ns) for f in files] == before


def test_a_queued_file_is_taken_whole_in_order_and_odd_files_are_set_aside(tmp_path: Path) -> None:
    from fieldstation.spool import QUEUE_MAX_BYTES, SpoolError, enqueue, queue_dir

    path = tmp_path / "spool.db"
    with pytest.raises(SpoolError, match="queue folder is missing"):
        enqueue(path, ["m value=1 1"], "backup")
    queue_dir(path).mkdir()
    first = enqueue(path, ["m value=1 1", "m value=2 2"], "backup")
    enqueue(path, ["m value=3 3"], "restore_drill")
    assert first.stat().st_mode & 0o777 == 0o644  # the agent reads what root wrote
    (queue_dir(path) / ".half.lp.tmp").write_text("m value=9 9\n")  # one being written: never taken
    (queue_dir(path) / "huge.lp").write_bytes(b"m value=1 1\n" * (QUEUE_MAX_BYTES // 12 + 1))
    spool = Spool(path, sinks=["local"])
    try:
        assert spool.take_queued() == 3
        assert [line for _, line in spool.fetch("local", 10)] == ["m value=1 1", "m value=2 2", "m value=3 3"]
        assert sorted(p.name for p in queue_dir(path).iterdir()) == [".half.lp.tmp", "huge.lp.rejected"]
        assert spool.take_queued() == 0  # nothing retried
    finally:
        spool.close()
