"""`fieldstation backup` against a real smbd and a real InfluxDB: layout, manifest, rotation, the readings."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from fieldstation.backup.backup import STAMP, to_delete
from harness.samba import requires_samba

from .conftest import Station

pytestmark = requires_samba


def test_backups_land_complete_and_rotate(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    host_dir = None
    for _ in range(3):
        assert station.cli("backup", "--agent-settings", str(station.agent)) == 0
        host_dir = next(station.samba.dir().iterdir())
        time.sleep(1.1)  # backups are named by the second
    assert host_dir is not None
    names = sorted(p.name for p in host_dir.iterdir())
    assert len(names) == 2 and not any(n.startswith(".") for n in names)  # keep_last = 2, no partial left
    latest = host_dir / names[-1]
    manifest = json.loads((latest / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"grafana.db", "configs/fieldstation.tar.gz", "configs/nut.tar.gz"}
    assert any(f.startswith("influxdb/") and f.endswith(".manifest") for f in manifest["files"])
    assert manifest["hostname"] == host_dir.name and manifest["software"]["influxdb"].startswith("InfluxDB v1.")
    assert manifest["covers"]["from"] < manifest["covers"]["to"]
    counts = manifest["databases"]["fieldstation"]
    assert counts["raw"]["temperature"]["counts"] == {"value": 360, "ok": 360}
    assert counts["files"]["mv2"]["counts"]["label"] == 50
    out = capsys.readouterr().out
    assert "upload:" in out and "MB" in out and "rotation: deleted" in out  # progress, and what rotation did
    lines = station.readings()
    assert len(lines) == 3 and all(ln.startswith("fieldstation_backup,kind=backup ok=true,bytes=") for ln in lines)
    assert all(",duration_s=" in ln for ln in lines)


def test_rotation_keeps_the_newest_and_the_young() -> None:
    now = dt.datetime(2026, 11, 30, 3, tzinfo=dt.UTC)
    names = [(now - dt.timedelta(days=d)).strftime(STAMP) for d in range(10, -1, -1)]
    assert to_delete(names, now, 3, 0) == names[:-3]
    assert to_delete(names, now, 0, 5) == names[:5]  # 10…6 days old go, 5 days and younger stay
    assert to_delete(names, now, 2, 4) == names[:6]
    assert to_delete(names[:2], now, 0, 1) == names[:1]  # the newest is kept even when it is old
