"""site.yml's central play (roles base, hardening, drives, central, grafana in its fleet-only mode) into a Debian bookworm root filesystem over the
chroot connection, twice (the second run changes nothing), then that root booted with systemd-nspawn: Debian's
VictoriaMetrics and vmauth running sandboxed, a station's credential writing over HTTPS with the certificate the
role made and handed to the controller, another refused. Grafana's package comes from Grafana's repository, which
a build machine cannot reach (as in test_site.py: grafana_install false): the grafana role installs the agent's
package, writes grafana-server's settings and renders the fleet's provisioning (VictoriaMetrics, the fleet
dashboard, the silent-station alert, mail) with no config.py and no InfluxDB; the re-render unit runs in its sandbox.

The inventory has the root in the ``central`` group and a station ``plant-a`` (never contacted: no play of this
inventory targets it) whose password the central role reads from its host variables, as from its own vault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.rootfs import boot, fresh_root, log, remove_root, requires_rootfs, run_playbook

pytestmark = [requires_rootfs, pytest.mark.slow, pytest.mark.timeout(2400)]

STATION_PASSWORD = "pl4nt-a-Central-pw"
GRAFANA_SECRETS = {"grafana_admin_password": "centr4l-Admin-pw", "grafana_secret_key": "centr4l-Grafana-secret-key-tests"}


def write_inventory(tmp: Path, root: Path) -> Path:
    central = {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3",
        "base_hostname": "fs-central",
        "base_admin_users": [
            {"name": "tester", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests"], "sudo": True}
        ],
        "drives_list": [],
        "central_tls_names": ["localhost"],
        "central_tls_controller_copy": str(tmp / "central.crt"),
        "central_retention": "2y",
        **GRAFANA_SECRETS,
        "grafana_install": False,
        "grafana_alert_emails": ["fleet@example.org"],
    }
    inventory = {
        "all": {
            "children": {
                "central": {"hosts": {"rootfs": central}},
                "stations": {"hosts": {"plant-a": {"agent_central_password": STATION_PASSWORD}}},
            }
        }
    }
    path = tmp / "inventory.yml"
    path.write_text(json.dumps(inventory, indent=2) + "\n")
    return path


WRITE = """
import base64, ssl, sys, time, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile="/etc/victoria-metrics/tls/central.crt")
user, password = sys.argv[1], sys.argv[2]
req = urllib.request.Request("https://localhost:8427/write?db=fieldstation&precision=s",
                             data=f"simulated,sensor=t1,station=plant-a value=21.5 {int(time.time())}".encode(),
                             method="POST")  # now: within the retention (a point older than it is dropped)
req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
try:
    print(urllib.request.urlopen(req, timeout=10, context=ctx).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""

EXPORT = """
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:8428/internal/force_flush", timeout=10).read()
out = urllib.request.urlopen('http://127.0.0.1:8428/api/v1/export?match[]={station="plant-a"}', timeout=10).read()
print(out.decode())
sys.exit(0 if b"plant-a" in out else 1)  # searchable within a second or so
"""


def check_fleet_grafana(root: Path) -> None:
    """Only the fleet's provisioning, where grafana-server reads it, and its settings from the central host's vault."""
    prov = root / "etc/grafana/provisioning"
    files = sorted(p.relative_to(prov).as_posix() for p in prov.rglob("*") if p.is_file())
    assert files == [
        "alerting/fieldstation-contact-points.yaml",
        "alerting/fieldstation-policies.yaml",
        "alerting/fieldstation-rules.yaml",
        "alerting/fieldstation-templates.yaml",
        "dashboards/fieldstation.yaml",
        "dashboards/fieldstation/fieldstation-fleet.json",
        "datasources/fieldstation.yaml",
    ]
    (vm,) = yaml.safe_load((prov / "datasources/fieldstation.yaml").read_text())["datasources"]  # no InfluxDB
    assert (vm["type"], vm["url"], vm["isDefault"]) == ("prometheus", "http://127.0.0.1:8428", True)
    (group,) = yaml.safe_load((prov / "alerting/fieldstation-rules.yaml").read_text())["groups"]
    assert [r["title"] for r in group["rules"]] == ["A station went silent"]
    assert "fleet@example.org" in (prov / "alerting/fieldstation-contact-points.yaml").read_text()
    (provider,) = yaml.safe_load((prov / "dashboards/fieldstation.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/fieldstation"
    toml = (root / "etc/fieldstation/grafana.toml").read_text()
    assert "fleet_only = true" in toml and 'url = "http://127.0.0.1:8428"' in toml
    env = root / "etc/default/grafana-server"
    assert oct(env.stat().st_mode & 0o777) == "0o640"
    text = env.read_text()
    assert f"GF_SECURITY_SECRET_KEY={GRAFANA_SECRETS['grafana_secret_key']}" in text
    assert f"GF_SECURITY_ADMIN_PASSWORD={GRAFANA_SECRETS['grafana_admin_password']}" in text
    assert "FIELDSTATION_INFLUX" not in text and "PROVISIONING_CFG_DIR=/etc/grafana/provisioning" in text
    assert (root / "opt/fieldstation/venv/bin/fieldstation").exists()
    assert not (root / "etc/systemd/system/fieldstation-agent.service").exists()  # no agent runs here


def test_the_central_play_installs_victoriametrics_behind_vmauth_and_a_station_writes_over_https(
    tmp_path: Path,
) -> None:
    root = fresh_root(tmp_path)
    try:
        inventory = write_inventory(tmp_path, root)
        log("site.yml, the central play, first run")
        run_playbook(root, inventory=inventory, workdir=tmp_path).assert_ok()
        log("second run: must change nothing")
        run_playbook(root, inventory=inventory, workdir=tmp_path).assert_idempotent()
        cert = (tmp_path / "central.crt").read_text()
        assert cert.startswith("-----BEGIN CERTIFICATE-----")  # handed to the stations through the controller
        assert (root / "etc/victoria-metrics/tls/central.crt").read_text() == cert
        vmauth_yml = root / "etc/victoria-metrics/vmauth.yml"
        assert oct(vmauth_yml.stat().st_mode & 0o777) == "0o640" and STATION_PASSWORD in vmauth_yml.read_text()
        assert "-dedup.minScrapeInterval=1ms" in (root / "etc/default/victoria-metrics").read_text()
        check_fleet_grafana(root)

        b = boot(root, timeout=180)
        try:
            for unit in ("victoria-metrics.service", "vmauth.service"):
                b.wait_until(f"systemctl is-active {unit} | grep -qx active && echo ok", timeout=60)
            b.wait_until(
                "python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:8428/health')\" && echo ok",
                timeout=60,
            )
            args = ["python3", "-c", WRITE]
            assert b.run([*args, "plant-a", STATION_PASSWORD], check=True).stdout.strip() == "204"
            assert b.run([*args, "plant-a", "wrong-Password-123"], check=True).stdout.strip() == "400"
            exported = b.wait_until(["python3", "-c", EXPORT], timeout=30)
            assert '"station":"plant-a"' in exported and '"values":[21.5]' in exported
            # VictoriaMetrics listens on loopback only; vmauth on every address, and the firewall lets it in.
            listening = b.run(["ss", "-ltnH"], check=True).stdout
            assert "127.0.0.1:8428" in listening and "0.0.0.0:8427" in listening
            ruleset = b.run(["nft", "list", "ruleset"], check=True).stdout
            assert "tcp dport 8427 accept" in ruleset and "tcp dport 3000 accept" in ruleset
            # The re-render unit, as its path unit starts it: no config.py here, and it exits 0 in its sandbox (the
            # try-restart after it fails only because grafana-server is not installed).
            b.run(["systemctl", "start", "fieldstation-grafana.service"], timeout=120)
            render = b.journal("fieldstation-grafana.service")
            status = b.run(["systemctl", "show", "--value", "-p", "ExecMainStatus", "fieldstation-grafana.service"])
            assert status.stdout.strip() == "0" and "Traceback" not in render, render
            assert b.run(["systemctl", "is-enabled", "fieldstation-grafana.path"]).stdout.strip() == "enabled"
        finally:
            b.stop()
    finally:
        remove_root(root)
