"""The SD-card image, built by image/build (the same playbook and command as the arm64 release, with image_arch=amd64
and image_source=debian, so systemd-nspawn can boot it here): the assembled image's partition table and filesystems
checked without mounting, the root filesystem free of secrets and development tools, then that root booted with the
boot partition's fieldstation.txt edited as a user would: the first-boot units run and the appliance comes up, with
the agent's simulated readings in InfluxDB.

The build is harness.image's: one per session, shared with the journeys (tests/journeys/).
Grafana's package is not installed (its apt repository is unreachable from a build machine): grafana_install=false.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldstation.cli import main
from harness.image import BUILD_VAULT, SECTOR, Built, edit_settings, extract, partitions, place_boot_files
from harness.rootfs import REPO, Booted, boot, requires_rootfs

pytestmark = [requires_rootfs, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def built(built_image: Built) -> Built:
    return built_image


def test_the_build_is_stamped_checksummed_and_reports_its_size(built: Built) -> None:
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (REPO / "agent/pyproject.toml").read_text())
    assert version is not None
    assert built.img.name == f"fieldstation-{version[1]}-amd64.img"
    release = dict(line.split("=", 1) for line in (built.root / "etc/fieldstation-release").read_text().splitlines())
    assert release["FIELDSTATION_VERSION"] == version[1]
    # `git describe --always --dirty` of the checkout: HEAD, or an ancestor of it (commits may land during the build).
    revision = re.fullmatch(r"(?:.*-g)?([0-9a-f]{12})(?:-dirty)?", release["FIELDSTATION_REVISION"])
    assert revision is not None, release
    assert subprocess.run(["git", "merge-base", "--is-ancestor", revision[1], "HEAD"], cwd=REPO).returncode == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", release["FIELDSTATION_BUILD_DATE"])
    check = subprocess.run(["sha256sum", "-c", built.xz.name + ".sha256"], cwd=built.out, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{built.xz.name}: OK"
    assert re.search(r"image: .*\.img\.xz \([\d.]+ MiB compressed\)", built.log)
    assert re.search(r"root filesystem: \d+ MiB of files", built.log)
    assert subprocess.run(["xz", "-t", str(built.xz)], capture_output=True).returncode == 0


def test_the_partition_table_is_fat_boot_then_ext4_root_to_the_end(built: Built) -> None:
    boot_part, root_part = partitions(built.img)
    assert boot_part["type"] == "c" and boot_part.get("bootable") is True and boot_part["start"] == 8192
    assert root_part["type"] == "83"
    assert root_part["start"] == int(str(boot_part["start"])) + int(str(boot_part["size"]))
    assert (int(str(root_part["start"])) + int(str(root_part["size"]))) * SECTOR == built.img.stat().st_size


def test_the_root_partition_is_a_clean_ext4_labelled_rootfs(built: Built, tmp_path: Path) -> None:
    part = extract(built.img, partitions(built.img)[1], tmp_path / "root.ext4")
    fsck = subprocess.run(["fsck.ext4", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert subprocess.run(["e2label", str(part)], capture_output=True, text=True).stdout.strip() == "rootfs"
    release = subprocess.run(["debugfs", "-R", "cat /etc/fieldstation-release", str(part)],
                             capture_output=True, text=True).stdout
    assert release == (built.root / "etc/fieldstation-release").read_text()
    listing = subprocess.run(["debugfs", "-R", "ls -l /boot/firmware", str(part)], capture_output=True, text=True)
    assert "fieldstation.txt" not in listing.stdout  # the boot partition's files live on the FAT only


def test_the_boot_partition_is_fat_with_the_settings_template(built: Built) -> None:
    offset = int(str(partitions(built.img)[0]["start"])) * SECTOR
    where = f"{built.img}@@{offset}"
    info = subprocess.run(["minfo", "-i", where, "::"], capture_output=True, text=True, check=True).stdout
    assert "BOOTFS" in info
    listing = subprocess.run(["mdir", "-b", "-i", where, "::/"], capture_output=True, text=True, check=True).stdout
    assert "::/fieldstation.txt" in listing.split()
    template = subprocess.run(["mtype", "-i", where, "::/fieldstation.txt"], capture_output=True, text=True,
                              check=True).stdout
    assert "#hostname=" in template and "#ssh_authorized_key=" in template and "#wifi_ssid=" in template


def test_no_secrets_no_site_values_no_development_tools(built: Built) -> None:
    for value in BUILD_VAULT.values():
        hits = subprocess.run(["grep", "-rlF", "--", value, str(built.root)], capture_output=True, text=True).stdout
        assert hits == "", f"{value} baked into {hits}"
    setup = (built.root / "etc/fieldstation/influx-setup.toml").read_text()
    assert "FIRSTBOOT_SECRET_INFLUXDB_ADMIN" in setup  # a placeholder the first boot fills
    assert (built.root / "etc/machine-id").read_text() == ""
    assert not list((built.root / "etc/ssh").glob("ssh_host_*"))
    assert not (built.root / "home/admin").exists()  # the administrator and their keys come with the card's settings
    assert list((built.root / "var/lib/apt/lists").glob("*_Packages*")) == []
    packages = subprocess.run(["chroot", str(built.root), "dpkg-query", "-W", "-f", "${Package}\n"],
                              capture_output=True, text=True, check=True).stdout.split()
    dev = [p for p in packages if p.endswith("-dev") or re.fullmatch(r"(gcc|g\+\+|cpp|clang|make)(-[\d.]+)?", p)]
    assert dev == []


def test_growroot_extends_the_copied_image_to_a_bigger_card(built: Built, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.img), str(card)], check=True)
    os.truncate(card, built.img.stat().st_size + 512 * 2**20)
    assert main(["growroot", "--image", str(card)]) == 0
    root_part = partitions(card)[1]
    assert (int(str(root_part["start"])) + int(str(root_part["size"]))) * SECTOR == card.stat().st_size
    part = extract(card, root_part, tmp_path / "root.ext4")
    resize = subprocess.run(["resize2fs", str(part)], capture_output=True, text=True)  # what growroot does online
    assert resize.returncode == 0, resize.stderr
    fsck = subprocess.run(["fsck.ext4", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout
    boot_before, boot_after = partitions(built.img)[0], partitions(card)[0]
    assert [boot_after[k] for k in ("start", "size", "type")] == [boot_before[k] for k in ("start", "size", "type")]


# -- the first boot -------------------------------------------------------------------------------------------------


@dataclass
class Station:
    booted: Booted
    key: str


@pytest.fixture(scope="module")
def station(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    """The user's steps: edit fieldstation.txt on the flashed card's boot partition (mtools here), boot. The
    container sees the FAT's files where the mount puts them (/boot/firmware; nspawn has no partitions)."""
    tmp = tmp_path_factory.mktemp("firstboot")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "user@laptop", "-f", str(tmp / "id")],
                   check=True)
    key = (tmp / "id.pub").read_text().strip()
    card = tmp / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.img), str(card)], check=True)
    edit_settings(card, {"#hostname=fieldstation": "hostname=station-7",
                         "#ssh_authorized_key=ssh-ed25519 AAAA... you@laptop": f"ssh_authorized_key={key}",
                         "#wifi_ssid=MyNetwork": "wifi_ssid=Lab Net",
                         "#wifi_password=correct horse battery staple": "wifi_password=s3cret-wifi-pw",
                         "#wifi_country=FR": "wifi_country=fr"}, tmp)
    place_boot_files(card, built.root)
    booted = boot(built.root, timeout=180)
    try:
        yield Station(booted, key)
    finally:
        booted.stop()


def test_the_first_boot_applies_the_cards_settings(station: Station) -> None:
    b = station.booted
    assert b.is_active("fieldstation-firstboot.service") == "active", b.journal("fieldstation-firstboot.service")
    assert b.run(["hostname"]).stdout.strip() == "station-7"
    assert b.run(["cat", "/etc/hostname"]).stdout.strip() == "station-7"
    keys = b.run(["stat", "-c", "%a %U", "/home/admin/.ssh/authorized_keys"]).stdout.split()
    assert keys == ["600", "admin"]
    assert b.run(["cat", "/home/admin/.ssh/authorized_keys"]).stdout.strip() == station.key
    assert b.run(["sudo", "-n", "-u", "admin", "sudo", "-n", "true"]).returncode == 0  # passwordless sudo
    wifi = b.run(["cat", "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"]).stdout
    assert 'ssid="Lab Net"' in wifi and "country=FR" in wifi
    assert b.run(["stat", "-c", "%a", "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"]).stdout.strip() == "600"
    journal = b.journal("fieldstation-firstboot.service")
    assert "s3cret-wifi-pw" not in journal  # the Wi-Fi password is not logged
    assert "s3cret-wifi-pw" not in b.run(["cat", "/boot/firmware/fieldstation.txt"]).stdout  # nor left on the FAT


def test_host_keys_machine_id_and_secrets_are_made_on_the_card(station: Station) -> None:
    b = station.booted
    assert re.fullmatch(r"[0-9a-f]{32}\n", b.run(["cat", "/etc/machine-id"]).stdout)
    keys = b.run("ls /etc/ssh/ssh_host_*_key").stdout.split()
    assert "/etc/ssh/ssh_host_ed25519_key" in keys
    b.wait_until("systemctl is-active ssh.service | grep -qx active", timeout=60)
    assert b.run("grep -rl FIRSTBOOT_SECRET_ /etc").stdout == ""
    # growroot ran its condition and skipped: a container has no partition to grow.
    show = b.run(["systemctl", "show", "-p", "ConditionResult", "fieldstation-growroot.service"]).stdout.strip()
    assert show == "ConditionResult=no"
    assert b.run(["test", "-e", "/var/lib/fieldstation-firstboot/firstboot.done"]).returncode == 0


def test_the_appliance_comes_up_with_simulated_readings_in_influxdb(station: Station) -> None:
    b = station.booted
    for unit in ("fieldstation-agent.service", "influxdb.service", "fieldstation-influx-setup.service",
                 "avahi-daemon.service", "nftables.service"):
        state = b.wait_until(f"systemctl is-active {unit} | grep -qx active && echo active", timeout=120)
        assert state.strip() == "active", b.journal(unit)
    # The admin password the first boot generated, read where it landed (0600, root).
    setup = b.run(["cat", "/etc/fieldstation/influx-setup.toml"]).stdout
    admin = re.search(r'(?ms)^\[admin\].*?^password = "([^"]+)"', setup)
    assert admin is not None and not admin[1].startswith("FIRSTBOOT_SECRET")
    query = ("SELECT count(*) FROM /.*/ WHERE time > now() - 10m")
    script = (
        "import sys, urllib.parse, urllib.request\n"
        "q = urllib.parse.urlencode({'db': 'fieldstation', 'q': sys.argv[1], 'u': 'admin', 'p': sys.argv[2]})\n"
        "print(urllib.request.urlopen('http://127.0.0.1:8086/query?' + q, timeout=10).read().decode())\n"
    )
    deadline = time.monotonic() + 120
    while True:
        out = b.run(["python3", "-c", script, query, admin[1]]).stdout
        series = json.loads(out or "{}").get("results", [{}])[0].get("series", []) if out else []
        names = {s["name"] for s in series if any(isinstance(v, int) and v > 0 for row in s["values"] for v in row[1:])}
        if "simulated" in names or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert "simulated" in names, f"{out}\n{b.journal('fieldstation-agent.service')}"
    assert b.failed_units() == "", b.failed_units()
