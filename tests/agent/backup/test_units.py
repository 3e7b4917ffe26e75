"""The backup's units in systemd/: timers that catch up and spread, services sandboxed like the agent's."""

from __future__ import annotations

from configparser import RawConfigParser
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parents[3] / "systemd"


def parse(unit: Path) -> RawConfigParser:
    cp = RawConfigParser(strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(unit.read_text())
    return cp


@pytest.mark.parametrize("name", ["fieldstation-backup", "fieldstation-backup-verify"])
def test_timer_and_service(name: str) -> None:
    timer = parse(SYSTEMD / f"{name}.timer")
    assert timer["Timer"]["Persistent"] == "true" and timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"
    svc = parse(SYSTEMD / f"{name}.service")["Service"]
    assert svc["Type"] == "oneshot" and svc["ExecStart"].startswith("/opt/fieldstation/venv/bin/fieldstation backup")
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes" and svc["PrivateTmp"] == "yes"
    # root, but only the file-access capabilities (no CAP_SYS_ADMIN: nothing is ever mounted; no CAP_CHOWN: the
    # result is queued for the agent, the spool never opened)
    assert set(svc["CapabilityBoundingSet"].split()) <= {"CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_FOWNER"}
