"""The SD-card image as image/build makes it, for the tests that start where a user starts: with the flashed card.

One build serves the whole session (``built_image``): the image tests check it, the journeys flash copies of it.
The build is the release's command with image_arch=amd64 and image_source=debian, so systemd-nspawn can boot it
here; Grafana's package is not installed (its apt repository is unreachable from a build machine). The base root
filesystem is cached (~/.cache/fieldstation/image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.rootfs import CACHE, REPO, _follow, ansible_venv, debian_mirror, log, remove_root, skip_unless_possible

SECTOR = 512

# Values a site keeps in its vault: none may reach the image, whatever the build is given.
BUILD_VAULT = {
    "vault_influxdb_admin_password": "Vault-adm1n-pw-image",
    "vault_influxdb_agent_password": "Vault-ag3nt-pw-image",
    "vault_influxdb_grafana_password": "Vault-gr4f-pw-image",
    "vault_grafana_admin_password": "Vault-gr4fadm-pw-image",
    "vault_grafana_secret_key": "Vault-gr4f-secret-key-image",
}


@dataclass
class Built:
    out: Path
    root: Path
    img: Path
    xz: Path
    log: str


def build_image(out: Path) -> Built:
    """Runs image/build with test values; the output and the log land in ``out``."""
    ansible_venv()  # the pinned Ansible, as tests/run installs it
    extra = {
        "image_source": "debian",
        "image_arch": "amd64",
        "image_debian_mirror": debian_mirror(),
        "image_output_dir": str(out),
        "image_cache_dir": str(CACHE / "image"),
        "image_keep_root": True,
        "image_xz_level": 0,
        "grafana_install": False,
        **BUILD_VAULT,
    }
    (out / "extra.json").write_text(json.dumps(extra))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update({"ANSIBLE_NOCOLOR": "1", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": ""})
    build_log = out / "build.log"
    log(f"image/build → {out} (output: {build_log})")
    t0 = time.monotonic()
    with build_log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(REPO / "image/build"), "-e", f"@{out / 'extra.json'}"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _follow(proc, build_log, t0, timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = build_log.read_text(errors="replace")
    assert proc.returncode == 0, "image/build failed:\n" + "\n".join(text.splitlines()[-60:])
    log(f"image built in {time.monotonic() - t0:.0f} s")
    img = next(out.glob("fieldstation-*-amd64.img"))
    return Built(out, out / "root", img, img.with_name(img.name + ".xz"), text)


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The image, built once per session. Its ``root`` is the build's own root directory, which the image tests
    boot (and so change): a journey that needs the image as flashed uses ``flash()``."""
    skip_unless_possible()
    result = build_image(tmp_path_factory.mktemp("image"))
    yield result
    remove_root(result.root)


def partitions(img: Path) -> list[dict[str, object]]:
    out = subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True, check=True).stdout
    table = json.loads(out)["partitiontable"]
    assert table["label"] == "dos"
    parts: list[dict[str, object]] = table["partitions"]
    return parts


def extract(img: Path, part: dict[str, object], dest: Path) -> Path:
    start, size = int(str(part["start"])), int(str(part["size"]))
    subprocess.run(["dd", f"if={img}", f"of={dest}", f"bs={SECTOR}", f"skip={start}", f"count={size}",
                    "conv=sparse", "status=none"], check=True)
    return dest


def boot_partition(card: Path) -> str:
    """mtools' name for the card's FAT boot partition (``img@@offset``): no loop device, no vfat driver needed."""
    return f"{card}@@{int(str(partitions(card)[0]['start'])) * SECTOR}"


def edit_settings(card: Path, edits: Mapping[str, str], work: Path) -> None:
    """Edits the card's fieldstation.txt as a user does on their laptop: each key is a line of the template,
    replaced by its value (e.g. ``"#hostname=fieldstation": "hostname=station-7"``)."""
    where = boot_partition(card)
    settings = work / "fieldstation.txt"
    subprocess.run(["mcopy", "-o", "-i", where, "::/fieldstation.txt", str(settings)], check=True)
    text = settings.read_text()
    for line, value in edits.items():
        assert line in text, f"fieldstation.txt has no line {line!r}"
        text = text.replace(line, value)
    settings.write_text(text)
    subprocess.run(["mcopy", "-o", "-i", where, str(settings), "::/fieldstation.txt"], check=True)


def place_boot_files(card: Path, root: Path) -> None:
    """Copies the card's FAT into root/boot/firmware, where the image's fstab mounts it (nspawn has no partitions)."""
    firmware = root / "boot/firmware"
    shutil.rmtree(firmware, ignore_errors=True)
    firmware.mkdir(parents=True)
    subprocess.run(["mcopy", "-s", "-n", "-i", boot_partition(card), "::/*", str(firmware)], check=True)


def flash(built: Built, dest: Path, edits: Mapping[str, str]) -> Path:
    """The user's steps on a fresh card: the image copied to it, fieldstation.txt edited; returns the card's root
    filesystem as a directory to boot (the ext4 partition loop-mounted read-only and copied, owners and modes
    kept), with the boot partition's files where the image mounts them."""
    dest.mkdir(parents=True)
    card = dest / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.img), str(card)], check=True)
    edit_settings(card, edits, dest)
    part = partitions(card)[1]
    root = dest / "root"
    with tempfile.TemporaryDirectory(prefix="card-root-") as mnt:
        subprocess.run(["mount", "-o", f"ro,loop,offset={int(str(part['start'])) * SECTOR},"
                        f"sizelimit={int(str(part['size'])) * SECTOR}", str(card), mnt], check=True)
        try:
            subprocess.run(["cp", "-a", f"{mnt}/.", str(root)], check=True)
        finally:
            subprocess.run(["umount", mnt], check=True)
    place_boot_files(card, root)
    return root
