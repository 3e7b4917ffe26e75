"""`vagrant up`, as far as it can run here: the Vagrantfile's provisioning command, unchanged, inside a Debian
bookworm guest. VirtualBox and Vagrant cannot run on this machine, so the guest is a bookworm root booted with
systemd-nspawn -b; what Vagrant itself does around the provisioner is stood in for at its edges:

- /vagrant, the synced folder: the repository under an overlay (nspawn --overlay). The guest reads the files as
  they are and writes what a synced folder receives (.vagrant/secrets/, the controller's wheel cache) into a layer
  of this test's; the repository is never written.
- The guest's network: a network namespace joined to this machine (harness.netns). apt reaches Debian through a
  forward proxy, as behind a lab's apt proxy; pip reads a wheelhouse of the pinned packages downloaded here,
  through /etc/pip.conf, as a lab's package mirror. The forwarded port (guest 3000) is this machine connecting to
  the guest's address. nspawn keeps CAP_NET_ADMIN only with a private network of its own, so it is granted here
  (root in a VM has it): without it, nftables.service fails with "Operation not permitted".
- Grafana's apt repository is unreachable from here: the command gets `-e '{"grafana_install": false}'`, as the
  other journeys force it. Grafana's configuration, its environment file and its firewall file are still written.

Then: Ansible lives in the venv, not the system Python; the playbook succeeds; the guest's firewall accepts 3000
and drops other ports; Grafana is configured for 0.0.0.0:3000 with the generated admin password; a second
`vagrant provision` reuses the venv and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.netns import Link, forward_proxy, reachable, veth_namespace
from harness.rootfs import (
    ANSIBLE_REQUIREMENTS,
    CACHE,
    CONTAINER_ENV,
    RECAP,
    REPO,
    Booted,
    PlaybookResult,
    _follow,
    ansible_venv,
    boot,
    debian_mirror,
    fresh_root,
    log,
    remove_root,
    requires_rootfs,
)

pytestmark = [requires_rootfs, pytest.mark.timeout(3600)]

HOST = "vagrant-vm"  # the inventory's vagrant group
VENV = "/opt/fieldstation-ansible"  # ansible/vagrant-provision
GUEST_MIRROR = "/srv/pip-mirror"
FORCED = json.dumps({"grafana_install": False})  # Grafana's apt repository is unreachable from here
# The wheel platforms the agent role downloads for the target (ansible/roles/agent/tasks/wheelhouse.yml).
AGENT_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def provision_command() -> str:
    """The command the Vagrantfile's shell provisioner runs in the guest."""
    found = re.search(r'config\.vm\.provision "shell".*?\binline: "([^"]+)"', (REPO / "Vagrantfile").read_text())
    assert found is not None, "the Vagrantfile has no shell provisioner with an inline command"
    return found[1]


def ansible_pin() -> str:
    return next(line for line in ANSIBLE_REQUIREMENTS.read_text().splitlines() if line.startswith("ansible=="))


def pip_mirror() -> Path:
    """A wheelhouse of what pip fetches in the guest: the pinned ansible, the agent's runtime lock and its build
    backend; downloaded with this machine's pip and cached per content."""
    lock = REPO / "agent/requirements-runtime.lock"
    build = tomllib.loads((REPO / "agent/pyproject.toml").read_text())["build-system"]["requires"]
    digest = hashlib.sha256("\0".join([ansible_pin(), lock.read_text(), *build]).encode()).hexdigest()[:12]
    dest = CACHE / "pip-mirror" / digest
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    pip = [str(ansible_venv() / "bin/python"), "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "--dest", str(dest)]
    log(f"downloading the guest's wheels into {dest}")
    for args in ([ansible_pin(), *build],
                 ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                  *(f"--platform={p}" for p in AGENT_PLATFORMS), "-r", str(lock)]):
        proc = subprocess.run([*pip, *args], capture_output=True, text=True)
        assert proc.returncode == 0, f"pip download {args} failed:\n{proc.stdout}\n{proc.stderr}"
    (dest / ".complete").touch()
    return dest


def provision(b: Booted, out: Path, timeout: float = 2400) -> PlaybookResult:
    """Runs the Vagrantfile's provisioning command inside the guest as root (as Vagrant's shell provisioner does),
    with its output followed into ``out``."""
    command = f"{provision_command()} -e '{FORCED}'"
    log(f"in the guest: {command} (output: {out})")
    t0 = time.monotonic()
    with out.open("wb") as sink:
        proc = subprocess.Popen(["nsenter", "-t", str(b.pid), "-a", "sh", "-c", f"cd / && {command}"],
                                env=CONTAINER_ENV, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _follow(proc, out, t0, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    stdout = out.read_text(errors="replace")
    counts = {"ok": -1, "changed": -1, "failed": -1, "unreachable": -1, "skipped": -1}  # -1: no PLAY RECAP
    for m in RECAP.finditer(stdout):
        if m["host"] == HOST:
            counts = {k: int(m[k] or 0) for k in counts}
    result = PlaybookResult(proc.returncode, stdout, log=out, seconds=time.monotonic() - t0, **counts)
    log(f"provisioned: rc={result.rc} ok={result.ok} changed={result.changed} failed={result.failed} "
        f"in {result.seconds:.0f} s")
    return result


@dataclass
class Guest:
    booted: Booted
    link: Link
    synced: Path  # what the guest wrote into /vagrant
    first: PlaybookResult
    second: PlaybookResult


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    tmp = tmp_path_factory.mktemp("vagrant")
    wheels = pip_mirror()
    root = fresh_root(tmp)
    (root / "etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {GUEST_MIRROR}\n")
    synced = tmp / "synced"
    synced.mkdir()
    mirror = str(urllib.parse.urlsplit(debian_mirror()).hostname)
    with veth_namespace() as link, forward_proxy(link.host_ip, {mirror}) as proxy:
        proxy.apt_conf(root)
        booted = boot(root, timeout=180, network_namespace=link.namespace,
                      extra_args=[f"--overlay={REPO}:{synced}:/vagrant", f"--bind-ro={wheels}:{GUEST_MIRROR}",
                                  "--capability=CAP_NET_ADMIN"])
        try:
            first = provision(booted, tmp / "provision-1.log")
            first.assert_ok()
            log("vagrant provision again: the venv is reused and nothing changes")
            second = provision(booted, tmp / "provision-2.log")
            yield Guest(booted, link, synced, first, second)
        finally:
            booted.stop()
            remove_root(root)


def test_ansible_runs_from_a_venv_not_the_system_python(guest: Guest) -> None:
    b = guest.booted
    guest.first.assert_ok()
    assert f"installing {ansible_pin()} into {VENV}" in guest.first.stdout
    shown = b.run([f"{VENV}/bin/python", "-m", "pip", "show", "ansible"], check=True).stdout
    assert f"Version: {ansible_pin().split('==')[1]}" in shown
    assert b.run(["python3", "-c", "import ansible"]).returncode != 0  # the system Python stays Debian's


def test_a_second_provision_reuses_the_venv_and_changes_nothing(guest: Guest) -> None:
    second = guest.second.assert_ok()
    assert "installing ansible" not in second.stdout
    assert second.changed_tasks == [], f"changed on a re-run: {second.changed_tasks}"


def test_the_guests_firewall_accepts_grafanas_port_and_drops_the_rest(guest: Guest) -> None:
    b, link = guest.booted, guest.link
    rules = b.run(["nft", "list", "ruleset"]).stdout
    assert "policy drop" in rules and re.search(r"tcp dport 3000 accept", rules), rules
    for port in (3000, 3001):  # something listening on each (Grafana is not installed): only the firewall decides
        b.run(["systemd-run", f"--unit=vagrant-listen-{port}", "--property=DynamicUser=yes",
               "python3", "-m", "http.server", "--bind", "0.0.0.0", str(port)])
        b.wait_until(f"ss -ltn | grep -q ':{port} ' && echo up", timeout=30)
    assert reachable(link.guest_ip, 3000), rules  # where Vagrant's forwarded port (localhost:3000) arrives
    assert not reachable(link.guest_ip, 3001)


def test_grafana_listens_on_3000_with_the_generated_admin_password(guest: Guest) -> None:
    env = guest.booted.run(["cat", "/etc/default/grafana-server"], check=True).stdout
    assert "GF_SERVER_HTTP_ADDR=0.0.0.0" in env.splitlines() and "GF_SERVER_HTTP_PORT=3000" in env.splitlines()
    generated = (guest.synced / ".vagrant/secrets/grafana_admin").read_text().strip()
    assert len(generated) >= 16
    assert f"GF_SECURITY_ADMIN_PASSWORD={generated}" in env.splitlines()
    assert stat.S_IMODE((guest.synced / ".vagrant/secrets").stat().st_mode) == 0o700  # the VM's secrets: root's only


@pytest.mark.parametrize("unit", ["influxdb.service", "fieldstation-agent.service", "nut-server.service",
                                  "fieldstation-simulate.service", "nftables.service"])
def test_the_stations_units_run_in_the_guest(guest: Guest, unit: str) -> None:
    b = guest.booted
    deadline = time.monotonic() + 120
    while b.is_active(unit) != "active" and time.monotonic() < deadline:
        time.sleep(1)
    status = b.run(["systemctl", "status", "--no-pager", "--lines=0", unit]).stdout
    assert b.is_active(unit) == "active", f"{status}\n{b.journal(unit)}"
