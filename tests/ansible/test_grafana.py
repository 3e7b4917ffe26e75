"""The grafana role's settings for grafana-server (issue 18): /etc/default/grafana-server, where the role writes
Grafana's settings as GF_<SECTION>_<KEY> variables, rendered by Ansible with the role's defaults and an inventory's
values: the vault's secret_key, and with grafana_https the protocol, the certificate's paths and Secure cookies. An
image's secret_key is a placeholder its first boot replaces, and its self-signed certificate is asked for, never
baked (tests/agent/test_firstboot.py makes one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from fieldstation.firstboot import CERTIFICATES_DIR, fill_secrets
from harness.rootfs import ANSIBLE_CFG, ANSIBLE_DIR, REPO, ansible_venv

ROLE = ANSIBLE_DIR / "roles" / "grafana"
SECRET_KEY = "Vault-gr4fana-secret-key-0123456789abcdef"
# Grafana's built-in secret_key (conf/defaults.ini): what a station without one would use.
GRAFANAS_DEFAULT = "SW2YcwTIb9zpOOhoPsMm"


def render(template: str, dest: Path, extra: dict[str, object]) -> str:
    venv = ansible_venv()
    subprocess.run(
        [str(venv / "bin" / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / template} dest={dest} mode=0600", "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", json.dumps({"ansible_python_interpreter": str(venv / "bin" / "python"), **extra})],
        check=True, capture_output=True, cwd=ANSIBLE_DIR, env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG)},
    )
    return dest.read_text()


def environment(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_grafana_takes_the_vaults_secret_key_over_plain_http_by_default(tmp_path: Path) -> None:
    env = environment(render("etc/default/grafana-server.j2", tmp_path / "grafana-server",
                             {"grafana_secret_key": SECRET_KEY}))
    assert env["GF_SECURITY_SECRET_KEY"] == SECRET_KEY
    assert env["GF_SERVER_PROTOCOL"] == "http" and env["GF_SECURITY_COOKIE_SECURE"] == "false"
    assert "GF_SERVER_CERT_FILE" not in env
    assert env["GF_SERVER_ROOT_URL"].startswith("http://")


def test_with_https_grafana_serves_the_certificate_and_marks_its_cookie_secure(tmp_path: Path) -> None:
    env = environment(render("etc/default/grafana-server.j2", tmp_path / "grafana-server",
                             {"grafana_secret_key": SECRET_KEY, "grafana_https": True}))
    assert env["GF_SERVER_PROTOCOL"] == "https"
    assert env["GF_SERVER_CERT_FILE"] == "/etc/grafana/tls/grafana.crt"
    assert env["GF_SERVER_CERT_KEY"] == "/etc/grafana/tls/grafana.key"
    assert env["GF_SECURITY_COOKIE_SECURE"] == "true"
    assert env["GF_SECURITY_SECRET_KEY"] == SECRET_KEY
    assert re.fullmatch(r"https://\S+\.local:3000", env["GF_SERVER_ROOT_URL"]), env["GF_SERVER_ROOT_URL"]
    orgs = render("etc/fieldstation/grafana-orgs.toml.j2", tmp_path / "orgs.toml",
                  {"grafana_https": True, "grafana_admin_password": "x" * 12})
    assert 'url = "https://127.0.0.1:3000"' in orgs


def test_a_self_signed_certificate_is_a_request_for_the_station_never_a_key(tmp_path: Path) -> None:
    request = json.loads(render("etc/fieldstation/certificates.d/grafana.json.j2", tmp_path / "grafana.json",
                                {"grafana_https": True}))
    assert {k: request[k] for k in ("cert", "key", "group", "days")} == {
        "cert": "/etc/grafana/tls/grafana.crt", "key": "/etc/grafana/tls/grafana.key", "group": "grafana",
        "days": 3650}


def test_an_images_secret_key_is_made_on_its_first_boot(tmp_path: Path) -> None:
    """image/inventory.yml's placeholder, through the template and fieldstation firstboot's fill_secrets."""
    image = yaml.safe_load((REPO / "image/inventory.yml").read_text())
    placeholder = image["all"]["children"]["fieldstation"]["vars"]["grafana_secret_key"]
    assert placeholder.startswith("FIRSTBOOT_SECRET_")
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    render("etc/default/grafana-server.j2", root / "etc/default/grafana-server", {"grafana_secret_key": placeholder})
    assert "GRAFANA_SECRET_KEY" in fill_secrets(root)
    key = environment((root / "etc/default/grafana-server").read_text())["GF_SECURITY_SECRET_KEY"]
    assert "FIRSTBOOT" not in key and len(key) >= 32 and key != GRAFANAS_DEFAULT
    assert not (root / CERTIFICATES_DIR).exists()  # HTTPS stays off unless the image's inventory asks for it
