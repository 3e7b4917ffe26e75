"""The apt_key role: an apt repository's key is installed only when its fingerprint is the pinned one.

The check itself (ansible/roles/apt_key/files/apt-key-verify) runs on Debian's own archive keys from
debian-archive-keyring; the role runs with ansible-playbook against this machine, fetching a key over https from a
loopback server with a certificate of the test's (trusted through SSL_CERT_FILE), into a directory of the test's.
The pins in the roles and the image are checked for form, https and one place each.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.rootfs import ANSIBLE_CFG, REPO, ansible_venv

VERIFY = REPO / "ansible/roles/apt_key/files/apt-key-verify"
KEYRINGS = Path("/usr/share/keyrings")
# Debian's "Debian Stable Release Key (12/bookworm)", alone in its file and one of three in debian-archive-keyring.gpg.
BOOKWORM_STABLE = KEYRINGS / "debian-archive-bookworm-stable.gpg"
BOOKWORM_STABLE_FPR = "4D64FEC119C2029067D6E791F8D2585B8783D481"
URL = "https://keys.example.org/archive.key"

pytestmark = pytest.mark.skipif(
    not BOOKWORM_STABLE.exists() or shutil.which("gpg") is None,
    reason="needs gpg and debian-archive-keyring (Debian's archive keys)",
)


def verify(key: Path, fingerprint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VERIFY), str(key), fingerprint, URL], capture_output=True, text=True, timeout=30)


def test_the_pinned_key_is_accepted() -> None:
    result = verify(BOOKWORM_STABLE, BOOKWORM_STABLE_FPR)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_fingerprint_written_in_groups_and_lower_case_is_the_same_pin() -> None:
    grouped = " ".join(re.findall("....", BOOKWORM_STABLE_FPR.lower()))
    assert verify(BOOKWORM_STABLE, grouped).returncode == 0


def test_another_key_is_refused_naming_the_url_and_both_fingerprints() -> None:
    wrong = "B53AE77BADB630A683046005963FA27710458545"
    result = verify(BOOKWORM_STABLE, wrong)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"apt key from {URL} refused: expected fingerprint {wrong}, got {BOOKWORM_STABLE_FPR}"
    )


def test_the_pinned_key_next_to_others_is_refused() -> None:
    """apt would trust every key in a signed-by file: one extra key is a key nobody pinned."""
    result = verify(KEYRINGS / "debian-archive-keyring.gpg", BOOKWORM_STABLE_FPR)
    assert result.returncode == 1
    got = result.stderr.strip().split(", got ", 1)[1].split(", ")
    assert BOOKWORM_STABLE_FPR in got and len(got) > 1, result.stderr


def test_something_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "archive.key"
    page.write_text("<html><body>404 Not Found</body></html>\n")
    result = verify(page, BOOKWORM_STABLE_FPR)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("got no OpenPGP key")


# -- the role, as the grafana and influxdb roles and the image build include it ----------------------------------


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def https_server(directory: Path, tmp: Path) -> Iterator[tuple[str, Path]]:
    """Serves ``directory`` over https on a free loopback port; yields (base URL, the certificate to trust)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def run_role(tmp: Path, url: str, fingerprint: str, dest: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    playbook = tmp / "apt-key.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "The apt_key role against this machine",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "/usr/bin/python3"},  # Debian's, with python3-apt
        "roles": [{"role": "apt_key", "apt_key_url": url, "apt_key_fingerprint": fingerprint,
                   "apt_key_dest": str(dest)}],
    }]))
    venv = ansible_venv()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_NOCOLOR": "1", "SSL_CERT_FILE": str(cert),
           "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([str(venv / "bin/ansible-playbook"), "-i", "localhost,", str(playbook)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(os.geteuid() != 0, reason="the role installs gpg with apt and keys as root")
@pytest.mark.timeout(600)
def test_the_role_installs_a_pinned_key_and_refuses_another(tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    # Published as repositories publish theirs: armored (Debian's file is apt's binary keyring).
    export = ["gpg", "--homedir", str(tmp_path), "--batch", "--no-default-keyring", "--keyring", str(BOOKWORM_STABLE),
              "--export"]
    (served / "archive.key").write_bytes(subprocess.run([*export, "--armor"], capture_output=True, check=True).stdout)
    exported = subprocess.run(export, capture_output=True, check=True).stdout
    with https_server(served, tmp_path) as (base, cert):
        url = f"{base}/archive.key"
        asc, binary = tmp_path / "keyrings/archive.asc", tmp_path / "keyrings/archive.gpg"
        asc.parent.mkdir()
        ok = run_role(tmp_path, url, BOOKWORM_STABLE_FPR, asc, cert)
        assert ok.returncode == 0, ok.stdout[-3000:]
        assert verify(asc, BOOKWORM_STABLE_FPR).returncode == 0
        assert asc.read_bytes().startswith(b"-----BEGIN PGP")
        again = run_role(tmp_path, url, BOOKWORM_STABLE_FPR, asc, cert)
        assert re.search(r"localhost\s*: ok=\d+\s+changed=0\b", again.stdout), again.stdout[-3000:]
        dearmored = run_role(tmp_path, url, BOOKWORM_STABLE_FPR, binary, cert)
        assert dearmored.returncode == 0, dearmored.stdout[-3000:]
        assert binary.read_bytes() == exported  # apt's binary keyring format (.gpg)

        wrong = "CF8A1AF502A2AA2D763BAE7E82B129927FA3303E"
        refused_dest = tmp_path / "keyrings/refused.asc"
        refused = run_role(tmp_path, url, wrong, refused_dest, cert)
    assert refused.returncode != 0
    assert f"apt key from {url} refused: expected fingerprint {wrong}, got {BOOKWORM_STABLE_FPR}" in refused.stdout
    assert not refused_dest.exists()


# -- the pins ----------------------------------------------------------------------------------------------------

PINS = [  # (file, URL variable, fingerprint variable)
    ("ansible/roles/grafana/defaults/main.yml", "grafana_key_url", "grafana_key_fingerprint"),
    ("ansible/roles/influxdb/defaults/main.yml", "influxdb_influxdata_key_url", "influxdb_influxdata_key_fingerprint"),
]


@pytest.mark.parametrize(("path", "url_var", "fpr_var"), PINS)
def test_each_role_pins_its_key_over_https(path: str, url_var: str, fpr_var: str) -> None:
    defaults = yaml.safe_load((REPO / path).read_text())
    assert defaults[url_var].startswith("https://")
    assert re.fullmatch("[0-9A-F]{40}", defaults[fpr_var])
    specs = (REPO / path).parent.parent / "meta/argument_specs.yml"
    assert fpr_var in yaml.safe_load(specs.read_text())["argument_specs"]["main"]["options"]


def test_the_image_pins_the_raspberry_pi_archive_key_over_https() -> None:
    build = yaml.safe_load((REPO / "image/build.yml").read_text())
    raspios = build[0]["vars"]["image_sources"]["raspios"]
    assert raspios["key_url"].startswith("https://")
    assert re.fullmatch("[0-9A-F]{40}", raspios["key_fingerprint"])


def test_no_key_is_fetched_any_other_way() -> None:
    """Every get_url/curl of a key goes through the apt_key role: no other task fetches one."""
    offenders = []
    for path in [*REPO.glob("ansible/**/*.yml"), *REPO.glob("image/**/*.yml")]:
        text = path.read_text()
        if "roles/apt_key/" in str(path):
            continue
        if re.search(r"(get_url|curl|wget)[^\n]*\n?[^\n]*(\.key|\.asc|gpg)", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], json.dumps(offenders)
