"""The pi driver against this machine's real /proc, against captured files under a temporary root (with a fake
vcgencmd on PATH), and while the scheduler runs."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors.pi import (
    Pi,
    StatVfs,
    disk_fields,
    mount_name,
    parse_diskstats,
    parse_meminfo,
    parse_stat,
    parse_throttled,
)
from harness.agent import Recorder, wait_for

NO_VCGENCMD = "fieldstation-test-no-such-vcgencmd"
THROTTLE_FLAGS = {
    "under_voltage",
    "freq_capped",
    "throttled",
    "soft_temp_limit",
    "under_voltage_occurred",
    "freq_capped_occurred",
    "throttled_occurred",
    "soft_temp_limit_occurred",
}



def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_tree(
    root: Path, *, cpu: str = "1000 0 500 8000 100 0 50 0 0 0", sectors: int = 5000, temp: str | None = "52123\n"
) -> None:
    """A small but real-shaped Raspberry Pi root: /proc files and the SoC's thermal zone."""
    write(root / "proc/stat", f"cpu  {cpu}\ncpu0 {cpu}\nintr 1234 0 0\nctxt 99\nbtime 1699387654\nprocesses 10\n")
    write(root / "proc/loadavg", "0.42 0.36 0.30 1/190 4242\n")
    write(
        root / "proc/meminfo", "MemTotal:        1000000 kB\nMemFree:          200000 kB\nMemAvailable:     250000 kB\n"
    )
    write(
        root / "proc/diskstats",
        "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        f" 179       0 mmcblk0 4152 1685 256210 4821 15231 16045 {sectors} 139183 0 57432 145678 0 0 0 0 1381 1673\n"
        f" 179       2 mmcblk0p2 4100 1582 253420 4784 15230 16045 {sectors - 2} 139182 0 57406 143967 0 0 0 0 0 0\n",
    )
    write(root / "proc/uptime", "86400.25 340000.10\n")
    if temp is not None:
        write(root / "sys/class/thermal/thermal_zone0/temp", temp)


def fake_vcgencmd(directory: Path, body: str = 'echo "throttled=0x50005"') -> Path:
    """An executable vcgencmd that answers get_throttled the way the firmware's tool does."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "vcgencmd"
    script.write_text(f'#!/bin/sh\n[ "$1" = get_throttled ] || {{ echo "bad command: $*" >&2; exit 2; }}\n{body}\n')
    script.chmod(0o755)
    return script


# -- this machine's real /proc --------------------------------------------------------------------------------


def busiest_disk() -> str:
    with open("/proc/diskstats") as f:
        written = parse_diskstats(f.read())
    return max(written, key=lambda d: written[d])


def lxcfs() -> bool:
    with open("/proc/self/mountinfo") as f:
        return "lxcfs" in f.read()


def test_the_real_proc_gives_plausible_values_and_cpu_percent_from_the_second_read() -> None:
    sensor = Pi(name="pi", vcgencmd=NO_VCGENCMD, disk=busiest_disk())
    first = sensor.read()
    assert "cpu_percent" not in first and "sd_bytes_written" not in first
    for name in ("load1", "load5", "load15"):
        assert 0 <= first[name] < 1000
    if not lxcfs():  # LXCFS shows a container its own memory and uptime in /proc, not the kernel's
        assert first["mem_total"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert abs(first["uptime"] - time.clock_gettime(time.CLOCK_BOOTTIME)) < 2
    assert 0 < first["mem_available"] <= first["mem_total"]
    assert 0 < first["mem_used_percent"] < 100
    assert first["uptime"] > 0
    assert 0 < first["disk_used_percent_root"] < 100
    assert abs(first["disk_available_root"] - shutil.disk_usage("/").free) < 256 * 2**20
    assert not THROTTLE_FLAGS & first.keys()

    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass  # burn CPU so some ticks pass and some of them are busy
    second = sensor.read()
    assert 0 < second["cpu_percent"] <= 100
    assert second["sd_bytes_written"] >= 0 and second["sd_bytes_written"] % 512 == 0
    assert second["uptime"] > first["uptime"]


def test_the_real_thermal_zone_is_read_when_the_machine_has_one() -> None:
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp"))
    if not zones:
        pytest.skip("this machine has no thermal zone")
    fields = Pi(name="pi", vcgencmd=NO_VCGENCMD, thermal_zone=zones[0].parent.name).read()
    assert -40 < fields["soc_temp"] < 125


# -- captured files under a temporary root -----------------------------------------------------------------


def test_captured_files_give_exact_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    write_tree(root)
    (root / "data").mkdir()
    monkeypatch.setenv("PATH", f"{fake_vcgencmd(tmp_path / 'bin').parent}{os.pathsep}{os.environ['PATH']}")
    sensor = Pi(name="pi", root=str(root), mounts=["/", "/data"])

    first = sensor.read()
    assert "cpu_percent" not in first and "sd_bytes_written" not in first
    assert first["load1"] == 0.42 and first["load5"] == 0.36 and first["load15"] == 0.30
    assert first["mem_total"] == 1_024_000_000
    assert first["mem_available"] == 256_000_000
    assert first["mem_used_percent"] == 75.0
    assert first["soc_temp"] == 52.123
    assert first["uptime"] == 86400.25
    # throttled=0x50005: bits 0 and 2 now, 16 and 18 since boot.
    assert {k for k in THROTTLE_FLAGS if first[k]} == {
        "under_voltage",
        "throttled",
        "under_voltage_occurred",
        "throttled_occurred",
    }
    assert {k for k in THROTTLE_FLAGS if first[k] is False} == {
        "freq_capped",
        "soft_temp_limit",
        "freq_capped_occurred",
        "soft_temp_limit_occurred",
    }
    st = os.statvfs(root / "data")
    assert abs(first["disk_available_data"] - st.f_bavail * st.f_frsize) < 256 * 2**20
    assert 0 < first["disk_used_percent_root"] < 100

    # 10 s later: user +300, system +100, idle +560, iowait +40 ticks; 800 sectors written.
    write_tree(root, cpu="1300 0 600 8560 140 0 50 0 0 0", sectors=5800)
    second = sensor.read()
    assert second["cpu_percent"] == pytest.approx(40.0)
    assert second["sd_bytes_written"] == 800 * 512

    write_tree(root, cpu="1300 0 600 8560 140 0 50 0 0 0", sectors=5800)
    third = sensor.read()
    assert "cpu_percent" not in third, "no tick passed: no CPU share to compute"
    assert third["sd_bytes_written"] == 0


def test_units_follow_the_fields_through_the_core(tmp_path: Path) -> None:
    write_tree(tmp_path)
    sensor = Pi(name="pi", root=str(tmp_path), mounts=["/", "/boot/firmware"], vcgencmd=NO_VCGENCMD)
    assert sensor.unit_of("disk_used_percent_boot_firmware") == "%"
    assert sensor.unit_of("disk_available_boot_firmware") == "B"
    sensor.read()
    write_tree(tmp_path, cpu="1100 0 500 8100 100 0 50 0 0 0", sectors=5008)
    units = {name: r.tags.get("unit", "") for r in process(sensor, sensor.read(), 1).readings for name in r.fields}
    assert units["cpu_percent"] == "%" and units["mem_used_percent"] == "%" and units["disk_used_percent_root"] == "%"
    assert units["mem_total"] == "B" and units["sd_bytes_written"] == "B" and units["disk_available_root"] == "B"
    assert units["soc_temp"] == "°C" and units["uptime"] == "s" and units["load1"] == ""
    assert "disk_used_percent_boot_firmware" not in units, "a mount point that is not there is omitted"


def test_missing_files_omit_their_fields_only(tmp_path: Path) -> None:
    write(tmp_path / "proc/loadavg", "1.00 0.50 0.25 1/100 99\n")
    fields = Pi(name="pi", root=str(tmp_path), mounts=["/nosuch"], vcgencmd=NO_VCGENCMD).read()
    assert fields == {"load1": 1.0, "load5": 0.5, "load15": 0.25}


def test_a_container_without_thermal_zone_or_vcgencmd_still_reads(tmp_path: Path) -> None:
    write_tree(tmp_path, temp=None)
    fields = Pi(name="pi", root=str(tmp_path), vcgencmd=NO_VCGENCMD).read()
    assert "soc_temp" not in fields and not THROTTLE_FLAGS & fields.keys()
    assert fields["mem_total"] == 1_024_000_000


def test_a_failing_vcgencmd_omits_the_flags_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tree(tmp_path / "root")
    script = fake_vcgencmd(tmp_path / "bin", 'echo "VCHI initialization failed" >&2; exit 255')
    sensor = Pi(name="pi", root=str(tmp_path / "root"), vcgencmd=str(script))
    with caplog.at_level(logging.WARNING, logger="fieldstation.sensors.pi"):
        for _ in range(3):
            fields = sensor.read()
            assert not THROTTLE_FLAGS & fields.keys()
            assert fields["load1"] == 0.42
    warnings = [r.getMessage() for r in caplog.records if r.name == "fieldstation.sensors.pi"]
    assert len(warnings) == 1
    assert "exited with 255: VCHI initialization failed" in warnings[0] and "video group" in warnings[0]


def test_a_nonexistent_root_is_one_line_naming_the_path(tmp_path: Path) -> None:
    root = tmp_path / "nope"
    sensor = Pi(name="pi", root=str(root), vcgencmd=NO_VCGENCMD)
    with pytest.raises(SensorError) as info:
        sensor.read()
    msg = str(info.value)
    assert msg == f"nothing readable under {root}: {root}/proc/stat: No such file or directory"
    assert "\n" not in msg


def test_a_root_that_is_a_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    root = tmp_path / "plain-file"
    root.write_text("not a directory\n")
    with pytest.raises(SensorError, match=rf"^nothing readable under {root}: {root}/proc/stat: Not a directory$"):
        Pi(name="pi", root=str(root), vcgencmd=NO_VCGENCMD).read()


def test_garbled_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_tree(tmp_path)
    write(tmp_path / "proc/loadavg", "garbage\n")
    with pytest.raises(SensorError, match=rf"^{tmp_path}/proc/loadavg: unexpected content: "):
        Pi(name="pi", root=str(tmp_path), vcgencmd=NO_VCGENCMD).read()


def test_garbled_vcgencmd_output_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path / "root")
    script = fake_vcgencmd(tmp_path / "bin", 'echo "error=1 error_msg=\\"Command not registered\\""')
    with pytest.raises(SensorError, match=r"^vcgencmd get_throttled: expected throttled=0x"):
        Pi(name="pi", root=str(tmp_path / "root"), vcgencmd=str(script)).read()


# -- while the scheduler runs ----------------------------------------------------------------------------------


def test_the_scheduler_records_health_with_units(tmp_path: Path) -> None:
    rec = Recorder()
    script = fake_vcgencmd(tmp_path / "bin")
    sensor = Pi(name="pi", interval=0.2, vcgencmd=str(script), disk=busiest_disk())
    sched = Scheduler([sensor], rec)
    with sched.running():
        wait_for(lambda: len(rec.with_field("cpu_percent")) >= 2, 10, "cpu_percent from the second read on")
    assert sched.states["pi"].errors == 0
    assert {r.tags["unit"] for r in rec.with_field("cpu_percent")} == {"%"}
    assert {r.tags["unit"] for r in rec.with_field("mem_total")} == {"B"}
    assert {r.tags.get("unit", "") for r in rec.with_field("under_voltage")} == {""}
    flags = rec.with_field("under_voltage")[-1].fields
    assert flags["under_voltage"] is True and flags["freq_capped"] is False and flags["throttled_occurred"] is True
    assert all(0 <= float(r.fields["cpu_percent"]) <= 100 for r in rec.with_field("cpu_percent"))
    assert all(r.tags["sensor"] == "pi" and r.measurement == "pi" for r in rec.readings)


# -- pure functions and options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "on"),
    [
        ("throttled=0x0\n", set()),
        ("throttled=0x50005\n", {"under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"}),
        ("throttled=0x80008\n", {"soft_temp_limit", "soft_temp_limit_occurred"}),
        ("throttled=0x20000\n", {"freq_capped_occurred"}),
        ("throttled=0xf000f\n", THROTTLE_FLAGS),
    ],
)
def test_parse_throttled(text: str, on: set[str]) -> None:
    flags = parse_throttled(text)
    assert flags.keys() == THROTTLE_FLAGS
    assert {k for k, v in flags.items() if v} == on


def test_parse_throttled_rejects_other_output() -> None:
    with pytest.raises(ValueError, match="expected throttled="):
        parse_throttled("VCHI initialization failed\n")


def test_parse_stat_counts_iowait_as_idle_and_ignores_guest_time() -> None:
    assert parse_stat("cpu  10 1 5 100 7 2 3 4 50 60\ncpu0 1 1 1 1 1 1 1 1 1 1\n") == (107, 132)
    with pytest.raises(ValueError, match="no 'cpu' line"):
        parse_stat("cpu0 1 2 3 4\n")


def test_parse_meminfo_turns_kib_into_bytes() -> None:
    info = parse_meminfo("MemTotal:        3882464 kB\nHugePages_Total:       0\n")
    assert info == {"MemTotal": 3882464 * 1024, "HugePages_Total": 0}


def test_disk_fields_count_like_df() -> None:
    # 100 blocks, 40 free, 30 of them available to non-root users: used 60, 60 / (60 + 30).
    fields = disk_fields("/var/lib/influxdb", StatVfs(frsize=4096, blocks=100, bfree=40, bavail=30))
    assert fields == {
        "disk_used_percent_var_lib_influxdb": pytest.approx(66.6667),
        "disk_available_var_lib_influxdb": 30 * 4096,
    }


def test_mount_names() -> None:
    assert mount_name("/") == "root"
    assert mount_name("/boot/firmware") == "boot_firmware"
    assert mount_name("/mnt/usb-stick/") == "mnt_usb_stick"


def test_mounts_must_be_absolute_and_distinct() -> None:
    with pytest.raises(ValidationError, match="must be an absolute path"):
        Pi(name="pi", mounts=["data"])
    with pytest.raises(ValidationError, match=r"'/mnt/a-b' and '/mnt/a_b' would both write fields \*_mnt_a_b"):
        Pi(name="pi", mounts=["/mnt/a-b", "/mnt/a_b"])
