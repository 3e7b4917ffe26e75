"""The preflight role alone on this machine (a Debian bookworm, over the local connection): what issue 18 added to it.
Grafana's secret_key missing, short or Grafana's own public one, and InfluxDB's unauthenticated backup port moved off
loopback, are each refused in one line naming the variable, before anything changes; a good inventory passes.
tests/journeys/test_inventories.py runs the preflight of the shipped inventories.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.rootfs import ANSIBLE_CFG, ANSIBLE_DIR, ansible_venv

PLAYBOOK = """\
- name: The preflight alone
  hosts: all
  gather_facts: true
  roles:
    - role: preflight
"""
GOOD = {
    "influxdb_admin_password": "adm1n-Secret-pw",
    "influxdb_agent_password": "ag3nt-Secret-pw",
    "influxdb_grafana_password": "gr4fana-Secret-pw",
    "nut_monitor_password": "upsm0n-Secret-pw",
    "grafana_admin_password": "gr4fana-Admin-pw",
    "grafana_secret_key": "gr4fana-Secret-key-0123456789abcdef",
    "grafana_alert_emails": ["lab@example.org"],
}


def preflight(tmp_path: Path, values: dict[str, object]) -> subprocess.CompletedProcess[str]:
    # The preflight reads each role's argument spec beside its playbook (playbook_dir/roles/).
    (tmp_path / "roles").symlink_to(ANSIBLE_DIR / "roles")
    (tmp_path / "preflight.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(values))
    venv = ansible_venv()
    return subprocess.run(
        [str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "preflight.yml"),
         "-e", f"@{tmp_path / 'vars.json'}", "-e", json.dumps({"ansible_python_interpreter": str(venv / "bin/python")})],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_NOCOLOR": "1"},
    )


def test_a_good_inventory_passes(tmp_path: Path) -> None:
    done = preflight(tmp_path, GOOD)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        pytest.param({"grafana_secret_key": None}, "grafana_secret_key is not set", id="missing"),
        pytest.param({"grafana_secret_key": ""}, "grafana_secret_key: empty, a default or shorter than 12", id="empty"),
        pytest.param({"grafana_secret_key": "short-key"}, "grafana_secret_key: empty, a default or shorter than 12",
                     id="short"),
        pytest.param({"grafana_secret_key": "SW2YcwTIb9zpOOhoPsMm"},
                     "grafana_secret_key: empty, a default or shorter than 12", id="grafanas-public-default"),
        pytest.param({"influxdb_backup_bind": "0.0.0.0:8088"}, "influxdb_backup_bind 0.0.0.0:8088: must be 127.0.0.1",
                     id="backup-port-off-loopback"),
    ],
)
def test_refused_in_one_line_naming_the_variable(tmp_path: Path, change: dict[str, object], refusal: str) -> None:
    values = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    done = preflight(tmp_path, values)
    assert done.returncode != 0, done.stdout[-3000:]
    assert refusal in " ".join(done.stdout.split()), done.stdout[-3000:]
    assert GOOD["grafana_secret_key"] not in done.stdout  # values never reach the log
