"""How a dropped file's bytes become text: the encoding examine() chooses, and where it says a file is not UTF-8."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import pytest

from fieldstation.ingest import FileContext
from fieldstation.ingest.text import check_encoding, examine, open_text


def examined(tmp_path: Path, data: bytes, declared: str | None = None) -> tuple[str, str | None, bool]:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    e = examine(path, declared)
    return e.encoding, e.note, e.blank


@pytest.mark.parametrize(
    ("data", "encoding", "note"),
    [
        (b"a,b\r\n1,2\r\n", "utf-8-sig", None),
        (b"\xef\xbb\xbfTemp \xc2\xb0C\n1\n", "utf-8-sig", None),
        (b"Point_1:,A\rPoint_2:,Fa\xe7ade\r", "cp1252", "not UTF-8 (byte 0xE7 at offset 22, line 2): read as cp1252"),
        (b"x\n\x81\n", "latin-1", "not UTF-8 (byte 0x81 at offset 2, line 2): read as latin-1"),  # undefined in cp1252
        (b"ok\n\xc3", "cp1252", "not UTF-8 (a character cut short at the end of the file (unexpected end of data)): "
                                "read as cp1252"),
        ("T,°C\n".encode("utf-16"), "utf-16", None),
    ],
)
def test_the_encoding_chosen_and_why(tmp_path: Path, data: bytes, encoding: str, note: str | None) -> None:
    assert examined(tmp_path, data)[:2] == (encoding, note)


def test_the_first_bad_byte_is_found_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fieldstation.ingest.text.CHUNK", 3)
    # "é" in UTF-8 split across two chunks is fine; the lone 0xB0 on line 3 is not.
    data = b"ab\xc3\xa9\ncd\nxy\xb0z\n"
    assert examined(tmp_path, data)[:2] == ("cp1252", "not UTF-8 (byte 0xB0 at offset 10, line 3): read as cp1252")
    # A lead byte at a chunk's end whose next byte is no continuation: the offset is the lead byte's.
    monkeypatch.setattr("fieldstation.ingest.text.CHUNK", 4)
    assert examined(tmp_path, b"abc\xc3xyz\n")[1] == "not UTF-8 (byte 0xC3 at offset 3, line 1): read as cp1252"


def test_blank_files(tmp_path: Path) -> None:
    assert examined(tmp_path, b"")[2] and examined(tmp_path, b"\xef\xbb\xbf\r\n  \n")[2]
    assert not examined(tmp_path, b"\n1\n")[2]


def test_open_text_replaces_what_the_encoding_cannot_decode() -> None:
    ctx = FileContext(PurePosixPath("s/f.csv"), encoding="utf-8")
    text = open_text(io.BytesIO(b"Temp \xb0F,1\n2,3\n"), ctx)
    assert text.read() == "Temp \ufffdF,1\n2,3\n"


def test_encoding_names_are_python_s() -> None:
    assert (check_encoding("windows-1252"), check_encoding("UTF8"), check_encoding("utf-16")) == (
        "cp1252", "utf-8", "utf-16",
    )


def test_a_declared_utf8_still_skips_a_byte_order_mark(tmp_path: Path) -> None:
    assert examined(tmp_path, b"\xef\xbb\xbfTime,A\n", "utf-8")[:2] == ("utf-8-sig", None)
    assert examined(tmp_path, b"Temp \xb0F\n", "cp1252")[:2] == ("cp1252", None)
