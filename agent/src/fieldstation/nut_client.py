"""A client of upsd's network protocol (NUT), on plain sockets.

pynut2 and nut2 import telnetlib, which Python 3.13 removed; this needs nothing but the standard library.
Protocol: https://networkupstools.org/docs/developer-guide.chunked/net-protocol.html
"""

from __future__ import annotations

import socket
from types import TracebackType

DEFAULT_PORT = 3493

#: upsd's error codes, as one-line explanations.
ERRORS = {
    "ACCESS-DENIED": "access denied (wrong user name or password, or the user lacks the right in upsd.users)",
    "UNKNOWN-UPS": "no such UPS on this upsd (see `upsc -l`)",
    "VAR-NOT-SUPPORTED": "this UPS does not report that variable",
    "DATA-STALE": "upsd has no fresh data from the UPS driver (cable, driver or UPS down)",
    "DRIVER-NOT-CONNECTED": "upsd cannot reach the UPS driver (is the driver running?)",
    "USERNAME-REQUIRED": "a user name is required",
    "PASSWORD-REQUIRED": "a password is required",
    "INVALID-USERNAME": "invalid user name",
    "INVALID-PASSWORD": "invalid password",
    "ALREADY-LOGGED-IN": "already logged in",
    "UNKNOWN-COMMAND": "upsd does not know this command (too old?)",
}


class NutError(Exception):
    """A NUT failure, in one line. ``code`` is upsd's error code when upsd answered ``ERR``."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def _unquote(text: str) -> str:
    """The value of a quoted protocol field: ``"a \\"b\\""`` → ``a "b"``."""
    if not (len(text) >= 2 and text[0] == text[-1] == '"'):
        return text
    out, escaped = [], False
    for ch in text[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NutClient:
    """One connection to upsd. Use as a context manager, or call :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float = 5.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._where = f"upsd {host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise NutError(f"{self._where}: cannot connect: {exc}") from None
        self._buf = b""

    def __enter__(self) -> NutClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # -- wire ---------------------------------------------------------------------------------------

    def _send(self, line: str) -> None:
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise NutError(f"{self._where}: {type(exc).__name__}: {exc}") from None

    def _line(self) -> str:
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError:
                raise NutError(f"{self._where}: no answer within {self.timeout:g} s") from None
            except OSError as exc:
                raise NutError(f"{self._where}: {type(exc).__name__}: {exc}") from None
            if not chunk:
                raise NutError(f"{self._where}: connection closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    def _check(self, line: str, what: str) -> str:
        if line.startswith("ERR "):
            code = line.split()[1]
            raise NutError(f"{self._where}: {what}: {ERRORS.get(code, code)}", code)
        return line

    def command(self, line: str, what: str) -> str:
        """Send one command; return its one-line answer, or raise NutError for ``ERR``."""
        self._send(line)
        return self._check(self._line(), what)

    def _list(self, query: str, what: str) -> list[str]:
        first = self.command(f"LIST {query}", what)
        if first != f"BEGIN LIST {query}":
            raise NutError(f"{self._where}: {what}: unexpected answer {first[:80]!r}")
        lines = []
        while (line := self._line()) != f"END LIST {query}":
            lines.append(line)
        return lines

    # -- commands -----------------------------------------------------------------------------------

    def list_ups(self) -> dict[str, str]:
        """UPS name → description."""
        out = {}
        for line in self._list("UPS", "LIST UPS"):
            _, name, desc = line.split(" ", 2)
            out[name] = _unquote(desc)
        return out

    def list_vars(self, ups: str) -> dict[str, str]:
        """Every variable of one UPS, as strings (``battery.charge`` → ``"100"``)."""
        out = {}
        prefix = f"VAR {ups} "
        for line in self._list(f"VAR {ups}", f"UPS {ups!r}"):
            if line.startswith(prefix):
                name, _, value = line[len(prefix) :].partition(" ")
                out[name] = _unquote(value)
        return out

    def login(self, ups: str, username: str, password: str) -> None:
        """Check credentials the only way upsd allows, LOGIN, then LOGOUT (which ends this connection).

        A LOGIN counts as a secondary of that UPS to upsmon, so this is done once, at open, never kept.
        """
        self.command(f"USERNAME {_quote(username)}", "USERNAME")
        self.command(f"PASSWORD {_quote(password)}", "PASSWORD")
        self.command(f"LOGIN {ups}", f"LOGIN as {username!r} on {ups!r}")
        self.command("LOGOUT", "LOGOUT")
