"""The backup share, spoken to from user space with smbprotocol and bounded waits (no kernel CIFS mount).

A dead NAS gives a :class:`ShareError` within the connection timeout instead of a process stuck in the kernel
(docs/decisions/0003-backup-over-user-space-smb.md). Every call passes the port and this share's own connection
cache: ``scandir`` entries' ``stat()`` would otherwise reconnect on port 445 (RECIPES §5).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
_SHARE = re.compile(r"^//(?P<server>[^/\s]+)/(?P<share>[^/\s]+)(?P<path>(/[^/]+)*)/?$")
# smbprotocol waits this long (seconds) for any reply once connected, then sends an echo and gives up if that too
# stays unanswered: a NAS that dies in the middle of a transfer ends the backup instead of hanging it. The variable
# is read when a connection is created; its default is 600 s.
_RECEIVE_TIMEOUT_ENV = "SMB_EXPERIMENTAL_TRANSPORT_RECEIVE_TIMEOUT"


# smbprotocol's Dialects values, as people name them.
_DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1"}


class ShareError(Exception):
    """The share is unreachable, refused the credentials or an operation; one line naming the share."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    domain: str | None = None
    #: Signs each backup's manifest (HMAC-SHA256): a restore refuses a backup changed on the NAS.
    signing_key: str | None = None


def read_credentials(path: Path) -> Credentials:
    """A cifs-utils style credentials file (``username=``, ``password=``, optional ``domain=``), kept 0600, with
    an optional ``signing_key=`` of ours (never sent to the NAS)."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShareError(f"{path}: cannot read the share's credentials: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ShareError(f"{path}: credentials readable by others (mode {mode:04o}); chmod 0600 it")
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("username", "password", "domain", "signing_key"):
            values[key.strip()] = value.rstrip("\r\n")
    if not values.get("username") or "password" not in values:
        raise ShareError(f"{path}: needs username= and password= lines")
    signing_key = values.get("signing_key") or None
    if signing_key is not None and len(signing_key) < 16:
        raise ShareError(f"{path}: signing_key= is shorter than 16 characters")
    return Credentials(values["username"], values["password"], values.get("domain"), signing_key)


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int


def _reason(exc: BaseException) -> str:
    """smbprotocol's messages carry the NT status name; keep the first line only."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "STATUS_LOGON_FAILURE" in text or type(exc).__name__ == "LogonFailure":
        return "logon failure (wrong user name or password)"
    if "encryption is required but the connection does not support it" in text:
        return "the server offers no SMB3 encryption, and smb_encrypt = required"
    if "STATUS_DISK_FULL" in text or "STATUS_QUOTA_EXCEEDED" in text:
        return "share full (STATUS_DISK_FULL)"
    return text


class Share:
    """``//server/share[/folder]``: put, list, rename, delete and free space, every wait bounded by ``timeout``."""

    def __init__(
        self, url: str, credentials: Credentials, *, port: int = 445, timeout: float = 15.0, encrypt: str = "auto"
    ) -> None:
        m = _SHARE.match(url)
        if m is None:
            raise ShareError(f"{url}: not a share address; expected //server/share or //server/share/folder")
        self.url = url.rstrip("/")
        self.server = m["server"]
        self.root = rf"\\{m['server']}\{m['share']}" + m["path"].replace("/", "\\")
        self.credentials = credentials
        self.port = port
        self.timeout = timeout
        #: ``auto``: SMB3 encryption whenever the server offers it; ``required``: refuse a server without it.
        self.encrypt = encrypt
        #: Whether this connection's session is encrypted (known once connected), and the SMB dialect spoken.
        self.encrypted = False
        self.dialect = ""
        self._cache: dict[str, Any] = {}
        self._connected = False

    # -- connection -------------------------------------------------------------------------------------------

    def _kw(self) -> dict[str, Any]:
        c = self.credentials
        user = f"{c.domain}\\{c.username}" if c.domain else c.username
        return {
            "username": user,
            "password": c.password,
            "port": self.port,
            "connection_timeout": self.timeout,
            "connection_cache": self._cache,
        }

    def connect(self) -> Share:
        import smbclient

        os.environ.setdefault(_RECEIVE_TIMEOUT_ENV, str(max(int(self.timeout), 5)))
        try:
            session = smbclient.register_session(
                self.server, **self._kw(), encrypt=True if self.encrypt == "required" else None
            )
            if not session.encrypt_data and session.connection.supports_encryption:
                # Offered but not demanded (Samba's default): encryption is settled at session setup, so the session
                # is set up again asking for it. Every later call finds this session in the connection cache.
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
                session = smbclient.register_session(self.server, **self._kw(), encrypt=True)
        except Exception as exc:  # socket, protocol and auth errors alike end in one line
            self.close()
            raise ShareError(f"{self.url}: cannot connect to {self.server}:{self.port}: {_reason(exc)}") from None
        self.encrypted = bool(session.encrypt_data)
        self.dialect = _DIALECTS.get(int(session.connection.dialect), hex(int(session.connection.dialect)))
        self._connected = True
        return self

    def describe(self) -> str:
        """``SMB 3.1.1, encrypted`` or why it is not: one line for the journal."""
        how = "encrypted" if self.encrypted else "NOT encrypted (the server offers no SMB3 encryption)"
        return f"SMB {self.dialect}, {how}"

    def close(self) -> None:
        import smbclient

        with contextlib.suppress(Exception):  # closing a dead connection must not mask the error being reported
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        self._cache.clear()
        self._connected = False

    def __enter__(self) -> Share:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, rel: str) -> str:
        return self.root + ("\\" + rel.strip("/").replace("/", "\\") if rel.strip("/") else "")

    @contextlib.contextmanager
    def _op(self, what: str, rel: str) -> Iterator[None]:
        try:
            yield
        except ShareError:
            raise
        except Exception as exc:  # any failure of the share is one line naming it
            raise ShareError(f"{self.url}/{rel.strip('/')}: {what}: {_reason(exc)}") from None

    # -- operations ------------------------------------------------------------------------------------------

    def makedirs(self, rel: str) -> None:
        import smbclient

        with self._op("mkdir", rel):
            smbclient.makedirs(self.path(rel), exist_ok=True, **self._kw())

    def put(self, src: IO[bytes], rel: str, progress: Callable[[int], None] | None = None) -> int:
        """Stream ``src`` to ``rel`` in 1 MiB chunks; returns the bytes written. ``progress`` gets each chunk's size."""
        import smbclient

        written = 0
        with self._op("write", rel), smbclient.open_file(self.path(rel), mode="wb", **self._kw()) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                written += len(chunk)
                if progress:
                    progress(len(chunk))
        return written

    def get(self, rel: str, dst: IO[bytes], progress: Callable[[int], None] | None = None) -> int:
        import smbclient

        read = 0
        with self._op("read", rel), smbclient.open_file(self.path(rel), mode="rb", **self._kw()) as src:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                read += len(chunk)
                if progress:
                    progress(len(chunk))
        return read

    def read_bytes(self, rel: str) -> bytes:
        import smbclient

        with self._op("read", rel), smbclient.open_file(self.path(rel), mode="rb", **self._kw()) as src:
            data: bytes = src.read()
        return data

    def list(self, rel: str = "") -> list[Entry]:
        """Entries of a folder (an absent folder is empty)."""
        import smbclient

        if not self.exists(rel):
            return []
        out = []
        with self._op("list", rel):
            for e in smbclient.scandir(self.path(rel), **self._kw()):
                info = smbclient.stat(self.path(f"{rel}/{e.name}"), **self._kw())
                out.append(Entry(e.name, e.is_dir(), int(info.st_size)))
        return sorted(out, key=lambda e: e.name)

    def exists(self, rel: str) -> bool:
        import smbclient
        from smbprotocol.exceptions import SMBOSError

        try:
            with self._op("stat", rel):
                try:
                    smbclient.stat(self.path(rel), **self._kw())
                except SMBOSError as exc:
                    if exc.errno == 2:  # ENOENT
                        return False
                    raise
        except ShareError:
            raise
        return True

    def rename(self, src: str, dst: str) -> None:
        import smbclient

        with self._op(f"rename to {dst}", src):
            smbclient.rename(self.path(src), self.path(dst), **self._kw())

    def rmtree(self, rel: str) -> None:
        import smbclient.shutil

        with self._op("delete", rel):
            smbclient.shutil.rmtree(self.path(rel), **self._kw())

    def free_bytes(self) -> int:
        """Space the share says this user may still write."""
        import smbclient

        with self._op("free space", ""):
            return int(smbclient.stat_volume(self.root, **self._kw()).caller_available_size)
