"""The firstboot role alone, as image/inventory.yml runs it (firstboot_image: true), into a bookworm root, with the
agent's unit from systemd/ installed beside it as the agent role would; then that root booted with systemd-nspawn.

The root has no venv, so its first boot fails as a real one can (the program does not run, no secret is replaced, no
stamp is written): the services that use the image's placeholder secrets must then be held, visibly, and start once
the first boot's stamp is there. A station set up by Ansible without the image gets none of this
(tests/ansible/test_site.py starts the same agent unit there).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.rootfs import REPO, Booted, boot, fresh_root, log, remove_root, requires_rootfs, run_playbook

pytestmark = [requires_rootfs, pytest.mark.timeout(1200)]

STAMP = "/var/lib/fieldstation-firstboot/firstboot.done"
AGENT = "fieldstation-agent.service"
PLAYBOOK = f"""\
- name: The firstboot role alone, for an image
  hosts: fieldstation
  roles:
    - role: {REPO / "ansible/roles/firstboot"}
      vars:
        firstboot_image: true
"""


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    tmp = tmp_path_factory.mktemp("firstboot")
    root = fresh_root(tmp)
    # What the image's other roles bring before this one: systemd-resolved, which the role enables on a Debian image.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    log("installing systemd-resolved into the root (apt-get, ~20-40 s)")
    for argv in (["apt-get", "-q", "update"], ["apt-get", "-q", "-y", "--no-install-recommends", "install",
                                               "systemd-resolved"]):
        proc = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"{argv} in the root: rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr}"
    playbook = tmp / "ansible" / "firstboot.yml"  # the role copies the units from {{ playbook_dir }}/../systemd
    playbook.parent.mkdir()
    playbook.write_text(PLAYBOOK)
    (tmp / "systemd").symlink_to(REPO / "systemd")
    log("the firstboot role into the root filesystem")
    run_playbook(root, {}, playbook=playbook, workdir=tmp).assert_ok()
    shutil.copyfile(REPO / "systemd" / AGENT, root / "etc/systemd/system" / AGENT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / AGENT).symlink_to(f"/etc/systemd/system/{AGENT}")
    b = boot(root, timeout=180)
    try:
        yield b
    finally:
        b.stop()
        remove_root(root)


def prop(b: Booted, unit: str, name: str) -> str:
    return b.run(["systemctl", "show", "--value", "-p", name, unit]).stdout.strip()


def test_a_failed_first_boot_holds_the_services_of_its_secrets_and_says_so(booted: Booted) -> None:
    b = booted
    assert prop(b, "fieldstation-firstboot.service", "ActiveState") == "failed"
    assert b.run(["test", "-e", STAMP]).returncode != 0
    b.wait_until(f"systemctl show -p AssertResult --value {AGENT} | grep -qx no", timeout=60)
    assert prop(b, AGENT, "ExecMainStartTimestampMonotonic") == "0"  # never started
    assert "fieldstation-firstboot.service" in b.failed_units()
    assert "Assertion failed" in b.run(["journalctl", "--no-pager", "-b", "-u", AGENT]).stdout
    console = booted.log.read_text(errors="replace")
    assert "FAILED" in console and "Failed to start" in console and "Assertion failed for" in console, console


def test_the_held_service_starts_once_the_stamp_is_there(booted: Booted) -> None:
    b = booted
    b.run(["sh", "-c", f"mkdir -p {Path(STAMP).parent} && touch {STAMP}"], check=True)
    b.run(["systemctl", "reset-failed", AGENT])
    b.run(["systemctl", "start", AGENT], timeout=60)
    assert prop(b, AGENT, "AssertResult") == "yes"
