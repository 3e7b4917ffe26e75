"""Share against a real smbd on 127.0.0.1: put/list/rename/delete, and the failures as one line, in bounded time."""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path

import pytest

from fieldstation.backup.share import Share, ShareError, read_credentials
from harness import samba as harness_samba
from harness.samba import Samba, requires_samba

pytestmark = requires_samba


def test_put_list_rename_delete(samba: Samba, tmp_path: Path) -> None:
    creds = read_credentials(samba.credentials_file(tmp_path / "cred"))
    seen: list[int] = []
    with Share(samba.url(), creds, port=samba.port, timeout=5) as share:
        share.makedirs("host/.partial-1")
        data = bytes(range(256)) * 10_000
        assert share.put(io.BytesIO(data), "host/.partial-1/f.bin", seen.append) == len(data)
        share.rename("host/.partial-1", "host/1")
        assert [(e.name, e.is_dir) for e in share.list("host")] == [("1", True)]
        assert share.list("host/1")[0].size == len(data) and share.read_bytes("host/1/f.bin") == data
        assert share.free_bytes() > 0 and share.list("absent") == []
        share.rmtree("host/1")
        assert share.list("host") == []
    assert sum(seen) == len(data) and len(seen) > 1  # streamed in chunks, with progress
    assert (samba.dir() / "host").is_dir()


def test_wrong_password_is_one_line(samba: Samba, tmp_path: Path) -> None:
    creds = read_credentials(samba.credentials_file(tmp_path / "cred", password="wrong"))
    with pytest.raises(ShareError) as err:
        Share(samba.url(), creds, port=samba.port, timeout=5).connect()
    assert str(err.value) == (f"//127.0.0.1/backup: cannot connect to 127.0.0.1:{samba.port}: "
                              "logon failure (wrong user name or password)")


def test_a_silent_nas_fails_within_the_timeout(silent_port: int, tmp_path: Path) -> None:
    tmp = tmp_path / "cred"
    tmp.write_text("username=u\npassword=p\n")
    tmp.chmod(0o600)
    start = time.monotonic()
    with pytest.raises(ShareError) as err:
        Share("//127.0.0.1/backup", read_credentials(tmp), port=silent_port, timeout=2).connect()
    assert time.monotonic() - start < 30  # a bound, not a timing assert: without a timeout this would hang
    assert "\n" not in str(err.value) and f"cannot connect to 127.0.0.1:{silent_port}" in str(err.value)


def test_credentials_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "cred"
    path.write_text("username=u\npassword=p\n")
    path.chmod(0o644)
    with pytest.raises(ShareError, match="readable by others"):
        read_credentials(path)
    path.chmod(0o600)
    path.write_text("password=p\n")
    with pytest.raises(ShareError, match="needs username= and password="):
        read_credentials(path)


def _server_sees(samba: Samba) -> tuple[str, str]:
    """smbd's own view (smbstatus): the encryption of our user's session, and of its connection to the share."""
    out = subprocess.run(["smbstatus", "-s", str(samba.root / "smb.conf")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    session = next(line.split() for line in out if f" {samba.user} " in line)
    tcon = next(line.split() for line in out if line.startswith("backup "))
    return session[session.index("SMB3_11") + 1], tcon[-2]


def test_smb3_encryption_is_asked_for_when_the_server_offers_it(samba: Samba, tmp_path: Path) -> None:
    """Samba's default offers encryption without demanding it: smbprotocol alone would stay in clear; the share
    asks for it, and smbd reports the session encrypted."""
    import smbclient

    creds = read_credentials(samba.credentials_file(tmp_path / "cred"))
    plain: dict[str, object] = {}
    session = smbclient.register_session("127.0.0.1", samba.user, samba.password, port=samba.port,
                                         connection_cache=plain)
    try:
        assert not session.encrypt_data  # what smbprotocol does by itself with this server
        assert session.connection.supports_encryption
    finally:
        smbclient.reset_connection_cache(connection_cache=plain)
    with Share(samba.url(), creds, port=samba.port, timeout=5) as share:
        share.put(io.BytesIO(b"x"), "probe")
        assert share.encrypted and share.describe() == "SMB 3.1.1, encrypted"
        session, tcon = _server_sees(samba)
        # "partial": smbd does not demand it for every session (its default); this one and its share are encrypted.
        assert re.fullmatch(r"partial\(AES-(128|256)-(GCM|CCM)\)", session), session
        assert re.fullmatch(r"AES-(128|256)-(GCM|CCM)", tcon), tcon


def test_a_server_without_encryption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: the backup still goes (and the journal says it went in clear); required: refused in one line."""
    monkeypatch.setattr(harness_samba, "CONF", harness_samba.CONF.replace(
        "[backup]", "  server smb encrypt = off\n[backup]", 1))
    with harness_samba.running_samba(tmp_path / "smb") as samba:
        creds = read_credentials(samba.credentials_file(tmp_path / "cred"))
        with Share(samba.url(), creds, port=samba.port, timeout=5) as share:
            share.put(io.BytesIO(b"x"), "probe")
            assert not share.encrypted
            assert share.describe() == "SMB 3.1.1, NOT encrypted (the server offers no SMB3 encryption)"
            assert _server_sees(samba) == ("-", "-")  # smbd: no encryption
        with pytest.raises(ShareError) as err:
            Share(samba.url(), creds, port=samba.port, timeout=5, encrypt="required").connect()
        assert str(err.value) == (f"//127.0.0.1/backup: cannot connect to 127.0.0.1:{samba.port}: the server offers "
                                  "no SMB3 encryption, and smb_encrypt = required")
