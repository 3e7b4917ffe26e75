"""The influxdb role's influxdb.conf and its firewall rule for the backup port (issue 18), rendered by Ansible with the
role's defaults and taken by Debian's influxd and this machine's nft.

influxd runs with the rendered file unchanged but for its data directory, as an unprivileged user, in a network
namespace of its own (so the role's own ports, 8086 and 8088, are free there), with the rendered
/etc/nftables.d/output/influxdb.nft loaded into an output chain as hardening's nftables.conf includes it. Then the
sockets it listens on are read with ss, and ``influxd backup -portable`` is run as root (the backup's user) and as
nobody: before the rule both succeed (the port has no authentication), after it only root's does.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.rootfs import ANSIBLE_CFG, ANSIBLE_DIR, ansible_venv

ROLE = ANSIBLE_DIR / "roles" / "influxdb"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
NOBODY = 65534

needs_influxd = pytest.mark.skipif(shutil.which("influxd") is None, reason="Debian's influxd is not installed")
needs_root_and_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, nft and ip (network namespaces)",
)


def render(template: str, dest: Path, extra: dict[str, object] | None = None) -> str:
    """One of the role's templates, rendered by Ansible's template module with the role's defaults."""
    venv = ansible_venv()
    subprocess.run(
        [str(venv / "bin" / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / template} dest={dest} mode=0644", "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", json.dumps({"ansible_python_interpreter": str(venv / "bin" / "python"), **(extra or {})})],
        check=True, capture_output=True, cwd=ANSIBLE_DIR, env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG)},
    )
    return dest.read_text()


def in_force(conf: Path) -> dict[tuple[str, str], str]:
    """``influxd config``: the settings influxd takes from ``conf`` (its own defaults where the file says nothing)."""
    shown = subprocess.run(["influxd", "config", "-config", str(conf)], capture_output=True, text=True, check=True)
    section, settings = "", {}
    for line in shown.stdout.splitlines():
        if m := re.match(r"^\[+(\w+)\]+", line):
            section = m.group(1)
        elif m := re.match(r"^\s*([\w-]+)\s*=\s*(.+)$", line):
            settings.setdefault((section, m.group(1)), m.group(2).strip('"'))
    return settings


@needs_influxd
def test_influxd_takes_pprof_off_both_ports_on_loopback_and_no_reporting(tmp_path: Path) -> None:
    conf = tmp_path / "influxdb.conf"
    text = render("etc/influxdb/influxdb.conf.j2", conf, {"influxdb_data_dir": str(tmp_path / "influxdb")})
    settings = in_force(conf)
    assert settings["", "bind-address"] == "127.0.0.1:8088", text
    assert settings["http", "bind-address"] == "127.0.0.1:8086"
    assert settings["http", "pprof-enabled"] == "false"  # influxd's own default is true
    assert settings["http", "debug-pprof-enabled"] == "false"
    assert settings["http", "auth-enabled"] == "true"
    assert settings["", "reporting-enabled"] == "false"  # Debian's name for it
    # InfluxData's packages read reporting-disabled instead: written for them only.
    text = render("etc/influxdb/influxdb.conf.j2", conf, {"influxdb_package_source": "influxdata"})
    assert re.search(r"(?m)^reporting-disabled = true$", text) and "reporting-enabled" not in text


def test_the_firewall_rule_names_the_backup_port_and_its_users(tmp_path: Path) -> None:
    text = render("etc/nftables.d/output/influxdb.nft.j2", tmp_path / "influxdb.nft",
                  {"influxdb_backup_bind": "127.0.0.1:18088", "influxdb_backup_users": ["root", "backup"]})
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == ['oif "lo" tcp dport 18088 meta skuid != { "root", "backup" } counter reject with tcp reset '
                     'comment "influxdb backup port: root, backup only"'], text


@dataclass
class Station:
    namespace: str
    root: Path
    proc: subprocess.Popen[bytes]

    def run(self, argv: list[str], uid: int = 0) -> subprocess.CompletedProcess[str]:
        as_user = [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return subprocess.run(["ip", "netns", "exec", self.namespace, *as_user, *argv], capture_output=True,
                              text=True, timeout=60, check=False)

    def backup(self, name: str, uid: int) -> subprocess.CompletedProcess[str]:
        dest = self.root / name
        dest.mkdir()
        os.chown(dest, uid, uid)
        # influxd backup retries a refused shard download 10 times, 2 s apart: 20 s is plenty for a backup that works.
        return self.run(["timeout", "20", "influxd", "backup", "-portable", "-host", "127.0.0.1:8088", str(dest)], uid)


@pytest.fixture()
def station() -> Iterator[Station]:
    """influxd with the rendered influxdb.conf (the role's defaults, its data in a directory nobody can reach: pytest's
    are root's only), as nobody, in a fresh network namespace; an admin and a point in the database."""
    tmp_path = Path(tempfile.mkdtemp(prefix="fieldstation-influxdb-"))
    tmp_path.chmod(0o755)
    data = tmp_path / "influxdb"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    conf = tmp_path / "influxdb.conf"
    render("etc/influxdb/influxdb.conf.j2", conf, {"influxdb_data_dir": str(data)})
    namespace = f"fs-influx-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        with (tmp_path / "influxd.log").open("wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", namespace, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                 "--clear-groups", "influxd", "run", "-config", str(conf)], stdout=log, stderr=log)
        st = Station(namespace, tmp_path, proc)
        deadline = time.monotonic() + 60
        while not {"8086", "8088"} <= {port for _, port in listening(st)}:
            assert proc.poll() is None, (tmp_path / "influxd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "influxd did not open 8086 and 8088 within 60 s"
            time.sleep(0.1)
        http = ["influx", "-host", "127.0.0.1", "-port", "8086"]
        for argv in ([*http, "-execute", "CREATE USER admin WITH PASSWORD 'adm1n-pw-test' WITH ALL PRIVILEGES"],
                     [*http, "-username", "admin", "-password", "adm1n-pw-test", "-execute", "CREATE DATABASE fs"],
                     [*http, "-username", "admin", "-password", "adm1n-pw-test", "-database", "fs",
                      "-execute", "INSERT temperature,sensor=t1 value=21.5"]):
            done = st.run(argv)
            assert done.returncode == 0 and "ERR" not in done.stdout, (argv, done.stdout, done.stderr)
        yield st
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def listening(st: Station) -> set[tuple[str, str]]:
    """(address, port) of each TCP socket listening in the namespace."""
    out = st.run(["ss", "-Hltn"]).stdout
    return {tuple(line.split()[3].rsplit(":", 1)) for line in out.splitlines() if line.strip()}  # type: ignore[misc]


@needs_influxd
@needs_root_and_nft
def test_the_backup_port_listens_on_loopback_and_answers_only_the_backups_user(station: Station) -> None:
    assert {addr for addr, port in listening(station) if port == "8088"} == {"127.0.0.1"}
    assert {addr for addr, port in listening(station) if port == "8086"} == {"127.0.0.1"}
    pprof = station.run([sys.executable, "-c", (
        "import urllib.error, urllib.request\n"
        "try: print(urllib.request.urlopen('http://127.0.0.1:8086/debug/pprof/', timeout=10).status)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n")])
    assert pprof.stdout.strip() == "404", pprof  # 200, with profiles, for anyone while pprof-enabled is on

    # Without the rule (the finding): anyone on the host dumps every database.
    before = station.backup("nobody-before", NOBODY)
    assert before.returncode == 0, before.stderr

    snippet = station.root / "output" / "influxdb.nft"
    snippet.parent.mkdir()
    render("etc/nftables.d/output/influxdb.nft.j2", snippet)
    ruleset = station.root / "nftables.conf"
    ruleset.write_text(  # hardening's output chain, as templates/etc/nftables.conf.j2 includes the rules
        "flush ruleset\ntable inet filter {\n\tchain output {\n"
        "\t\ttype filter hook output priority filter; policy accept;\n"
        f'\t\tinclude "{snippet.parent}/*.nft"\n\t}}\n}}\n'
    )
    loaded = station.run(["nft", "-f", str(ruleset)])
    assert loaded.returncode == 0, loaded.stderr

    as_root = station.backup("root", 0)
    assert as_root.returncode == 0, as_root.stderr
    assert {p.suffix for p in (station.root / "root").iterdir()} >= {".meta", ".manifest", ".gz"}
    as_nobody = station.backup("nobody", NOBODY)
    assert as_nobody.returncode != 0, as_nobody.stdout
    assert re.search(r"connection reset|connection refused", as_nobody.stderr + as_nobody.stdout), as_nobody
    got = {p.name: p.stat().st_size for p in (station.root / "nobody").iterdir()}
    assert all(size == 0 for size in got.values()), got  # an empty meta.00.pending at most: nothing left influxd
    counted = station.run(["nft", "list", "chain", "inet", "filter", "output"]).stdout
    assert re.search(r"tcp dport 8088 meta skuid != 0 counter packets [1-9]", counted), counted
