"""Share against a real smbd on 127.0.0.1: put/list/rename/delete, and the failures as one line, in bounded time."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from fieldstation.backup.share import Share, ShareError, read_credentials
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
