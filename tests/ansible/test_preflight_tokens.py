"""The preflight's upload-token check, run by ansible-playbook on localhost (the role's own tasks, nothing changed
on the host): tokens of 128 bits pass, shorter ones stop the playbook naming the source, never the value."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fieldstation.ingest.upload import TOKEN_ALPHABETS, min_token_length
from harness.rootfs import ANSIBLE_CFG, ANSIBLE_DIR, ansible_venv

PREFLIGHT_VARS = ANSIBLE_DIR / "roles/preflight/vars/main.yml"
STRONG = {"hex": "0123456789abcdef0123456789abcdef", "b64": "Zm9yLXRlc3RzLW9ubHkx_-",
          "digits": "012345678901234567890123456789012345678"}
WEAK = {"hex": "0123456789abcdef0123456789abcde", "b64": "Zm9yLXRlc3RzLW9ubHkx_",
        "digits": "01234567890123456789012345678901234567", "spaces": "a token with spaces in it, long enough"}


def preflight_tokens(tmp_path: Path, tokens: dict[str, str]) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "tokens.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                         "tasks": [{"ansible.builtin.include_role": {"name": "preflight",
                                                                                    "tasks_from": "tokens.yml"}}]}]))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"agent_ingest": {"enabled": True, "sources": [
        {"name": name, "format": "siemens", "token": token} for name, token in tokens.items()]}}))
    venv = ansible_venv()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0", "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(var, None)
    return subprocess.run([str(venv / "bin/ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{extra}"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)


def test_upload_tokens_of_128_bits_pass(tmp_path: Path) -> None:
    result = preflight_tokens(tmp_path, STRONG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout


def test_upload_tokens_under_128_bits_stop_the_playbook_naming_only_the_sources(tmp_path: Path) -> None:
    result = preflight_tokens(tmp_path, {**WEAK, "strong": STRONG["hex"]})
    assert result.returncode != 0
    assert ("agent_ingest sources hex (32 characters or more), b64 (22 characters or more), digits (39 characters or "
            "more), spaces (22 characters or more): an upload token needs 128 bits") in " ".join(result.stdout.split())
    assert "strong" not in result.stdout
    for token in [*WEAK.values(), *STRONG.values()]:
        assert token not in result.stdout + result.stderr


@pytest.mark.parametrize("token", [*STRONG.values(), *WEAK.values(), "ABCDEF0123", "Zm9y.LX~R"])
def test_the_preflight_and_the_endpoint_apply_the_same_table(token: str) -> None:
    alphabets = yaml.safe_load(PREFLIGHT_VARS.read_text())["preflight_token_alphabets"]
    needs = next((a["min_length"] for a in alphabets if re.match(a["pattern"], token)), None)
    python = next((p for p, _ in TOKEN_ALPHABETS if re.match(p, token)), None)
    assert (needs is None) == (python is None)
    if needs is not None:
        assert needs == min_token_length(token)
