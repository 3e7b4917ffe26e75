"""image/build.yml passes ansible-lint's production profile, as the site playbook and its roles do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.rootfs import ansible_venv

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(bool(os.environ.get("FIELDSTATION_SECOND_PASS")), reason="run once, on the first pass")


@pytest.mark.timeout(600)
def test_the_image_playbook_passes_ansible_lint_production() -> None:
    venv = ansible_venv()
    result = subprocess.run(
        [str(venv / "bin" / "ansible-lint"), "--profile", "production", "--nocolor", "build.yml"],
        cwd=ROOT / "image", capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(ROOT / "ansible/ansible.cfg")},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr
