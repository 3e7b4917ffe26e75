"""The units in systemd/ (the only copy of each): valid for systemd, and the agent sandboxed."""

from __future__ import annotations

import subprocess
import sys
from configparser import RawConfigParser
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.*"))
INSTALLED_BIN = "/opt/fieldstation/venv/bin/"


def parse(unit: Path) -> RawConfigParser:
    cp = RawConfigParser(strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(unit.read_text())
    return cp


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    # The installed paths do not exist on a build machine: point them at this venv's copy.
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_BIN, str(Path(sys.executable).parent) + "/"))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "nknown" not in result.stderr, result.stderr  # unknown key or section


def test_the_agent_is_a_sandboxed_notify_service_with_a_watchdog() -> None:
    svc = parse(Path(__file__).parents[2] / "systemd/fieldstation-agent.service")["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["User"] == "fieldstation" and svc["Restart"] == "on-failure"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert svc["DevicePolicy"] == "closed" and svc["StateDirectory"] == "fieldstation"
    assert svc["CapabilityBoundingSet"] == ""


def test_a_config_change_re_renders_grafanas_provisioning() -> None:
    root = Path(__file__).parents[2] / "systemd"
    path = parse(root / "fieldstation-grafana.path")
    watched = [line.split("=", 1)[1] for line in (root / "fieldstation-grafana.path").read_text().splitlines()
               if line.startswith("PathChanged=")]
    assert "/etc/fieldstation/config.py" in watched and "/etc/fieldstation/grafana.toml" in watched
    assert path["Path"]["Unit"] == "fieldstation-grafana.service"
    svc = parse(root / "fieldstation-grafana.service")["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"].endswith("fieldstation grafana render /etc/grafana/provisioning")
    assert svc["ReadWritePaths"] == "/etc/grafana/provisioning" and svc["ProtectSystem"] == "strict"
