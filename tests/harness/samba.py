"""Fixtures: a real Samba server (Debian's smbd) on a free loopback port, with a user and two shares.

``backup`` is a folder in the test's temporary directory; ``small`` sits on a 4 MiB tmpfs mounted for the test (a
share that fills up for real: Samba answers STATUS_DISK_FULL). Everything is stopped and unmounted in teardown.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldstation.influxd import free_port

USER = "fsbackup"
PASSWORD = "s3cret-Backup!"
SMALL_BYTES = 4 << 20

CONF = """\
[global]
  workgroup = WORKGROUP
  server role = standalone server
  interfaces = lo
  bind interfaces only = yes
  smb ports = {port}
  disable netbios = yes
  private dir = {t}/private
  lock directory = {t}/lock
  state directory = {t}/state
  cache directory = {t}/cache
  pid directory = {t}/pid
  ncalrpc dir = {t}/ncalrpc
  log file = {t}/log/log.%m
  passdb backend = tdbsam:{t}/private/passdb.tdb
  server min protocol = SMB2_10
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[backup]
  path = {t}/share
  read only = no
  valid users = {user}
  force user = root
[small]
  path = {t}/small
  read only = no
  valid users = {user}
  force user = root
"""

requires_samba = pytest.mark.skipif(shutil.which("smbd") is None, reason="smbd not installed (apt-get install samba)")


@dataclass
class Samba:
    root: Path
    port: int
    user: str = USER
    password: str = PASSWORD

    def url(self, share: str = "backup") -> str:
        return f"//127.0.0.1/{share}"

    def dir(self, share: str = "backup") -> Path:
        """The share's folder on disk, to look at what landed there (or to damage it)."""
        return self.root / ("share" if share == "backup" else share)

    def credentials_file(self, path: Path, password: str | None = None, signing_key: str | None = None) -> Path:
        key = f"signing_key={signing_key}\n" if signing_key else ""
        path.write_text(f"username={self.user}\npassword={password or self.password}\n{key}")
        path.chmod(0o600)
        return path


def _ensure_unix_user() -> None:
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:  # smbpasswd needs a Unix account
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_samba(t: Path) -> Iterator[Samba]:
    """smbd on a free loopback port with its state under ``t``; the benchmark uses it too."""
    for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log", "share", "small"):
        (t / d).mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_BYTES}", "tmpfs", str(t / "small")], check=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        conf = t / "smb.conf"
        conf.write_text(CONF.format(port=port, t=t, user=USER))
        _ensure_unix_user()
        subprocess.run(["smbpasswd", "-c", str(conf), "-s", "-a", USER], input=f"{PASSWORD}\n{PASSWORD}\n".encode(),
                       check=True, capture_output=True)
        # Its own session: smbd signals its whole process group when it stops, which would otherwise be pytest's.
        with (t / "log" / "smbd.out").open("wb") as out:
            proc = subprocess.Popen(["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"smbd did not start; see {t / 'log'}")
            time.sleep(0.05)
        yield Samba(t, port)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        subprocess.run(["umount", "-l", str(t / "small")], check=False)


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[Samba]:
    with running_samba(tmp_path / "smb") as server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a hung NAS."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])
