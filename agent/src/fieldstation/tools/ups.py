"""``fieldstation ups test-shutdown``: a dry run of the remote shutdowns upsmon's SHUTDOWNCMD performs.

It reads the file the nut role renders (/etc/fieldstation/ups-shutdown.toml: each host, its user, key and command,
the pinned known_hosts file and the very ssh options of /usr/local/sbin/fieldstation-ups-shutdown) and, per host,
proves without shutting anything down:

1. **reachable**: a TCP connection to its SSH port;
2. **host key OK**: ssh accepts the host's key against the pinned known_hosts only (``StrictHostKeyChecking=yes``:
   a changed key is named, never accepted), and the user accepts the dedicated key: an authentication with no
   session (``ssh -N``), so nothing runs on the host, not even a forced command;
3. **allowed**: the host's ``check`` command (default ``sudo -n -l <the command>`` for a ``sudo …`` command: sudo
   lists the command when its rule lets this user run it without a password, and runs nothing), over the same,
   already verified connection.

One line per host; exit 1 when any host fails.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fieldstation.errors import ConfigError

DEFAULT_FILE = Path("/etc/fieldstation/ups-shutdown.toml")
# ssh's own wording (OpenSSH sshconnect.c), how its failures are told apart.
HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
HOST_KEY_FAILED = "Host key verification failed"
KEY_REFUSED = "Permission denied"


class RemoteHost(BaseModel):
    """One host shut down over SSH (an entry of the role's nut_remote_shutdown)."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(min_length=1)
    command: str = Field(min_length=1)
    key: Path
    check: str | None = None

    def check_command(self) -> str | None:
        """The dry run: ``check``, else ``sudo -n -l …`` for a sudo command, else None (nothing proves it)."""
        if self.check:
            return self.check
        words = shlex.split(self.command)
        if words and words[0] == "sudo":
            rest = words[1:]
            while rest and rest[0].startswith("-"):  # sudo's own flags (-n, -H) are not the command
                rest = rest[1:]
            return shlex.join(["sudo", "-n", "-l", *rest]) if rest else None
        return None


class ShutdownFile(BaseModel):
    """/etc/fieldstation/ups-shutdown.toml, written by the nut role."""

    model_config = ConfigDict(extra="forbid")
    known_hosts: Path
    ssh_options: list[str]
    hosts: list[RemoteHost] = []


@dataclass
class Result:
    host: RemoteHost
    ok: bool
    steps: list[str]

    def line(self) -> str:
        h = self.host
        return f"{h.user}@{h.host}:{h.port}  {'OK' if self.ok else 'FAIL'}  {', '.join(self.steps)}"


def load(path: Path) -> ShutdownFile:
    from fieldstation.settings import load_toml

    return load_toml(path, ShutdownFile)


def _ssh(conf: ShutdownFile, h: RemoteHost, control: Path, *extra: str) -> list[str]:
    return [
        "ssh", *conf.ssh_options, "-i", str(h.key), "-p", str(h.port),
        "-o", f"ControlPath={control}", *extra, f"{h.user}@{h.host}",
    ]  # fmt: skip


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def check_host(conf: ShutdownFile, h: RemoteHost, timeout: float) -> Result:
    steps: list[str] = []
    try:
        socket.create_connection((h.host, h.port), timeout=timeout).close()
    except OSError as exc:
        return Result(h, False, [f"unreachable: {exc}"])
    steps.append("reachable")
    if not h.key.is_file():
        return Result(h, False, [*steps, f"no key: {h.key} missing (deploy the nut role)"])
    with tempfile.TemporaryDirectory(prefix="fieldstation-ups-") as tmp:
        control = Path(tmp) / "control"
        # The master authenticates and forks to the background with no session (-f -N); ControlPersist ends it
        # on its own should the 'exit' below never come.
        auth = subprocess.run(
            _ssh(conf, h, control, "-o", "ControlMaster=yes", "-o", "ControlPersist=30", "-o",
                 f"ConnectTimeout={max(1, int(timeout))}", "-f", "-N"),
            check=False, capture_output=True, text=True, timeout=timeout + 5, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if auth.returncode != 0:
                if HOST_KEY_CHANGED in auth.stderr:
                    why = f"host key MISMATCH: the host's key is not the one pinned in {conf.known_hosts}"
                elif HOST_KEY_FAILED in auth.stderr:
                    why = f"host key unknown: none pinned for it in {conf.known_hosts} (deploy the nut role)"
                elif KEY_REFUSED in auth.stderr:
                    steps.append("host key OK")
                    why = f"key refused: {h.user} does not accept {h.key}"
                else:
                    why = f"ssh failed: {_last_line(auth.stderr)}"
                return Result(h, False, [*steps, why])
            steps.append("host key OK")
            check = h.check_command()
            if check is None:
                return Result(h, False, [*steps, f"allowed: not proved (command {h.command!r} has no sudo: set check)"])
            probe = subprocess.run(
                [*_ssh(conf, h, control), check], check=False, capture_output=True, text=True, timeout=timeout + 5,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if probe.returncode != 0:
                detail = _last_line(probe.stderr or probe.stdout)
                return Result(h, False, [*steps, f"NOT allowed: {check!r} exited {probe.returncode}: {detail}"])
            steps.append(f"allowed ({check})")
            return Result(h, True, steps)
        finally:
            subprocess.run(
                _ssh(conf, h, control, "-O", "exit"), check=False, capture_output=True, timeout=timeout + 5,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip


def check_all(conf: ShutdownFile, timeout: float) -> list[Result]:
    return [check_host(conf, h, timeout) for h in conf.hosts]


def cmd_test_shutdown(path: Path, timeout: float) -> int:
    conf = load(path)
    if not conf.known_hosts.is_file():
        raise ConfigError(f"{path}: known_hosts: {conf.known_hosts} missing (deploy the nut role)")
    if not conf.hosts:
        print(f"{path}: no remote hosts to shut down")
        return 0
    results = check_all(conf, timeout)
    for r in results:
        print(r.line(), flush=True)
    return 0 if all(r.ok for r in results) else 1
