"""The playbook, the inventories and every role pass ansible-lint's production profile, and the Vagrantfile parses."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.rootfs import ansible_venv

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(bool(os.environ.get("FIELDSTATION_SECOND_PASS")), reason="run once, on the first pass")


@pytest.mark.timeout(600)
def test_ansible_lint_production_profile() -> None:
    venv = ansible_venv()
    result = subprocess.run(
        [str(venv / "bin" / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=ROOT / "ansible", capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_every_role_validates_its_variables() -> None:
    for role in sorted((ROOT / "ansible" / "roles").iterdir()):
        assert (role / "meta" / "argument_specs.yml").exists(), role.name
        assert (role / "defaults" / "main.yml").exists(), role.name
        prefix = f"{role.name}_"
        for line in (role / "defaults" / "main.yml").read_text().splitlines():
            if line and not line.startswith((" ", "#", "-")) and ":" in line:
                assert line.startswith(prefix), f"{role.name}: {line.split(':')[0]} lacks the role's prefix"


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (tests/run installs it)")
def test_the_vagrantfile_parses() -> None:
    result = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr
