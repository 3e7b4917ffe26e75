"""doctor against a real InfluxDB (running, then stopped), a Grafana that is not there (none can run here), rendered
provisioning files, and throttling flags, fstab and /sys trees it is pointed at."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fieldstation.cli import main
from fieldstation.energy import EnergySettings
from fieldstation.grafana import render
from fieldstation.grafana.settings import Alerts, GrafanaSettings
from fieldstation.influxd import LocalInfluxd, free_port
from fieldstation.influxql import Influx
from fieldstation.loader import load_sensors
from fieldstation.tools import doctor

CONFIG = """\
from fieldstation.sensors.simulated import Simulated
sensors = {"Room": [Simulated(name="t1", unit="C"), Simulated(name="t2", unit="C")]}
"""


@pytest.fixture
def station(tmp_path: Path) -> dict[str, Path]:
    """agent.toml, config.py, an empty fstab and rendered provisioning under tmp_path."""
    config = tmp_path / "config.py"
    config.write_text(CONFIG)
    settings = tmp_path / "agent.toml"
    settings.write_text(
        f'config = "{config}"\nstate_file = "{tmp_path / "state.json"}"\n[spool]\npath = "{tmp_path / "spool.db"}"\n'
    )
    (tmp_path / "fstab").write_text("# nothing but /\n")
    gs = GrafanaSettings(alerts=Alerts(emails=["ops@example.org"]))
    render(tmp_path / "provisioning", load_sensors(config), gs, EnergySettings())
    return {
        "settings": settings,
        "fstab": tmp_path / "fstab",
        "provisioning": tmp_path / "provisioning",
    }


HINTS = {name: hint for name, _, hint in doctor.CHECKS}

def _doctor(
    server: LocalInfluxd,
    station: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> tuple[int, dict[str, Any]]:
    rc = main(
        ["doctor", "--json", "--settings", str(station["settings"]), "--url", server.url, "--db", "fieldstation",
         "--fstab", str(station["fstab"]), "--provisioning", str(station["provisioning"]),
         "--grafana-url", f"http://127.0.0.1:{free_port()}", "--timeout", "20", *extra]
    )  # fmt: skip
    results = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(results) == [name for name, _fn, _hint in doctor.CHECKS]
    return rc, results


def test_stale_sensor_warns_and_backups_are_read(
    influxd: LocalInfluxd, station: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time_ns()
    Influx(influxd.url).write(
        [
            f"fieldstation_sensor,sensor=t1,unit=count stale=false,reads=10i {now}",
            f"fieldstation_sensor,sensor=t2,unit=count stale=true,reads=0i {now}",
            f"fieldstation_backup,kind=backup ok=true,bytes=1000i,duration_s=2.5 {now - 3600 * 10**9}",
            f"fieldstation_backup,kind=restore_drill ok=false,bytes=0i,duration_s=1.0 {now - 7200 * 10**9}",
        ],
        "fieldstation",
    )
    rc, r = _doctor(influxd, station, capsys)
    assert r["influxdb"]["status"] == "OK"
    assert r["stale-sensors"]["status"] == "WARN"
    assert r["stale-sensors"]["detail"] == "stale: t2 (of 2 sensors)"
    assert r["stale-sensors"]["hint"]
    assert r["backup"]["status"] == "OK"
    assert r["restore-drill"]["status"] == "FAIL"
    assert "FAILED" in r["restore-drill"]["detail"]
    # Grafana cannot run here: the unreachable path for real; the provisioning files parse.
    assert r["grafana"]["status"] == "FAIL"
    assert "Connection refused" in r["grafana"]["detail"]
    assert r["provisioning"]["status"] == "OK"
    assert (
        r["provisioning"]["detail"]
        == "2 dashboard files parse (set FIELDSTATION_GRAFANA_TOKEN to ask Grafana)"
    )
    assert r["nut"]["status"] == "SKIP"  # config.py has no nut sensor
    assert r["drives"]["status"] in ("OK", "WARN")
    assert rc == 1  # a FAIL (the drill, Grafana) makes the exit code non-zero


def test_stopped_influxdb_fails(
    influxd: LocalInfluxd, station: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    influxd.stop()
    rc, r = _doctor(influxd, station, capsys)
    assert rc == 1
    assert r["influxdb"]["status"] == "FAIL"
    assert r["influxdb"]["detail"].startswith(f"{influxd.url}: ")
    # What depends on InfluxDB says it cannot tell, instead of failing three more times.
    assert {r[n]["status"] for n in ("stale-sensors", "backup", "restore-drill")} == {
        "SKIP"
    }


def test_no_backup_yet_warns_and_broken_provisioning_fails(
    influxd: LocalInfluxd, station: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    board = next(
        (station["provisioning"] / "dashboards" / "fieldstation").glob("*.json")
    )
    board.write_text("{ not json")
    _rc, r = _doctor(influxd, station, capsys)
    assert r["backup"] == {
        "name": "backup", "status": "WARN", "detail": "no backup recorded yet", "hint": HINTS["backup"]
    }  # fmt: skip
    assert r["stale-sensors"]["status"] == "WARN"  # no health readings at all
    assert r["provisioning"]["status"] == "FAIL"
    assert r["provisioning"]["detail"].startswith(f"{board}: JSONDecodeError")


@pytest.mark.parametrize(
    ("word", "status", "detail"),
    [
        ("0", "OK", "no under-voltage or throttling since boot"),
        ("50000", "WARN", "since boot: under_voltage, throttled"),
        ("50005", "FAIL", "now: under_voltage, throttled"),
    ],
)
def test_power_flags(tmp_path: Path, word: str, status: str, detail: str) -> None:
    path = tmp_path / "get_throttled"
    path.write_text(word + "\n")
    assert doctor.check_power(doctor.Inputs(throttled_file=path)) == (status, detail)


def test_unmounted_drive_fails(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "LABEL=FS-DATA /srv/nowhere ext4 defaults 0 2\nLABEL=X /srv/maybe ext4 noauto 0 2\n"
    )
    status, detail = doctor.check_drives(doctor.Inputs(fstab=fstab))
    assert status == "FAIL"
    assert detail.startswith("/srv/nowhere not mounted; / ")


def test_sd_writes_per_day(tmp_path: Path) -> None:
    """/ on mmcblk0p2: sectors written on the disk over days of uptime (a /sys and /proc tree like a Pi's)."""
    dev = os.stat("/").st_dev
    disk = tmp_path / "sys" / "block" / "mmcblk0"
    (disk / "mmcblk0p2").mkdir(parents=True)
    (disk / "mmcblk0p2" / "partition").write_text("2\n")
    # 7th number: sectors written. 20 000 000 sectors × 512 B = 10.24 GB over 2 days.
    (disk / "stat").write_text("1 2 3 4 5 6 20000000 8 9 10 11\n")
    (tmp_path / "sys" / "dev" / "block").mkdir(parents=True)
    (
        tmp_path / "sys" / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    ).symlink_to(disk / "mmcblk0p2")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "uptime").write_text("172800.00 1000.00\n")
    inp = doctor.Inputs(sys=tmp_path / "sys", proc=tmp_path / "proc")
    assert doctor.check_sd_writes(inp) == ("WARN", "mmcblk0: 5.12 GB/day since boot")
    # The agent's own writes, from its state file (the figure of its health reading).
    (tmp_path / "state.json").write_text('{"time": 0, "bytes_written_per_day": 12345678.9}')
    inp.state_file = tmp_path / "state.json"
    assert doctor.check_sd_writes(inp) == ("WARN", "mmcblk0: 5.12 GB/day since boot; the agent writes 12.3 MB/day")


def test_a_hung_check_is_bounded() -> None:
    import threading

    release = threading.Event()

    def hangs(_inp: doctor.Inputs) -> tuple[str, str]:
        release.wait(30)
        return doctor.OK, "late"

    try:
        results = doctor.run_checks(
            doctor.Inputs(timeout=0.5), [("hangs", hangs, "look at it")]
        )
    finally:
        release.set()
    assert results == [
        doctor.Result("hangs", "FAIL", "no answer within 0.5 s", "look at it")
    ]


def test_influxdb_with_auth(tmp_path: Path) -> None:
    """The sink's credentials: accepted is OK (a write-only user's 403 on reading too), refused is FAIL."""
    from fieldstation.influxql import Influx as Client
    from fieldstation.tools.common import Target
    from harness.influx import start_influxd

    server = start_influxd(tmp_path / "influxd", auth=True)
    try:
        Client(server.url).query(
            "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES"
        )
        admin = Client(server.url, ("admin", "admin-pw"))
        admin.query('CREATE DATABASE "fieldstation"')
        admin.query("CREATE USER agent WITH PASSWORD 'agent-pw'")
        admin.query('GRANT WRITE ON "fieldstation" TO agent')

        def check(user: str, password: str) -> tuple[str, str]:
            return doctor.check_influx(
                doctor.Inputs(
                    influx=Target(Client(server.url, (user, password)), "fieldstation")
                )
            )

        assert check("admin", "admin-pw") == (
            "OK",
            f"{server.url} db fieldstation: answering as admin",
        )
        assert check("agent", "agent-pw")[0] == "OK"
        status, detail = check("agent", "wrong")
        assert status == "FAIL"
        assert detail.startswith(f"{server.url}: 401 ")
    finally:
        server.stop()


def test_reads_with_the_admin_of_influx_setup(
    tmp_path: Path, station: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """On the station the agent's user may only write: doctor asks with influx-setup.toml's admin instead."""
    from fieldstation.influxql import Influx as Client
    from harness.influx import start_influxd

    server = start_influxd(tmp_path / "influxd", auth=True)
    try:
        Client(server.url).query(
            "CREATE USER root_ WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES"
        )
        admin = Client(server.url, ("root_", "admin-pw"))
        admin.query('CREATE DATABASE "fieldstation"')
        admin.write(
            [f"fieldstation_sensor,sensor=t1 stale=false {time.time_ns()}"],
            "fieldstation",
        )
        setup = tmp_path / "influx-setup.toml"
        setup.write_text(
            f'url = "{server.url}"\n[admin]\nusername = "root_"\npassword = "admin-pw"\n'
        )
        rc = main(
            ["doctor", "--json", "--settings", str(station["settings"]), "--influx-setup", str(setup),
             "--fstab", str(station["fstab"])]
        )  # fmt: skip
        r = {x["name"]: x for x in json.loads(capsys.readouterr().out)}
        assert (
            r["influxdb"]["detail"]
            == f"{server.url} db fieldstation: answering as root_"
        )
        assert r["stale-sensors"] == {
            "name": "stale-sensors",
            "status": "OK",
            "detail": "1 sensors reporting",
            "hint": "",
        }
        assert rc in (0, 1)  # whatever this build machine's clock and drives say
    finally:
        server.stop()


def test_a_nofail_drive_warns_unless_another_fails(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=A /srv/a ext4 nofail 0 2\nLABEL=B /srv/b ext4 nofail 0 2\n")
    assert doctor.check_drives(doctor.Inputs(fstab=fstab))[0] == "WARN"
    fstab.write_text(
        "LABEL=A /srv/a ext4 nofail 0 2\nLABEL=B /srv/b ext4 defaults 0 2\nLABEL=C /srv/c ext4 nofail 0 2\n"
    )
    assert doctor.check_drives(doctor.Inputs(fstab=fstab))[0] == "FAIL"


def test_nut_answers_or_fails(upsd: Any) -> None:
    """A real upsd with dummy-ups: the configured UPS answers; an unknown one, or upsd gone, is FAIL."""
    ok = doctor.check_nut(doctor.Inputs(nut=[("127.0.0.1", upsd.port, "dummy")]))
    assert ok == ("OK", f"dummy@127.0.0.1:{upsd.port} OL")
    status, detail = doctor.check_nut(
        doctor.Inputs(nut=[("127.0.0.1", upsd.port, "nope")])
    )
    assert status == "FAIL"
    assert detail.startswith(f"nope@127.0.0.1:{upsd.port}: ")
    upsd.stop_upsd()
    assert (
        doctor.check_nut(doctor.Inputs(nut=[("127.0.0.1", upsd.port, "dummy")]))[0]
        == "FAIL"
    )


def test_a_first_boot_that_did_not_finish_fails_and_a_station_without_the_image_skips(tmp_path: Path) -> None:
    inp = doctor.Inputs(root=tmp_path)
    assert doctor.check_firstboot(inp) == ("SKIP", "not set up from the image (no first boot)")
    hold = tmp_path / doctor.FIRSTBOOT_HOLD
    hold.parent.mkdir(parents=True)
    hold.write_text("[Unit]\nAssertPathExists=/var/lib/fieldstation-firstboot/firstboot.done\n")
    status, detail = doctor.check_firstboot(inp)
    assert status == "FAIL" and "first boot has not finished" in detail
    assert str(tmp_path / "var/lib/fieldstation-firstboot/firstboot.done") in detail
    stamp = tmp_path / "var/lib/fieldstation-firstboot/firstboot.done"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("")
    assert doctor.check_firstboot(inp)[0] == "OK"
