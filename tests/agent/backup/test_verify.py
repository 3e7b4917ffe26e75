"""`fieldstation backup verify`, the restore drill: passes on a good backup with writes after it, catches damage."""

from __future__ import annotations

import time

import pytest

from fieldstation.backup.verify import compare
from fieldstation.influxql import Influx
from harness.samba import requires_samba

from .conftest import DB, Station

pytestmark = requires_samba


def test_the_drill_passes_with_writes_after_the_backup_and_catches_a_corrupted_file(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    assert station.cli("backup", "--agent-settings", str(station.agent)) == 0
    # Writes after the backup, even late ones stamped before it (a spool catching up), are not a failure.
    Influx(station.influxd.url).write([f"temperature,sensor=late value=1 {time.time_ns() - 10**12}",
                                       f"temperature,sensor=t1 value=2 {time.time_ns()}"], DB, "raw")
    assert station.cli("backup", "verify", "--agent-settings", str(station.agent)) == 0
    out = capsys.readouterr().out
    assert "checksums:" in out and "restore drill passed" in out
    assert {r["name"] for r in station.influxd.rows("SHOW DATABASES", DB)} == {DB}  # the scratch copy is dropped

    host_dir = next(station.samba.dir().iterdir())
    archive = next(host_dir.iterdir()) / "configs" / "nut.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert station.cli("backup", "verify", "--agent-settings", str(station.agent)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum mismatch in configs/nut.tar.gz" in err
    drills = [ln for ln in station.readings() if ",kind=restore_drill " in ln]
    assert [ln.split(" ")[1].split(",")[0] for ln in drills] == ["ok=true", "ok=false"]


def test_compare_finds_lost_points_and_a_different_last_point() -> None:
    backed_up = {"raw": {"t": {"counts": {"value": 10}, "last": 100}, "gone": {"counts": {"v": 1}, "last": 5}}}
    restored = {"raw": {"t": {"counts": {"value": 9}, "last": 90}}}
    problems = compare("db", backed_up, restored, None)
    assert problems == ["db.raw.t: restored copy has fewer points than backed up ({'value': 10})",
                        "db.raw.t: last point 90 restored, 100 backed up",
                        "db.raw.gone: missing from the restored copy"]
    live = {"raw": {"t": {"counts": {"value": 12}, "last": 120}}}
    assert compare("db", {}, restored, live) == []  # the live database has more: writes after the backup
    assert compare("db", {}, live, restored) == ["db.raw.t: the backup holds points the live database lacks "
                                                "({'value': 12})"]


def test_a_drill_of_a_stale_backup_fails_with_one_line(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    assert station.cli("backup", "--no-record") == 0
    station.write_settings(verify_max_age_h=1e-6)
    assert station.cli("backup", "verify", "--no-record") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "restore drill failed: latest backup is 0 h old (limit 1e-06 h)" in err


def test_a_signed_backup_changed_on_the_nas_is_refused(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """Whoever can write to the NAS could swap a file and its checksum in the manifest; the signature catches it."""
    import hashlib
    import json

    signed = station.samba.credentials_file(station.root / "signed.credentials", signing_key="k" * 24)
    station.write_settings(credentials=str(signed))
    assert station.cli("backup", "--no-record") == 0
    assert station.cli("backup", "verify", "--no-record") == 0
    assert "manifest: signature good" in capsys.readouterr().out

    folder = next(next(station.samba.dir().iterdir()).iterdir())
    archive = folder / "configs" / "fieldstation.tar.gz"
    archive.write_bytes(b"planted")  # not even a tar: never reached, the manifest is refused first
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["configs/fieldstation.tar.gz"] = {"sha256": hashlib.sha256(b"planted").hexdigest(), "bytes": 7}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert station.cli("backup", "verify", "--no-record") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json.hmac: does not match the manifest" in err

    (folder / "manifest.json.hmac").unlink()
    assert station.cli("backup", "verify", "--no-record") == 1
    assert "missing: the backup is unsigned, and a signing key is set" in capsys.readouterr().err
