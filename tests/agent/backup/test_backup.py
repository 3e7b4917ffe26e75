"""`fieldstation backup` against a real smbd and a real InfluxDB: layout, manifest, rotation, the readings."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import random
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


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fieldstation backup: "), err
    return err


def test_an_unreachable_nas_fails_in_bounded_time_and_is_recorded(
    station: Station, silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    station.write_settings(port=silent_port, timeout=2.0)
    start = time.monotonic()
    assert station.cli("backup", "--agent-settings", str(station.agent)) == 1
    assert time.monotonic() - start < 60  # a bound, not a timing assert: no timeout would hang here
    assert f"cannot connect to 127.0.0.1:{silent_port}" in _one_line(capsys)
    (line,) = station.readings()
    assert line.startswith("fieldstation_backup,kind=backup ok=false,bytes=0i,duration_s=")


def test_a_wrong_password_is_one_clear_line(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    station.write_settings(credentials=str(station.samba.credentials_file(station.root / "bad", password="nope")))
    assert station.cli("backup", "--no-record") == 1
    assert "logon failure (wrong user name or password)" in _one_line(capsys)


def test_a_full_share_fails_cleanly_and_keeps_the_previous_backup(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    station.write_settings(share=station.samba.url("small"))
    assert station.cli("backup", "--no-record") == 0
    small = station.samba.dir("small")
    host_dir = next(small.iterdir())
    (good,) = host_dir.iterdir()
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    capsys.readouterr()
    time.sleep(1.1)
    # Incompressible data bigger than the 4 MiB share: Samba really runs out of space mid-upload.
    (station.root / "etc/fieldstation/blob.bin").write_bytes(random.randbytes(6 << 20))
    assert station.cli("backup", "--no-record") == 1
    assert "share full" in _one_line(capsys)
    assert list(host_dir.iterdir()) == [good]  # no half backup, complete-looking or not
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before


def test_sd_card_image_after_a_free_space_check(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    card = station.root / "mmcblk0"  # a regular file stands in for the block device
    card.write_bytes(b"\x00" * (3 << 20) + b"bootfs rootfs" * 1000)
    assert station.cli("backup", "--no-record", "--sd-image", str(card)) == 0
    latest = sorted(next(station.samba.dir().iterdir()).iterdir())[-1]
    image = latest / "sdcard.img.gz"
    assert gzip.decompress(image.read_bytes()) == card.read_bytes()
    manifest = json.loads((latest / "manifest.json").read_text())
    assert manifest["files"]["sdcard.img.gz"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert "SD card" in capsys.readouterr().out

    station.write_settings(share=station.samba.url("small"))
    card.write_bytes(b"\x00" * (8 << 20))  # compresses to nothing, but the check counts the card's size
    assert station.cli("backup", "--no-record", "--sd-image", str(card)) == 1
    assert "the SD-card image may need up to" in _one_line(capsys)
    assert not any(p.is_file() for p in station.samba.dir("small").rglob("*"))  # nothing written
