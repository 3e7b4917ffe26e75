"""The pi-gen stage (image/pi-gen/stage-fieldstation): pi-gen itself cannot run here (it builds Raspberry Pi OS from
the Raspberry Pi archive, arm64, with loop devices), so its sub-stage scripts run as pi-gen runs them, in a directory
of the test's with pi-gen's variables (STAGE_WORK_DIR, ROOTFS_DIR), on a root filesystem shaped as stage2 leaves it.
The playbook run is recorded instead of run (tests/image/test_image.py runs the same playbook into a real root).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.rootfs import REPO

STAGE = REPO / "image/pi-gen/stage-fieldstation"
# The labels pi-gen's export-image/prerun.sh gives the image's partitions: mkdosfs -n bootfs, mkfs.ext4 -L rootfs.
PI_GEN_LABELS = {"firstboot_boot_label": "bootfs", "firstboot_root_label": "rootfs"}
RECORDER = "import json, sys; open(sys.argv[0] + '.argv', 'w').write(json.dumps(sys.argv[1:]))\n"


def run_stage_script(script: str, rootfs: Path, work: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(["bash", str(STAGE / "00-fieldstation" / script)], check=True, cwd=STAGE / "00-fieldstation",
                   env={"PATH": os.environ["PATH"], "ROOTFS_DIR": str(rootfs), "STAGE_WORK_DIR": str(work),
                        **(env or {})}, capture_output=True, text=True, timeout=60)


def extra_vars(argv: list[str]) -> dict[str, object]:
    """The -e values that are JSON objects, merged as ansible-playbook merges them."""
    found: dict[str, object] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-e" and value.startswith("{"):
            found.update(json.loads(value))
    return found


def test_the_playbook_runs_with_the_partition_labels_pi_gen_writes(tmp_path: Path) -> None:
    recorder = tmp_path / "ansible-playbook"
    recorder.write_text(f"#!{sys.executable}\n{RECORDER}")
    recorder.chmod(0o755)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    run_stage_script("00-run.sh", rootfs, tmp_path, {"ANSIBLE_PLAYBOOK": str(recorder)})
    argv = json.loads(recorder.with_name("ansible-playbook.argv").read_text())
    assert argv[argv.index("-i") + 1] == str(REPO / "image/inventory.yml")
    assert str(REPO / "ansible/site.yml") in argv
    assert f"ansible_host={rootfs}" in argv
    labels = extra_vars(argv)
    assert {k: labels.get(k) for k in PI_GEN_LABELS} == PI_GEN_LABELS
    # ...which is what the first boot mounts the boot partition by.
    install = (REPO / "ansible/roles/firstboot/tasks/install.yml").read_text()
    assert "src: LABEL={{ firstboot_boot_label }}" in install


def test_wifi_is_switched_back_on_for_the_connection_first_boot_writes(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    state = rootfs / "var/lib/NetworkManager/NetworkManager.state"
    state.parent.mkdir(parents=True)
    state.write_text("[main]\nWirelessEnabled=false\n")  # as stage2's 02-net-tweaks leaves it without WPA_COUNTRY
    run_stage_script("01-run.sh", rootfs, tmp_path)
    assert state.read_text() == "[main]\nWirelessEnabled=true\n"
    # The first boot writes a NetworkManager connection where NetworkManager is installed, as on Raspberry Pi OS.
    firstboot = (REPO / "agent/src/fieldstation/firstboot.py").read_text()
    assert "etc/NetworkManager/system-connections/fieldstation-wifi.nmconnection" in firstboot


def test_a_root_without_networkmanager_is_left_alone(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    run_stage_script("01-run.sh", rootfs, tmp_path)
    assert list(rootfs.rglob("*")) == []


def test_every_stage_script_is_executable_as_pi_gen_requires() -> None:
    scripts = sorted(STAGE.rglob("*.sh"))
    assert len(scripts) >= 3
    for script in scripts:
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!/bin/bash -e\n"), script
