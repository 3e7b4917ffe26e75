"""The hardening role alone, unmodified, into a Debian bookworm root over the chroot connection (as the image build
runs it), then what it wrote checked by the root's own programs: sshd's effective configuration (``sshd -T``) and
the nftables ruleset loaded by the root's nft into a network namespace on a veth link, where this machine plays a
host on the LAN opening SSH connections to it. Nothing listens on port 22 in the namespace: a connection the
firewall lets through is refused (a reset), one it drops times out. tests/ansible/test_site.py runs the whole play.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import Link, veth_namespace
from harness.rootfs import REPO, fresh_root, log, remove_root, requires_rootfs, run_playbook

pytestmark = [requires_rootfs, pytest.mark.timeout(1200)]

# The role's sshd drop-in (templates/etc/ssh/sshd_config.d/fieldstation.conf.j2), as sshd -T prints it.
SSHD_EFFECTIVE = {
    "passwordauthentication": "no",
    "permitrootlogin": "no",
    "allowtcpforwarding": "no",
    "allowagentforwarding": "no",
    "allowstreamlocalforwarding": "no",
    "x11forwarding": "no",
    "permittunnel": "no",
    "maxauthtries": "3",
}
# The firewall's SSH limit (templates/etc/nftables.conf.j2): a burst of 5 new connections, then 10 a minute.
BURST = 5
ATTEMPTS = 15
PATH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
PLAYBOOK = f"""\
- name: The hardening role alone
  hosts: fieldstation
  roles:
    - role: {REPO / "ansible/roles/hardening"}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("hardening")
    root = fresh_root(tmp)
    playbook = tmp / "hardening.yml"
    playbook.write_text(PLAYBOOK)
    log("the hardening role into the root filesystem")
    run_playbook(root, {}, playbook=playbook, workdir=tmp).assert_ok()
    yield root
    remove_root(root)


def sshd_effective(root: Path) -> dict[str, str]:
    """sshd -T in the root with a throw-away host key (a root filesystem may have none until first boot)."""
    script = (
        "set -e; mkdir -p /run/sshd; tmp=$(mktemp -d); ssh-keygen -q -t ed25519 -N '' -f $tmp/key; "
        "/usr/sbin/sshd -T -h $tmp/key; rm -rf $tmp"
    )
    proc = subprocess.run(["chroot", str(root), "sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env=PATH_ENV)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def test_sshd_forwards_nothing_and_allows_three_tries_per_connection(root: Path) -> None:
    effective = sshd_effective(root)
    assert {k: effective.get(k) for k in SSHD_EFFECTIVE} == SSHD_EFFECTIVE


@pytest.fixture()
def firewalled(root: Path) -> Iterator[Link]:
    """The root's /etc/nftables.conf loaded by its own nft in a namespace linked to this machine, which also gets an
    IPv6 address on the link and a second IPv4 address (another host on the LAN)."""
    with veth_namespace() as link:
        ns = ["ip", "-n", link.namespace]
        subprocess.run(["ip", "addr", "add", "fd5e:f1e1:d57a::1/64", "dev", link.host_if, "nodad"], check=True)
        subprocess.run([*ns, "addr", "add", "fd5e:f1e1:d57a::2/64", "dev", link.guest_if, "nodad"], check=True)
        subprocess.run(["ip", "addr", "add", f"{second_ip(link)}/32", "dev", link.host_if], check=True)
        subprocess.run([*ns, "route", "add", f"{second_ip(link)}/32", "dev", link.guest_if], check=True)
        proc = subprocess.run(
            ["ip", "netns", "exec", link.namespace, "chroot", str(root), "nft", "-f", "/etc/nftables.conf"],
            capture_output=True, text=True, timeout=60, env=PATH_ENV,
        )
        assert proc.returncode == 0, f"nft refused the rendered ruleset:\n{proc.stderr}"
        yield link


def second_ip(link: Link) -> str:
    """An address outside the link's /30, in the benchmarking range (RFC 2544) that no LAN here uses."""
    return "198.18." + ".".join(link.host_ip.split(".")[2:])


def attempt(destination: str, source: str) -> str:
    """One new TCP connection to port 22: 'let through' (refused by the empty namespace) or 'dropped'."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((source, 0))
        s.settimeout(1.5)
        try:
            s.connect((destination, 22))
        except ConnectionRefusedError:
            return "let through"
        except TimeoutError:
            return "dropped"
    raise AssertionError(f"something accepted a connection on {destination} port 22")


def test_new_ssh_connections_are_rate_limited_per_source(firewalled: Link) -> None:
    link = firewalled
    v4 = [attempt(link.guest_ip, link.host_ip) for _ in range(ATTEMPTS)]
    # The burst, then a token every 6 s: at most a couple more while the dropped ones time out.
    assert v4[:BURST] == ["let through"] * BURST, v4
    assert v4.count("dropped") >= ATTEMPTS - BURST - 3, v4
    # Another host on the LAN is not held up by the first one's flood, nor is the same host over IPv6.
    assert attempt(link.guest_ip, second_ip(link)) == "let through"
    v6 = [attempt("fd5e:f1e1:d57a::2", "fd5e:f1e1:d57a::1") for _ in range(ATTEMPTS)]
    assert v6[:BURST] == ["let through"] * BURST, v6
    assert v6.count("dropped") >= ATTEMPTS - BURST - 3, v6
    listed = subprocess.run(["ip", "netns", "exec", link.namespace, "nft", "list", "chain", "inet", "filter", "input"],
                            capture_output=True, text=True, check=True).stdout
    # What tests/journeys/test_inventories.py and test_site.py read as the open ports: 22 stays among them.
    assert "tcp dport 22 accept" in listed, listed
