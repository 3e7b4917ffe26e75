"""A real OpenSSH server on loopback playing a remote host the UPS shuts down (Debian's openssh-server and sudo).

It runs as root in its own mount namespace, where /etc/passwd, /etc/shadow, /etc/group and /etc/sudoers are bind
mounts of copies in tmp with the test's users and sudo rules added: this machine's own files are never touched.
Its host key is its own (in tmp); each user's authorized keys are tmp/authorized_keys/<user>. The sudo rules allow
harmless commands only (/bin/echo): nothing here can shut anything down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the SSH secondary needs root (sshd, its own mount namespace)"
    missing = [p for p in (str(SSHD), "/usr/bin/sudo", "/usr/bin/ssh", "/usr/bin/unshare") if not Path(p).exists()]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install openssh-server sudo openssh-client; tests/run does)"
    return None


requires_sshd = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def keygen(path: Path, comment: str = "") -> str:
    """A new ed25519 key pair at ``path``; returns the public key line (``ssh-ed25519 AAAA... comment``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip() if path.suffix else Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Secondary:
    dir: Path
    port: int
    host_key: str  # the public host key line, as the inventory's host_key
    users: dict[str, Path] = field(default_factory=dict)  # user → the private key it accepts
    host: str = "127.0.0.1"


@contextlib.contextmanager
def secondary(tmp: Path, users: dict[str, list[str]]) -> Iterator[Secondary]:
    """sshd on 127.0.0.1:<free port>; ``users``: name → the commands sudo lets it run without a password."""
    tmp.mkdir(parents=True, exist_ok=True)
    etc = tmp / "etc"
    etc.mkdir()
    host_key = keygen(tmp / "host_key")
    passwd, shadow, group = (Path("/etc/passwd").read_text(), Path("/etc/shadow").read_text(),
                             Path("/etc/group").read_text())  # fmt: skip
    sudoers = "Defaults !lecture\nroot ALL=(ALL:ALL) ALL\n"
    (tmp / "authorized_keys").mkdir()
    home = tmp / "home"
    home.mkdir()
    keys: dict[str, Path] = {}
    for n, (user, commands) in enumerate(users.items()):
        uid = 64000 + n
        passwd += f"{user}:x:{uid}:{uid}::{home}:/bin/sh\n"
        shadow += f"{user}:*:20000:0:99999:7:::\n"  # no password (never locked): key logins only
        group += f"{user}:x:{uid}:\n"
        if commands:
            sudoers += f"{user} ALL=(root) NOPASSWD: {', '.join(commands)}\n"
        keys[user] = tmp / f"{user}_key"
        keygen(keys[user], user)
        (tmp / "authorized_keys" / user).write_text(Path(f"{keys[user]}.pub").read_text())
    for name, text, mode in (("passwd", passwd, 0o644), ("shadow", shadow, 0o640), ("group", group, 0o644),
                             ("sudoers", sudoers, 0o440)):  # fmt: skip
        (etc / name).write_text(text)
        (etc / name).chmod(mode)
    # sshd reads a user's authorized keys as that user: pytest's 0700 tmp directories must let it through.
    for d in (tmp, *tmp.parents):
        if d in (Path("/"), Path("/tmp")):  # where pytest's basetemp lives
            break
        d.chmod(d.stat().st_mode | 0o711)
    (tmp / "authorized_keys").chmod(0o755)
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin no\nLogLevel VERBOSE\n"
    )
    mounts = "; ".join(f"mount --bind {etc / n} /etc/{n}" for n in ("passwd", "shadow", "group", "sudoers"))
    script = f"set -e; mkdir -p /run/sshd; {mounts}; exec {SSHD} -D -e -f {config}"
    log = (tmp / "sshd.log").open("wb")
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sshd did not start (rc={proc.poll()}):\n{(tmp / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield Secondary(tmp, port, host_key, keys)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


# -- the nut role's remote-shutdown tasks, run for real into tmp ---------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
NUT_ROLE = REPO / "ansible/roles/nut"
PLAYBOOK = f"""\
- name: The nut role's remote shutdowns alone, into a tmp directory
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the role's remote_shutdown tasks
      ansible.builtin.include_role:
        name: {NUT_ROLE}
        tasks_from: remote_shutdown
"""


@dataclass
class Deployed:
    toml: Path
    known_hosts: Path
    script: Path
    keys: Path
    output: str


def deploy_remote_shutdown(tmp: Path, remote: list[dict[str, object]]) -> Deployed:
    """ansible-playbook running ansible/roles/nut/tasks/remote_shutdown.yml on this machine (connection local) with
    ``nut_remote_shutdown`` = ``remote`` and the role's paths moved into ``tmp`` (extra vars); ssh-keyscan runs
    here, as it runs on the station. Raises with the output when the play fails."""
    import json

    venv = REPO / ".venv-ansible"
    if not (venv / "bin/ansible-playbook").exists():
        pytest.skip("needs .venv-ansible (tests/run creates it)")
    tmp.mkdir(parents=True, exist_ok=True)
    d = Deployed(tmp / "ups-shutdown.toml", tmp / "nut-known_hosts", tmp / "fieldstation-ups-shutdown", tmp / "keys",
                 "")  # fmt: skip
    extra = {
        "nut_remote_shutdown": remote,
        "nut_shutdown_keys_dir": str(d.keys),
        "nut_known_hosts_file": str(d.known_hosts),
        "nut_shutdown_file": str(d.toml),
        "nut_shutdown_command": str(d.script),
    }
    (tmp / "extra.json").write_text(json.dumps(extra))
    (tmp / "play.yml").write_text(PLAYBOOK)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env |= {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "ANSIBLE_PYTHON_INTERPRETER": str(venv / "bin/python")}  # fmt: skip
    proc = subprocess.run(
        [str(venv / "bin/ansible-playbook"), "-i", "localhost,", "-e", f"@{tmp / 'extra.json'}", str(tmp / "play.yml")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp,
    )  # fmt: skip
    d.output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"the play failed (rc={proc.returncode}):\n{d.output[-4000:]}")
    return d
