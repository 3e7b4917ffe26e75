"""The README's main path, walked as a user walks it: flash the image, edit fieldstation.txt, boot (first boot makes
random passwords), then run the playbook from a laptop over SSH with the shipped inventory and a vault.

The card is the image as built (harness.image), booted with systemd-nspawn in a network namespace of its own: a
station on a LAN that this machine reaches over SSH as the user `admin` that first boot created for the card's key.
The inventory is ansible/inventory.yml with only what a user edits there (the host, their key, the alert address)
plus two things this machine forces: no USB data drive (a container has none) and grafana_install: false (Grafana's
apt repository is unreachable from here; Grafana's configuration is still written and checked). The station's apt
reaches Debian through a forward proxy on this machine (harness.netns), as behind a lab's apt proxy.

Then: InfluxDB takes the vault's passwords and refuses first boot's, the agent's points still arrive, Grafana's
admin password is the vault's, the firewall in force accepts Grafana's port and drops others, and a second run
changes nothing.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.image import Built, flash
from harness.netns import Link, forward_proxy, reachable, veth_namespace
from harness.rootfs import (
    REPO,
    Booted,
    PlaybookResult,
    ansible_venv,
    boot,
    debian_mirror,
    log,
    remove_root,
    requires_rootfs,
    run_playbook,
)

pytestmark = [requires_rootfs, pytest.mark.timeout(3600)]

HOST = "journey-pi"

QUERY = (
    "import json, sys, urllib.error, urllib.parse, urllib.request\n"
    "q = urllib.parse.urlencode({'db': 'fieldstation', 'q': sys.argv[1], 'u': sys.argv[2], 'p': sys.argv[3]})\n"
    "try:\n"
    "    body = urllib.request.urlopen('http://127.0.0.1:8086/query?' + q, timeout=10).read().decode()\n"
    "    print(json.dumps({'status': 200, 'body': json.loads(body)}))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(json.dumps({'status': e.code, 'body': e.read().decode()}))\n"
)


def influx(b: Booted, user: str, password: str, q: str) -> tuple[int, object]:
    """A query from inside the station (InfluxDB listens on its loopback): (HTTP status, answer)."""
    out = b.run(["python3", "-c", QUERY, q, user, password]).stdout
    answer = json.loads(out or '{"status": 0, "body": null}')
    return int(answer["status"]), answer["body"]


def count(b: Booted, user: str, password: str, q: str) -> int:
    status, body = influx(b, user, password, q)
    assert status == 200, body
    series = body["results"][0].get("series", []) if isinstance(body, dict) else []
    return sum(v for s in series for row in s["values"] for v in row[1:] if isinstance(v, int))


def admin_password(setup_toml: str) -> str:
    found = re.search(r'(?ms)^\[admin\].*?^password = "([^"]+)"', setup_toml)
    assert found is not None, setup_toml
    return found[1]


def env_value(text: str, key: str) -> str:
    found = re.search(rf"(?m)^{key}=(.*)$", text)
    assert found is not None, key
    return found[1]


def clone(dest: Path) -> Path:
    """The repository as the user's clone has it: its tracked files (as they are in this working tree)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in listed.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def users_inventory(ansible: Path, link: Link, key: Path, vault: dict[str, str]) -> tuple[Path, Path]:
    """The clone's ansible/inventory.yml as the user edits it, and the vault the README has them create next to it
    (group_vars/fieldstation/vault.yml, with ansible-vault). Returns the inventory and the vault's password file."""
    inventory = ansible / "inventory.yml"
    shipped = yaml.safe_load(inventory.read_text())
    fieldstation = shipped["all"]["children"]["fieldstation"]
    site = fieldstation["children"]["site"]
    (example,) = site["hosts"].values()  # the example's labpi, renamed to the user's station
    site["hosts"] = {HOST: {
        **example,  # its ansible_user: first boot's user, with the key from fieldstation.txt
        "ansible_host": link.guest_ip,  # what HOST.local resolves to on the user's LAN
        # The laptop's own SSH settings (a user has them in ~/.ssh/config):
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={key.parent / 'known_hosts'} "
                                   "-o StrictHostKeyChecking=accept-new",
    }}
    site["vars"]["base_admin_users"][0]["ssh_keys"] = [key.with_suffix(".pub").read_text().strip()]
    site["vars"]["grafana_alert_emails"] = ["lab@example.org"]
    site["vars"]["drives_list"] = []  # forced here: a container has no USB drive
    fieldstation["vars"]["grafana_install"] = False  # forced here: Grafana's apt repository is unreachable
    inventory.write_text(yaml.safe_dump(shipped, sort_keys=False))
    vault_file = ansible / "group_vars/fieldstation/vault.yml"
    vault_file.parent.mkdir(parents=True, exist_ok=True)
    vault_file.write_text(yaml.safe_dump(vault))
    password_file = key.parent / "vault-pass"
    password_file.write_text(secrets.token_urlsafe(16) + "\n")
    password_file.chmod(0o600)
    venv = ansible_venv()
    subprocess.run([str(venv / "bin/ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
                    str(vault_file)], check=True, capture_output=True)
    return inventory, password_file


@dataclass
class Journey:
    booted: Booted
    link: Link
    vault: dict[str, str]
    first_boot: dict[str, str]  # the passwords first boot made
    first: PlaybookResult
    second: PlaybookResult
    ended: float  # wall clock at the end of the first run


@pytest.fixture(scope="module")
def journey(built_image: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    tmp = tmp_path_factory.mktemp("journey")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "user@laptop", "-f", str(key)], check=True)
    log("flashing a card and editing its fieldstation.txt")
    public_key = key.with_suffix(".pub").read_text().strip()
    root = flash(built_image, tmp / "card", {
        "#hostname=fieldstation": f"hostname={HOST}",
        "#ssh_authorized_key=ssh-ed25519 AAAA... you@laptop": f"ssh_authorized_key={public_key}",
    })
    names = sorted(set(re.findall(r"\bvault_\w+", (REPO / "ansible/inventory.yml").read_text())))
    vault = {name: f"Vault-{secrets.token_urlsafe(12)}" for name in names}
    mirror = str(urllib.parse.urlsplit(debian_mirror()).hostname)
    with veth_namespace() as link, forward_proxy(link.host_ip, {mirror}) as proxy:
        proxy.apt_conf(root)
        booted = boot(root, timeout=240, network_namespace=link.namespace)
        try:
            booted.wait_until("systemctl is-active ssh.service fieldstation-influx-setup.service | grep -c active "
                              "| grep -qx 2 && echo up", timeout=180)
            first_boot = {
                "influxdb_admin": admin_password((root / "etc/fieldstation/influx-setup.toml").read_text()),
                "grafana_admin": env_value((root / "etc/default/grafana-server").read_text(),
                                           "GF_SECURITY_ADMIN_PASSWORD"),
            }
            ansible = clone(tmp / "laptop/fieldstation") / "ansible"
            inventory, password_file = users_inventory(ansible, link, key, vault)
            users_env = {"ANSIBLE_CONFIG": str(ansible / "ansible.cfg")}  # as found by `cd ansible`
            args = ["--limit", "site", "--vault-password-file", str(password_file)]
            log("site.yml over SSH from the user's clone, with their inventory and vault")
            first = run_playbook(root, playbook=ansible / "site.yml", extra_args=args, workdir=tmp / "laptop",
                                 inventory=inventory, host=HOST, env=users_env)
            first.assert_ok()
            ended = time.time()
            log("site.yml again: must change nothing")
            second = run_playbook(root, playbook=ansible / "site.yml", extra_args=args, workdir=tmp / "laptop",
                                  inventory=inventory, host=HOST, env=users_env)
            yield Journey(booted, link, vault, first_boot, first, second, ended)
        finally:
            booted.stop()
            remove_root(root)


def test_influxdb_takes_the_vaults_passwords_and_refuses_first_boots(journey: Journey) -> None:
    b, vault = journey.booted, journey.vault
    assert journey.first_boot["influxdb_admin"] != vault["vault_influxdb_admin_password"]
    status, body = influx(b, "admin", journey.first_boot["influxdb_admin"], "SHOW USERS")
    assert status == 401, body
    status, body = influx(b, "admin", vault["vault_influxdb_admin_password"], "SHOW USERS")
    assert status == 200, body
    users = {row[0] for row in body["results"][0]["series"][0]["values"]}  # type: ignore[index]
    assert {"admin", "agent", "grafana"} <= users
    status, body = influx(b, "grafana", vault["vault_influxdb_grafana_password"], "SHOW MEASUREMENTS")
    assert status == 200, body


def test_the_agents_points_arrive_with_the_vaults_password(journey: Journey) -> None:
    b, admin = journey.booted, journey.vault["vault_influxdb_admin_password"]
    agent_toml = b.run(["cat", "/etc/fieldstation/agent.toml"]).stdout
    assert journey.vault["vault_influxdb_agent_password"] in agent_toml
    since = f"SELECT count(*) FROM /.*/ WHERE time > {int(journey.ended * 1e9)}"
    deadline = time.monotonic() + 120
    while (n := count(b, "admin", admin, since)) == 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert n > 0, b.journal("fieldstation-agent.service")
    settled = int((journey.ended + 30) * 1e9)  # the agent's restart and InfluxDB's hand-over are over by then
    new_failures = f"SELECT spread(write_failures) FROM fieldstation_sink WHERE time > {settled}"
    assert count(b, "admin", admin, new_failures) == 0


def test_grafanas_admin_password_is_the_vaults(journey: Journey) -> None:
    env = journey.booted.run(["cat", "/etc/default/grafana-server"]).stdout
    assert env_value(env, "GF_SECURITY_ADMIN_PASSWORD") == journey.vault["vault_grafana_admin_password"]
    assert journey.first_boot["grafana_admin"] not in env


def test_the_firewall_in_force_accepts_grafanas_port_and_drops_the_rest(journey: Journey) -> None:
    b, link = journey.booted, journey.link
    for port in (3000, 3001):  # something listening on each: only the firewall decides
        b.run(["systemd-run", f"--unit=journey-listen-{port}", "--property=DynamicUser=yes",
               "python3", "-m", "http.server", "--bind", "0.0.0.0", str(port)])
        b.wait_until(f"ss -ltn | grep -q ':{port} ' && echo up", timeout=30)
    assert reachable(link.guest_ip, 22)
    assert reachable(link.guest_ip, 3000), b.run(["nft", "list", "ruleset"]).stdout
    assert not reachable(link.guest_ip, 3001)


def test_a_second_run_changes_nothing(journey: Journey) -> None:
    journey.second.assert_idempotent()
