"""A power cut under the running agent: what the disk holds afterwards includes every acknowledged reading.

The agent's spool lives on an ext4 image on a loop device. The agent is frozen (SIGSTOP) between two commits,
the image file is copied (the device's blocks: the page cache of the filesystem above, lost in a power cut, is
not in it), ``e2fsck`` replays the journal, and the spool of the copy is compared with what the agent had
acknowledged: what another process sees through SQLite on the live filesystem while the agent is frozen (a
commit becomes visible only after its fsync). A control run without fsync must lose readings in the same check.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fieldstation.influxd import free_port
from harness.agent import fieldstation_cmd, wait_for
from harness.blockdev import LoopFs, loop_ext4, needs_root, power_cut_copy

pytestmark = [pytest.mark.slow, needs_root]

#: The control: the same agent with SQLite told not to fsync (test only; the product has no such setting).
NO_FSYNC = """
import sys
from fieldstation import spool
_db = spool.Spool._db
def _no_fsync(self):
    new = getattr(self._local, "db", None) is None
    db = _db(self)
    if new:
        db.execute("PRAGMA synchronous=OFF")
    return db
spool.Spool._db = _no_fsync
from fieldstation.cli import main
sys.exit(main(sys.argv[1:]))
"""


def spool_lines(path: Path, *, live: bool) -> list[str]:
    """The points of a spool. ``live``: read-only beside the frozen agent (no recovery, no checkpoint on close)."""
    uri = f"file:{path}?mode=ro" if live else f"file:{path}"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return [line for (line,) in db.execute("SELECT line FROM points ORDER BY id")]
    except sqlite3.DatabaseError:
        return []  # no usable spool on the disk at all: everything acknowledged is missing


def missing_after_power_cut(fs: LoopFs, tmp_path: Path, fsync: bool) -> tuple[list[str], list[str]]:
    """Run the agent (100 readings/s, its only sink down), cut the power; (acknowledged, missing from the disk)."""
    (tmp_path / "config.py").write_text(
        "from fieldstation.sensors.simulated import Simulated\n"
        "sensors = [Simulated(name=f's{i}', interval=0.1, unit='K') for i in range(10)]\n"
    )
    spool = fs.mount / "state" / "spool.db"
    (tmp_path / "agent.toml").write_text(
        f'config = "{tmp_path / "config.py"}"\n'
        f'state_file = "{tmp_path / "state.json"}"\n'
        f'[spool]\npath = "{spool}"\n'
        # A sink that is down: every window must be spooled before it is acknowledged.
        f'[[sinks]]\nname = "down"\nurl = "http://127.0.0.1:{free_port()}"\ntimeout = 1\n'
    )
    cmd = fieldstation_cmd("run", "--settings", str(tmp_path / "agent.toml"))
    if not fsync:
        cmd = [sys.executable, "-c", NO_FSYNC, *cmd[3:]]
    with (tmp_path / "agent.log").open("ab") as log:
        agent = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        wait_for(lambda: len(spool_lines(spool, live=True)) >= 500, 30, "500 points spooled")
        time.sleep(1)
        agent.send_signal(signal.SIGSTOP)
        acknowledged = spool_lines(spool, live=True)
        on_disk = spool_lines(power_cut_copy(fs, tmp_path) / "state" / "spool.db", live=False)
    finally:
        agent.kill()
        agent.wait(10)
    assert len(acknowledged) >= 500, (tmp_path / "agent.log").read_text()
    kept = set(on_disk)
    return acknowledged, [line for line in acknowledged if line not in kept]


def test_a_power_cut_loses_no_acknowledged_reading(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "data.img", tmp_path / "data") as fs:
        acknowledged, missing = missing_after_power_cut(fs, tmp_path, fsync=True)
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged readings lost"


def test_control_without_fsync_the_same_check_finds_readings_lost(tmp_path: Path) -> None:
    """Proves the check above can fail: without fsync the last seconds are only in the page cache."""
    with loop_ext4(tmp_path / "data.img", tmp_path / "data") as fs:
        acknowledged, missing = missing_after_power_cut(fs, tmp_path, fsync=False)
    assert missing, f"all {len(acknowledged)} acknowledged readings on the disk although nothing was fsynced"
