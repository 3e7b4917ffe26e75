"""Flash wear (issue 15): what the roles set so that the SD card and the data drive last.

- InfluxDB: the role's influxdb.conf, rendered by Ansible with the role's defaults, is what Debian's influxd takes
  (``influxd config`` prints the settings in force: a misspelt key would leave InfluxDB's own default).
- The SD card when the data lives on a USB drive: site.yml into a root filesystem that is itself an ext4 image on a
  loop device (the card), with a second one mounted at /srv/data (the drive), 100 simulated sensors at 1 Hz; booted
  with systemd-nspawn, the journal must be on the drive, the root's fstab line noatime with a long commit interval,
  and the card's writes (``/sys/block/loopN/stat``) are printed as MB/day with the files written meanwhile
  (a figure, not asserted: bench/RESULTS.md records it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from harness.blockdev import LoopFs, loop_ext4, needs_root
from harness.rootfs import (
    ANSIBLE_CFG,
    ANSIBLE_DIR,
    Booted,
    ansible_venv,
    boot,
    fresh_root,
    log,
    requires_rootfs,
    run_playbook,
)

ROLE = ANSIBLE_DIR / "roles" / "influxdb"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
#: The role's flash settings: influxdb.conf's (section, key) for each, and its kind (as ``influxd config`` prints
#: a size in bytes and a duration as Go does, 10m0s).
FLASH_KEYS = {
    "influxdb_wal_fsync_delay": ("data", "wal-fsync-delay", "duration"),
    "influxdb_cache_snapshot_memory_size": ("data", "cache-snapshot-memory-size", "size"),
    "influxdb_cache_snapshot_write_cold_duration": ("data", "cache-snapshot-write-cold-duration", "duration"),
    "influxdb_compact_full_write_cold_duration": ("data", "compact-full-write-cold-duration", "duration"),
    "influxdb_max_concurrent_compactions": ("data", "max-concurrent-compactions", "plain"),
    "influxdb_index_version": ("data", "index-version", "plain"),
    "influxdb_monitor_store": ("monitor", "store-enabled", "plain"),
}
_SIZE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


def normalized(value: object, kind: str) -> object:
    """A setting as InfluxDB takes it: 25m (size) -> 26214400, 10m / 10m0s (duration) -> 600.0; others as text."""
    text = str(value).strip().strip('"').lower()
    if kind == "size" and (m := re.fullmatch(r"(\d+)([kmg]?)", text)):
        return int(m.group(1)) * _SIZE[m.group(2)]
    if kind == "duration" and re.fullmatch(r"(\d+(ms|h|m|s))+", text):
        return sum(int(n) * _SECONDS[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", text))
    return text


def render(template: str, dest: Path, extra: dict[str, object]) -> None:
    venv = ansible_venv()
    subprocess.run(
        [str(venv / "bin" / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / template} dest={dest} mode=0600", "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", json.dumps({"ansible_python_interpreter": str(venv / "bin" / "python"), **extra})],
        check=True, capture_output=True, cwd=ANSIBLE_DIR, env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG)},
    )


#: A value for each, none InfluxDB's own default: a key the template misspells would show that default instead.
CHANGED = {
    "influxdb_wal_fsync_delay": "7s",
    "influxdb_cache_snapshot_memory_size": "48m",
    "influxdb_cache_snapshot_write_cold_duration": "7m",
    "influxdb_compact_full_write_cold_duration": "5h",
    "influxdb_max_concurrent_compactions": 2,
    "influxdb_index_version": "tsi1",
    "influxdb_monitor_store": True,
}


def in_force(conf: Path) -> dict[tuple[str, str], str]:
    """The settings influxd takes from ``conf`` (``influxd config``: its defaults where the file says nothing)."""
    shown = subprocess.run(["influxd", "config", "-config", str(conf)], capture_output=True, text=True, check=True)
    section, settings = "", {}
    for line in shown.stdout.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^\s*([\w-]+)\s*=\s*(.+)$", line):
            settings[(section, m.group(1))] = m.group(2)
    return settings


@pytest.mark.skipif(shutil.which("influxd") is None, reason="Debian's influxd is not installed")
@pytest.mark.parametrize("values", [{}, CHANGED], ids=["defaults", "changed"])
def test_influxd_takes_the_roles_flash_settings(tmp_path: Path, values: dict[str, object]) -> None:
    conf = tmp_path / "influxdb.conf"
    render("etc/influxdb/influxdb.conf.j2", conf, {"influxdb_data_dir": str(tmp_path / "influxdb"), **values})
    settings = in_force(conf)
    for var, (section, key, kind) in FLASH_KEYS.items():
        assert (section, key) in settings, f"influxd config shows no [{section}] {key}"
        wanted = values.get(var, DEFAULTS[var])
        assert normalized(settings[section, key], kind) == normalized(wanted, kind), (var, settings[section, key])


# -- the SD card of a whole station ---------------------------------------------------------------------------------

PASSWORDS = {
    "influxdb_admin_password": "adm1n-Secret-pw",
    "influxdb_agent_password": "ag3nt-Secret-pw",
    "influxdb_grafana_password": "gr4fana-Secret-pw",
    "grafana_admin_password": "gr4fana-Admin-pw",
    "grafana_secret_key": "gr4fana-Secret-key-for-tests",
}
SENSORS = 100  # at 1 Hz: the 100 readings/s of issue 15
SETTLE_S = 60  # past the boot's own writes and the first writeback of dirty pages (30 s)
# The figure is printed, not asserted: in CI a short window keeps the suite within its time. For the figure
# bench/RESULTS.md records, FIELDSTATION_FLASH_SECONDS=700: longer than one ext4 commit interval of the root
# (commit=600), so the card's journal commit falls inside.
MEASURE_S = float(os.environ.get("FIELDSTATION_FLASH_SECONDS", "30"))


def station_inventory(tmp: Path) -> dict[str, object]:
    config = tmp / "config.py"
    config.write_text(
        "from fieldstation.sensors.simulated import Simulated\n\n"
        f"sensors = [Simulated(name=f's{{i}}', interval=1.0, unit='K') for i in range({SENSORS})]\n"
    )
    return {
        **PASSWORDS,
        "base_hostname": "fs-flash",
        "drives_list": [{"name": "data", "label": "FS-DATA", "mount": "/srv/data", "fstype": "ext4"}],
        "drives_data_dir": "/srv/data",
        "agent_config_file": str(config),
        "agent_sinks": [{"name": "local", "url": "http://127.0.0.1:8086", "database": "fieldstation",
                         "username": "agent", "password": PASSWORDS["influxdb_agent_password"]}],
        "nut_enabled": False,
        "grafana_install": False,
        "grafana_alert_emails": ["lab@example.org"],
    }


def per_day(sectors: int, seconds: float) -> float:
    return sectors * 512 / seconds * 86400 / 1e6


def count_last_minute(b: Booted) -> int:
    """The simulated readings of the last minute in InfluxDB (the container's own Python, the admin's login)."""
    script = (
        "import base64, json, urllib.parse, urllib.request\n"
        "q = urllib.parse.urlencode({'db': 'fieldstation', 'q': "
        "'SELECT count(value) FROM raw.simulated WHERE time > now() - 1m'})\n"
        "req = urllib.request.Request('http://127.0.0.1:8086/query?' + q)\n"
        f"req.add_header('Authorization', 'Basic ' + base64.b64encode({'admin:' + PASSWORDS['influxdb_admin_password']!r}"
        ".encode()).decode())\n"
        "series = json.load(urllib.request.urlopen(req, timeout=10))['results'][0].get('series', [])\n"
        "print(series[0]['values'][0][1] if series else 0)\n"
    )
    return int(b.run(["python3", "-c", script], check=True).stdout.strip())


def timers_writes(b: Booted, card: LoopFs) -> dict[str, float]:
    """KB each timer's job writes to the card when run now, once (sync before and after: an upper bound)."""
    listed = b.run(["systemctl", "list-timers", "--all", "--no-legend", "--plain"], check=True).stdout
    services = sorted({ln.split()[-1] for ln in listed.splitlines() if ln.strip().endswith(".service")})
    kb = {}
    for service in services:
        b.run(["sync"])
        s0 = card.sectors_written()
        b.run(["systemctl", "start", service], timeout=180)
        b.run(["sync"])
        kb[service] = (card.sectors_written() - s0) * 512 / 1e3
    return kb


@requires_rootfs
@needs_root
@pytest.mark.timeout(2400)
def test_the_sd_card_is_spared_when_the_data_lives_on_the_usb_drive(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "sdcard.img", tmp_path / "sdcard", size_mb=4096) as card:
        root = fresh_root(card.mount)
        # The root's own line, as on Raspberry Pi OS (the image mounts / from cmdline.txt and has none).
        with (root / "etc" / "fstab").open("a") as fstab:
            fstab.write("LABEL=rootfs / ext4 defaults 0 1\n")
        (root / "srv" / "data").mkdir(parents=True, exist_ok=True)
        with loop_ext4(tmp_path / "usbdrive.img", root / "srv" / "data", size_mb=2048) as drive:
            run_playbook(root, station_inventory(tmp_path), workdir=tmp_path).assert_ok()

            lines = (root / "etc" / "fstab").read_text().splitlines()
            root_line = next(ln.split() for ln in lines if ln.split()[1:2] == ["/"])
            options = root_line[3].split(",")
            assert "noatime" in options and "commit=600" in options, root_line
            # The card mounted as the station's fstab says; the line itself goes, as a container cannot resolve
            # its label (systemd-remount-fs would fail).
            subprocess.run(["mount", "-o", f"remount,{root_line[3]}", str(card.mount)], check=True)
            (root / "etc" / "fstab").write_text("".join(f"{ln}\n" for ln in lines if ln.split()[1:2] != ["/"]))
            assert os.readlink(root / "etc/systemd/system/man-db.timer") == "/dev/null"
            grafana_env = (root / "etc/default/grafana-server").read_text()
            assert "DATA_DIR=/srv/data/grafana\n" in grafana_env and "GF_LOG_MODE=console\n" in grafana_env

            booted = boot(root, timeout=240)
            try:
                booted.wait_until(["systemctl", "is-active", "fieldstation-agent.service", "influxdb.service"], 120)
                same = booted.run("stat -c %d /var/log/journal /srv/data /", check=True).stdout.split()
                assert same[0] == same[1] != same[2], f"journal, data drive, root devices: {same}"
                booted.run(["journalctl", "--flush"], check=True)
                assert list((drive.mount / "journal").rglob("system.journal")), "no journal on the data drive"

                time.sleep(SETTLE_S)
                stamp = time.time()
                c0, d0, t0 = card.sectors_written(), drive.sectors_written(), time.monotonic()
                time.sleep(MEASURE_S)
                c1, d1, t1 = card.sectors_written(), drive.sectors_written(), time.monotonic()
                written = subprocess.run(
                    ["find", str(root), "-xdev", "-newermt", f"@{stamp:.0f}", "-type", "f", "-printf", "%P %s\n"],
                    capture_output=True, text=True, check=False).stdout.strip()
                sd, usb = per_day(c1 - c0, t1 - t0), per_day(d1 - d0, t1 - t0)
                log(f"SD card: {sd:.1f} MB/day, data drive: {usb:.0f} MB/day over {t1 - t0:.0f} s at {SENSORS} "
                    f"readings/s; files written on the card meanwhile:\n{written or '(none)'}")
                readings = count_last_minute(booted)
                timers = timers_writes(booted, card)
                log(f"each timer's job run once, KB written to the card: {timers}")
                (tmp_path / "flash.json").write_text(json.dumps({
                    "sd_mb_per_day": sd, "usb_mb_per_day": usb, "seconds": t1 - t0, "written": written,
                    "readings_last_minute": readings, "timers_kb": timers}))
            finally:
                booted.stop()
            # The load was real: the agent's readings of the last minute reached InfluxDB.
            assert readings > 0
