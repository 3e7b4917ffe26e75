"""How a dropped file's bytes become text: a declared encoding, or UTF-8 with the Windows code page as fallback.

Building-management servers and loggers on Windows write cp1252 (a ``°`` in a trend report's header, a ``ç`` in a
renamed channel), others UTF-8, Excel's "Unicode text" UTF-16 with a byte-order mark. The inbox examines the whole
file in the pass that hashes it (:func:`examine`), so the choice is made once per file, before any row is parsed:

- the source's ``options.encoding``, when declared;
- else UTF-16 when the file starts with its byte-order mark;
- else UTF-8 (a UTF-8 byte-order mark is skipped) when every byte of the file is valid UTF-8;
- else cp1252, or latin-1 when the file holds one of the five bytes cp1252 leaves undefined.

The fallback is recorded in the file's report, with the first byte that is not UTF-8. Parsers decode with
:func:`open_text`, which replaces a byte invalid in a declared encoding by U+FFFD rather than refusing the file:
one bad byte in a header never costs the rows.
"""

from __future__ import annotations

import codecs
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from fieldstation.ingest import FileContext

#: The default: UTF-8, skipping a byte-order mark.
UTF8 = "utf-8-sig"
#: What Windows writes when it is not UTF-8.
FALLBACK = "cp1252"
#: Bytes cp1252 does not define: a file holding one is read as latin-1, which defines every byte.
CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
CHUNK = 1 << 20
# The characters every format's structure is made of: an encoding must spell them as ASCII does.
_STRUCTURE = "\r\n\t ,;:.-+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\"'_()[]{}<>*"


def check_encoding(name: str) -> str:
    """A declared encoding's canonical name; ValueError for one Python does not know or one not ASCII-based."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r} (use a Python codec name: utf-8, cp1252, latin-1, ...)") from None
    if info.name.startswith("utf-16") or info.name.startswith("utf-32"):
        return info.name  # not ASCII-based, but self-describing: TextIOWrapper handles them whole
    try:
        ok = _STRUCTURE.encode(info.name) == _STRUCTURE.encode("ascii")
    except (UnicodeError, LookupError):
        ok = False
    if not ok:
        raise ValueError(f"encoding {name!r} does not write digits, commas and line ends as ASCII does")
    return info.name


def label(encoding: str) -> str:
    """The name a report shows: ``utf-8`` for UTF-8 with or without a byte-order mark."""
    return "utf-8" if encoding in (UTF8, "utf-8", "utf_8") else encoding


@dataclass(frozen=True)
class Examined:
    """What one pass over a file found."""

    sha256: str
    size: int
    blank: bool  # nothing but whitespace (and a byte-order mark)
    encoding: str  # the codec the parser reads it with
    note: str | None  # why that codec, when it is not the declared one or UTF-8; or what did not decode


class _Position:
    """Byte offset and line number of the first byte a decoder refused."""

    def __init__(self) -> None:
        self.offset = 0
        self.lf = 0
        self.cr = 0

    def advance(self, chunk: bytes) -> None:
        self.offset += len(chunk)
        self.lf += chunk.count(b"\n")
        self.cr += chunk.count(b"\r")

    def describe(self, chunk: bytes, at: int, bad: bytes) -> str:
        """``at`` indexes ``chunk`` (may be negative: a byte held over from the previous chunk)."""
        before = chunk[: max(at, 0)]
        lf, cr = self.lf + before.count(b"\n"), self.cr + before.count(b"\r")
        line = (lf if lf else cr) + 1  # CR-only files (Siemens Insight) count lines by CR
        shown = " ".join(f"0x{b:02X}" for b in bad[:4]) or "end of file"
        return f"byte {shown} at offset {self.offset + at}, line {line}"


def examine(path: Path, declared: str | None = None) -> Examined:
    """Hash the file and choose its encoding in one streaming pass (constant memory, whatever the size)."""
    sha = hashlib.sha256()
    size, blank, undefined = 0, True, False
    # A declared UTF-8 still skips a byte-order mark (Windows Notepad writes one).
    encoding = UTF8 if declared in (None, "utf-8") else declared
    decoder: codecs.IncrementalDecoder | None = None
    pos = _Position()
    error: str | None = None
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if size == 0:
                if declared is None and chunk.startswith(UTF16_BOMS):
                    encoding = "utf-16"
                decoder = codecs.getincrementaldecoder(encoding)("strict")
            sha.update(chunk)
            if blank:
                stripped = chunk.lstrip(codecs.BOM_UTF8) if size == 0 else chunk
                blank = not stripped.strip() and encoding != "utf-16"
            undefined = undefined or any(b in chunk for b in CP1252_UNDEFINED)
            if decoder is not None:
                held = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    error = pos.describe(chunk, exc.start - held, exc.object[exc.start : exc.end])
                    decoder = None  # one bad byte decides: no need to decode the rest
            pos.advance(chunk)
            size += len(chunk)
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            error = f"a character cut short at the end of the file ({exc.reason})"
    note = None
    if error is not None and (declared is not None or encoding != UTF8):
        note = f"not valid {label(encoding)} ({error}): undecodable bytes read as U+FFFD"
    elif error is not None:
        encoding = "latin-1" if undefined else FALLBACK
        note = f"not UTF-8 ({error}): read as {encoding}"
    return Examined(sha.hexdigest(), size, blank, encoding, note)


def open_text(stream: BinaryIO, ctx: FileContext) -> io.TextIOWrapper:
    """The file as text in the encoding the inbox chose. ``newline=""`` leaves CR, LF and CRLF to the parser (csv
    needs it so). The caller detaches it: the binary stream stays the caller's to close."""
    return io.TextIOWrapper(stream, encoding=ctx.encoding, errors="replace", newline="")
