"""The inventories a user starts from, used as they are: ansible/inventory.yml (its site and vagrant groups) and
ansible/inventory.example.yml with group_vars/fieldstation/vault.example.yml, through the preflight and to the
nftables ruleset they render, which must accept Grafana's port.

Each run is README's command on a copy of the repository's ansible/ folder as a clone holds it:
``ansible-playbook -i <inventory> site.yml --limit <group>``, with the user's vault where README puts it
(group_vars/fieldstation/vault.yml, encrypted; ``--vault-password-file`` stands in for ``--ask-vault-pass``), or
none: then vault.example.yml's empty placeholders stand and the preflight must refuse them by name. The example and
the vagrant group run unmodified; the shipped site group leaves the SSH key and the alert address to the user, and
is run both unedited (refused on the alert address) and with just those two edits (USERS_EDITS).

Two things are this machine's, not the user's: the host is a Debian root filesystem reached over the chroot
connection (extra vars ansible_connection/ansible_host/ansible_python_interpreter, instead of the inventory's
labpi.local, which does not exist here), and only the preflight and the firewall run (``--tags always,firewall``;
the whole play is tests/ansible/test_site.py's and tests/journeys/test_flash_then_playbook.py's). The root gets
Debian's nftables first, as the hardening role's (untagged) install step would, and netbase, which every Debian
install has. The rendered ruleset is loaded by the root's own nft into a network namespace made for it and listed
back: what is asserted is what the kernel took.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from harness.rootfs import (
    REPO,
    PlaybookResult,
    ansible_venv,
    fresh_root,
    log,
    remove_root,
    requires_rootfs,
    run_playbook,
)

pytestmark = [requires_rootfs, pytest.mark.timeout(1800)]

TAGS = "always,firewall"
VAULT_EXAMPLE = Path("group_vars/fieldstation/vault.example.yml")
# The refusal README promises for a vault left as vault.example.yml has it (roles/preflight/tasks/passwords.yml).
REFUSAL = re.compile(r"(?P<names>[\w, ]+): empty, a default or shorter than 12\s+characters")
SSH, GRAFANA, UPLOAD = 22, 3000, 8080


# What README says a user edits in inventory.yml before the first run (their SSH key and where alert mails go; the
# host stays labpi, reached here over the chroot connection): the shipped site group leaves both empty on purpose.
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFieldstationJourneyTestKeyOnly0000000 user@laptop"
USERS_EDITS = {
    "ssh_keys: []                     # your public key here": f'ssh_keys: ["{USER_KEY}"]',
    "grafana_alert_emails: []             # who gets alert mails": "grafana_alert_emails: [me@lab.example]",
}


@dataclass
class Case:
    inventory: str
    limit: str
    host: str
    vault: bool  # a user's vault.yml next to vault.example.yml
    edits: dict[str, str] = field(default_factory=dict)  # text replaced in the inventory, as in the user's $EDITOR
    omit: frozenset[str] = frozenset()  # names the user's vault.yml leaves out (vault.example.yml's "" stands)


@pytest.fixture(scope="module")
def base_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bookworm root with Debian's nftables (what the hardening role's install step adds) and netbase (nft resolves
    protocol names such as ipv6-icmp through its /etc/protocols; priority important, so on every Debian and Raspberry
    Pi OS install, but not in mmdebstrap's minbase)."""
    tmp = tmp_path_factory.mktemp("inventories")
    root = fresh_root(tmp, "base")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    log("installing nftables into the base root (apt-get, ~20-40 s)")
    install = ["apt-get", "-q", "-y", "--no-install-recommends", "install", "nftables", "netbase"]
    for argv in (["apt-get", "-q", "update"], install):
        proc = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"{argv} in the root: rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr}"
    yield root
    remove_root(root)


def copy_root(base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    return root


def clone(tmp_path: Path) -> Path:
    """ansible/ as a clone has it (a user's own vault.yml, if this checkout has one, is left behind), next to the
    repository's other folders (the inventories name ../agent/ and ../.vagrant/ from the playbook's folder)."""
    top = tmp_path / "clone"
    top.mkdir()
    shutil.copytree(REPO / "ansible", top / "ansible", ignore=shutil.ignore_patterns("vault.yml", "__pycache__"))
    for name in ("agent", "systemd", "provisioning"):
        if (REPO / name).exists():
            (top / name).symlink_to(REPO / name)
    return top / "ansible"


def write_vault(ansible: Path, tmp_path: Path, omit: frozenset[str] = frozenset()) -> tuple[Path, dict[str, str]]:
    """The user's step: every name vault.example.yml sets (but ``omit``), with a strong value, encrypted with
    ansible-vault."""
    names = set(yaml.safe_load((ansible / VAULT_EXAMPLE).read_text())) - omit
    values = {name: f"{name.removeprefix('vault_')}-{secrets.token_hex(8)}" for name in sorted(names)}
    vault = ansible / VAULT_EXAMPLE.with_name("vault.yml")
    vault.write_text(yaml.safe_dump(values))
    password_file = tmp_path / "vault-password"
    password_file.write_text(secrets.token_hex(16) + "\n")
    password_file.chmod(0o600)
    venv = ansible_venv()
    subprocess.run(
        [str(venv / "bin" / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file), str(vault)],
        check=True, capture_output=True, text=True, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
    )
    assert vault.read_text().startswith("$ANSIBLE_VAULT;")
    return password_file, values


def run(case: Case, root: Path, tmp_path: Path) -> tuple[PlaybookResult, dict[str, str]]:
    ansible = clone(tmp_path)
    inventory = ansible / case.inventory
    text = inventory.read_text()
    for old, new in case.edits.items():
        assert text.count(old) == 1, f"{case.inventory} no longer has exactly one {old!r} for the user to edit"
        text = text.replace(old, new)
    inventory.write_text(text)
    args = ["--limit", case.limit, "--tags", TAGS]
    values: dict[str, str] = {}
    if case.vault:
        password_file, values = write_vault(ansible, tmp_path, case.omit)
        args += ["--vault-password-file", str(password_file)]
    target = {"ansible_connection": "community.general.chroot", "ansible_host": str(root),
              "ansible_python_interpreter": "/usr/bin/python3"}
    result = run_playbook(
        root, playbook=ansible / "site.yml", inventory=inventory, host=case.host,
        extra_args=[*args, "-e", json.dumps(target)], workdir=tmp_path,
        env={"ANSIBLE_CONFIG": str(ansible / "ansible.cfg")},
    )
    return result, values


def accepted_tcp_ports(root: Path) -> set[int]:
    """/etc/nftables.conf (and the /etc/nftables.d/*.nft it includes) loaded by the root's nft into a network
    namespace of its own, then listed back: the TCP ports the input chain accepts."""
    proc = subprocess.run(
        ["unshare", "--net", "chroot", str(root), "sh", "-c", "nft -f /etc/nftables.conf && nft list ruleset"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert proc.returncode == 0, f"nft refused the rendered ruleset:\n{proc.stderr}\n{(root / 'etc/nftables.conf').read_text()}"
    assert "policy drop" in proc.stdout, proc.stdout
    return {int(p) for p in re.findall(r"tcp dport (\d+) accept", proc.stdout)}


@pytest.mark.parametrize(
    ("case", "ports"),
    [
        pytest.param(Case("inventory.yml", "site", "labpi", True, USERS_EDITS), {SSH, GRAFANA}, id="shipped-site"),
        pytest.param(Case("inventory.yml", "vagrant", "vagrant-vm", vault=False), {SSH, GRAFANA}, id="shipped-vagrant"),
        # The example's siemens source has an upload token: the upload endpoint opens its port too.
        pytest.param(Case("inventory.example.yml", "site", "labpi", vault=True), {SSH, GRAFANA, UPLOAD}, id="example"),
    ],
)
def test_the_inventory_passes_the_preflight_and_its_firewall_opens_grafana(
    base_root: Path, tmp_path: Path, case: Case, ports: set[int]
) -> None:
    root = copy_root(base_root, tmp_path)
    result, values = run(case, root, tmp_path)
    result.assert_ok()
    assert result.ok > 0 and "Check every role's variables" in result.stdout  # the preflight ran, for this host
    assert (root / "etc/nftables.d").is_dir()
    assert accepted_tcp_ports(root) == ports
    leaked = sorted(name for name, value in values.items() if value in result.stdout)
    assert leaked == [], f"vault values printed by the run (log: {result.log})"
    remove_root(root)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case("inventory.yml", "site", "labpi", False, USERS_EDITS), id="shipped-site"),
        pytest.param(Case("inventory.example.yml", "site", "labpi", False), id="example"),
    ],
)
def test_a_vault_left_as_the_example_is_refused_in_one_line_before_anything_changes(
    base_root: Path, tmp_path: Path, case: Case
) -> None:
    """A user who has not written vault.yml yet: vault.example.yml's empty placeholders stand, and the preflight names
    each password to set (no Jinja 'undefined' trace, nothing written to the host)."""
    inventory = case.inventory
    root = copy_root(base_root, tmp_path)
    result, _ = run(case, root, tmp_path)
    assert result.rc != 0 and result.failed == 1 and result.changed == 0, result.tail()
    assert result.failed_tasks == ["preflight : Refuse empty, default or short passwords"], result.tail()
    found = REFUSAL.search(result.stdout)
    assert found is not None, result.tail()
    refused = {name.strip() for name in found["names"].split(",")}
    example = yaml.safe_load((REPO / "ansible" / inventory).read_text())
    wanted = {k for k, v in json_items(example) if isinstance(v, str) and re.fullmatch(
        r"\{\{ *vault_\w+ *\}\}", v) and k.endswith("password")}
    assert wanted and wanted <= refused, f"refused {sorted(refused)}, the inventory's vault passwords: {sorted(wanted)}"
    assert "undefined" not in result.stdout.lower() and "Traceback" not in result.stdout
    assert not (root / "etc/nftables.d").exists()
    assert (root / "etc/nftables.conf").read_bytes() == (base_root / "etc/nftables.conf").read_bytes()  # Debian's
    remove_root(root)


def json_items(value: object) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair anywhere in a parsed YAML document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k), v
            yield from json_items(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_items(v)


def test_the_shipped_site_group_unedited_is_refused_until_the_user_says_where_alerts_go(
    base_root: Path, tmp_path: Path
) -> None:
    """inventory.yml's site group leaves the alert address to the user: unedited, the preflight stops on it with one
    message, before anything changes (the SSH key, also left empty, is the user's to add at the same time)."""
    root = copy_root(base_root, tmp_path)
    result, _ = run(Case("inventory.yml", "site", "labpi", True), root, tmp_path)
    assert result.rc != 0 and result.failed == 1 and result.changed == 0, result.tail()
    assert result.failed_tasks == ["preflight : Check that alert mails have somewhere to go"], result.tail()
    assert "grafana_alert_emails is empty: alerts would go nowhere" in result.stdout
    assert not (root / "etc/nftables.d").exists()
    remove_root(root)


def test_an_upload_token_left_out_of_the_vault_is_refused_before_anything_changes(
    base_root: Path, tmp_path: Path
) -> None:
    """Every password set, the siemens source's token forgotten: an endpoint facing the LAN must not open with it."""
    root = copy_root(base_root, tmp_path)
    case = Case("inventory.example.yml", "site", "labpi", True, omit=frozenset({"vault_upload_siemens_token"}))
    result, _ = run(case, root, tmp_path)
    assert result.rc != 0 and result.changed == 0, result.tail()
    assert result.failed_tasks and all(t.startswith("preflight : ") for t in result.failed_tasks), result.tail()
    fatal = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("fatal:", "[ERROR]")))
    assert re.search(r"agent_ingest|siemens", fatal), fatal
    assert not (root / "etc/nftables.d").exists()
    remove_root(root)
