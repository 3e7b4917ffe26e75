"""The agent role's agent.toml template, rendered by Ansible itself on localhost with the role's defaults and an
inventory's agent_mqtt_output, then read by the agent exactly as `fieldstation check --settings` does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fieldstation.errors import ConfigError
from fieldstation.settings import AgentSettings, load_toml
from harness.rootfs import ANSIBLE_DIR, ansible_venv

TEMPLATE = ANSIBLE_DIR / "roles/agent/templates/etc/fieldstation/agent.toml.j2"
DEFAULTS = ANSIBLE_DIR / "roles/agent/defaults/main.yml"


def render(tmp_path: Path, extra: dict[str, Any]) -> Path:
    out = tmp_path / "agent.toml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render agent.toml", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(DEFAULTS)],
        "tasks": [{"name": "Render", "ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(out)}}],
    }]))
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    venv = ansible_venv()
    proc = subprocess.run(
        [str(venv / "bin/ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{tmp_path / 'extra.json'}",
         "-e", f"ansible_python_interpreter={venv / 'bin/python'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("value", [{}, {"host": None, "port": None, "password": ""}])
def test_no_mqtt_output_by_default(tmp_path: Path, value: dict[str, Any]) -> None:
    assert "[mqtt_output]" not in render(tmp_path, {"agent_mqtt_output": value}).read_text()
    assert load_toml(tmp_path / "agent.toml", AgentSettings).mqtt_output is None


def test_the_inventory_s_mqtt_output_reaches_the_agent(tmp_path: Path) -> None:
    extra = {"agent_mqtt_output": {
        "host": "homeassistant.lan", "port": 8883, "username": "fieldstation", "password": 'p"w\\ °', "tls": True,
        "qos": 1, "retain": True, "homeassistant_discovery": False, "node_id": "barn", "ca_file": "",
    }}
    out = load_toml(render(tmp_path, extra), AgentSettings).mqtt_output
    assert out is not None
    assert (out.host, out.port, out.username, out.tls, out.qos, out.retain, out.homeassistant_discovery, out.node_id) \
        == ("homeassistant.lan", 8883, "fieldstation", True, 1, True, False, "barn")
    assert out.password is not None and out.password.get_secret_value() == 'p"w\\ °'
    assert out.ca_file is None  # an empty value is left out: the agent's default


def test_a_mistake_in_the_inventory_is_one_line_from_the_agent(tmp_path: Path) -> None:
    path = render(tmp_path, {"agent_mqtt_output": {"port": 1883}})
    with pytest.raises(ConfigError, match=r"agent\.toml: mqtt_output\.host: Field required$"):
        load_toml(path, AgentSettings)
