"""`fieldstation restore` into a fresh InfluxDB: identical data point for point, policies, Grafana and configs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fieldstation.influxd import LocalInfluxd
from harness.influx import start_influxd
from harness.samba import requires_samba

from .conftest import DB, Station

pytestmark = requires_samba


def everything(server: LocalInfluxd) -> dict[str, list[dict[str, object]]]:
    """Every point of every measurement in every policy, tags included."""
    out = {}
    for rp in ("raw", "rollup_1m", "rollup_1h", "files", "fieldstation_meta"):
        for res in server.query(f'SELECT * FROM "{DB}"."{rp}"./.*/ GROUP BY *', DB):
            for s in res.get("series", []):
                out[f"{rp}.{s['name']}.{sorted(s.get('tags', {}).items())}"] = s["values"]
    return out


def test_restore_into_a_fresh_influxdb_is_identical(station: Station, tmp_path: Path) -> None:
    assert station.cli("backup", "--no-record") == 0
    before = everything(station.influxd)
    assert sum(len(v) for v in before.values()) > 400
    fresh = start_influxd(tmp_path / "fresh", db=None)  # a new card: nothing in it yet
    try:
        # The configs and Grafana's database are gone too.
        (station.root / "etc/nut/ups.conf").unlink()
        (station.root / "grafana/grafana.db").unlink()
        station.write_settings(influx_url=fresh.url, influx_rpc=f"127.0.0.1:{fresh.rpc_port}")
        assert station.cli("restore", "latest") == 0
        assert everything(fresh) == before
        policies = {r["name"] for r in fresh.rows(f'SHOW RETENTION POLICIES ON "{DB}"', DB)}
        assert {"raw", "rollup_1m", "rollup_1h", "files", "fieldstation_meta"} <= policies
        assert {r["name"] for r in fresh.rows("SHOW DATABASES", DB)} == {DB}  # the staging copy is gone
        # Restoring again swaps over the now-live database without complaint (restore over existing data).
        assert station.cli("restore") == 0
        assert everything(fresh) == before
    finally:
        fresh.stop()
    assert (station.root / "etc/nut/ups.conf").read_text().startswith("[ups]")
    con = sqlite3.connect(station.root / "grafana/grafana.db")
    try:
        assert [r[0] for r in con.execute("SELECT title FROM dashboard ORDER BY id")] == ["Agent", "UPS"]
    finally:
        con.close()


def test_an_unknown_backup_name_is_one_line(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    assert station.cli("backup", "--no-record") == 0
    assert station.cli("restore", "20200101T000000Z") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "20200101T000000Z: no such complete backup" in err


def test_a_config_archive_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    """The NAS may be writable by others: a member naming a path out of its destination is refused, an absolute
    one lands inside the destination, and nothing is written elsewhere."""
    import io
    import tarfile

    from fieldstation.backup.influx import BackupError
    from fieldstation.backup.restore import restore_configs

    def archive(member: str) -> Path:
        src = tmp_path / "configs"
        src.mkdir(exist_ok=True)
        with tarfile.open(src / "fieldstation.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.size = 4
            info.mode = 0o4755  # setuid: dropped
            tar.addfile(info, io.BytesIO(b"evil"))
        return src

    dest = tmp_path / "etc" / "fieldstation"
    with pytest.raises(BackupError, match="cannot restore into"):
        restore_configs(archive("../escaped.conf"), {"fieldstation": dest}, say=lambda _: None)
    assert not (tmp_path / "etc" / "escaped.conf").exists()
    restore_configs(archive(str(tmp_path / "abs.conf")), {"fieldstation": dest}, say=lambda _: None)
    assert not (tmp_path / "abs.conf").exists()
    inside = dest / str(tmp_path / "abs.conf").lstrip("/")
    assert inside.read_bytes() == b"evil" and not inside.stat().st_mode & 0o4000
