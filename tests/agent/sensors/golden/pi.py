"""Golden cases of the pi driver: two snapshots of a Pi's files, 10 s apart, → ``expected.lp``.

A case holds:

- ``options.json``: the sensor's options;
- ``after/``: a root tree (``proc/stat``, ``proc/meminfo``, ``sys/class/thermal/thermal_zone0/temp``, …) as the
  read being decoded saw it;
- ``before/`` (optional): the tree of the previous read (``proc/stat`` and ``proc/diskstats`` suffice), for
  ``cpu_percent`` and ``sd_bytes_written``; without it the case is a first read;
- ``vcgencmd.txt`` (optional): what ``vcgencmd get_throttled`` printed;
- ``statvfs.json`` (optional): ``{mount: {frsize, blocks, bfree, bavail}}`` as ``os.statvfs`` returned them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fieldstation.sensors.pi import Pi, Snapshot, StatVfs, decode, read_snapshot


def snapshot(case: Path, tree: str, sensor: Pi) -> Snapshot | None:
    root = case / tree
    if not root.is_dir():
        return None
    snap = read_snapshot(str(root), sensor.thermal_zone)  # the files only: statvfs and vcgencmd come from the case
    if tree != "after":
        return snap
    vcgencmd = case / "vcgencmd.txt"
    statvfs = case / "statvfs.json"
    return replace(
        snap,
        throttled=vcgencmd.read_text() if vcgencmd.exists() else None,
        statvfs={m: StatVfs(**v) for m, v in json.loads(statvfs.read_text()).items()} if statvfs.exists() else {},
    )


def run(case: Path) -> tuple[Pi, Any]:
    sensor = Pi(**json.loads((case / "options.json").read_text()))
    after = snapshot(case, "after", sensor)
    assert after is not None, f"{case}: no after/ tree"
    return sensor, decode(snapshot(case, "before", sensor), after, sensor.disk)
