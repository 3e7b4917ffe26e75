"""The rootfs harness itself (tests/harness/rootfs.py), with a tiny playbook instead of the Fieldstation roles:
cached mmdebstrap tarball → chroot playbook run (twice: idempotent) → nspawn boot → the unit runs → poweroff."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.rootfs import (
    Booted,
    ansible_venv,
    base_rootfs,
    debian_mirror,
    requires_rootfs,
    run_playbook,
)

PLAYBOOK = """\
- name: Harness check
  hosts: fieldstation
  gather_facts: false
  tasks:
    - name: Install socat and nftables
      ansible.builtin.apt:
        name: [socat, nftables]
        update_cache: true
        cache_valid_time: 3600
        install_recommends: false
    - name: Write the greeting from the inventory
      ansible.builtin.copy:
        dest: /etc/harness-greeting
        content: "{{ harness_greeting }}\\n"
        mode: "0644"
    - name: Install the echo unit
      ansible.builtin.copy:
        src: harness-echo.service
        dest: /etc/systemd/system/harness-echo.service
        mode: "0644"
    - name: Enable the echo unit and the firewall
      ansible.builtin.systemd_service:
        name: "{{ item }}"
        enabled: true
      loop: [harness-echo.service, nftables.service]
"""

UNIT = """\
[Unit]
Description=Harness echo server
After=network.target

[Service]
ExecStart=/usr/bin/socat TCP-LISTEN:7777,bind=127.0.0.1,reuseaddr,fork EXEC:/bin/cat

[Install]
WantedBy=multi-user.target
"""

FAILING = """\
- name: Harness failure
  hosts: fieldstation
  gather_facts: false
  tasks:
    - name: Read a file that exists
      ansible.builtin.command: cat /etc/debian_version
      changed_when: false
    - name: Read a file that does not
      ansible.builtin.command: cat /etc/no-such-file
      changed_when: false
"""


def write_playbook(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Path:
    book = tmp_path / "playbook"
    (book / "files").mkdir(parents=True)
    for name, content in (files or {}).items():
        (book / "files" / name).write_text(content)
    (book / "site.yml").write_text(text)
    return book / "site.yml"


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIELDSTATION_DEBIAN_MIRROR", raising=False)
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "nodesource.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n"
    )
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.example.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example.org/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert debian_mirror(etc) == "http://mirror.example.org/debian"

    (etc / "sources.list").write_text(
        "# deb http://commented.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.example.org/debian trixie main contrib\n"
    )
    assert debian_mirror(etc) == "http://one-line.example.org/debian"

    assert debian_mirror(tmp_path / "nothing") == "http://deb.debian.org/debian"
    monkeypatch.setenv("FIELDSTATION_DEBIAN_MIRROR", "http://override.example.org/debian")
    assert debian_mirror(etc) == "http://override.example.org/debian"


@requires_rootfs
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ansible_venv_has_the_pinned_versions() -> None:
    venv = ansible_venv()
    pins = dict(
        line.split("==") for line in (venv.parent / "ansible" / "requirements.txt").read_text().split() if "==" in line
    )
    installed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    versions = dict(line.split("==") for line in installed.split() if "==" in line)
    assert {name: versions.get(name) for name in pins} == pins


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_playbook_into_chroot_is_idempotent_and_the_unit_runs_when_booted(
    rootfs: Path, nspawn: Callable[..., Booted], tmp_path: Path
) -> None:
    t0 = time.monotonic()
    tarball = base_rootfs()
    assert time.monotonic() - t0 < 2, "the base rootfs is cached after the first build"
    assert tarball.name.startswith("bookworm-") and tarball.suffix == ".tar"
    assert (rootfs / "usr/bin/python3").exists() and (rootfs / "lib/systemd/systemd").exists()
    assert (rootfs / "etc/resolv.conf").read_bytes() == Path("/etc/resolv.conf").read_bytes()

    playbook = write_playbook(tmp_path, PLAYBOOK, {"harness-echo.service": UNIT})
    first = run_playbook(rootfs, {"harness_greeting": "hello from the inventory"}, playbook).assert_ok()
    assert first.changed >= 4 and first.failed == 0, first.tail()
    assert (rootfs / "etc/systemd/system/multi-user.target.wants/harness-echo.service").is_symlink()
    assert (rootfs / "etc/harness-greeting").read_text() == "hello from the inventory\n"

    second = run_playbook(rootfs, {"harness_greeting": "hello from the inventory"}, playbook)
    second.assert_idempotent()
    assert second.ok == first.ok

    box = nspawn(rootfs)
    assert box.state == "running", box.failed_units()
    assert box.is_active("harness-echo.service") == "active", box.journal("harness-echo.service")
    assert box.wait_until("echo ping | socat -t2 - TCP:127.0.0.1:7777", timeout=20).strip() == "ping"
    assert box.run("cat /etc/harness-greeting", check=True).stdout == "hello from the inventory\n"

    # The firewall loads inside, in the container's own network namespace, never the host's.
    assert box.is_active("nftables.service") == "active", box.journal("nftables.service")
    assert os.readlink(f"/proc/{box.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    box.run("nft add table inet harness", check=True)
    assert "table inet harness" in box.run("nft list tables", check=True).stdout

    box.stop()
    assert box.proc.returncode == 0, box.log.read_text()[-2000:]
    assert not Path(f"/proc/{box.pid}").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_failing_playbook_is_reported_with_its_task(rootfs: Path, tmp_path: Path) -> None:
    result = run_playbook(rootfs, {}, write_playbook(tmp_path, FAILING))
    assert result.rc != 0
    assert (result.ok, result.failed, result.changed) == (1, 1, 0)
    assert result.failed_tasks == ["Read a file that does not"]
    with pytest.raises(AssertionError, match="Read a file that does not"):
        result.assert_ok()
