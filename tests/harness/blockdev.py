"""A real block device for the agent's state directory: an ext4 image file on a loop device (root only).

Used where the filesystem itself is under test: a full drive (ENOSPC from the kernel, not a stand-in), a power
cut (the backing file read while the agent is frozen is what the disk held), writes counted by the block layer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


@dataclass(frozen=True)
class LoopFs:
    image: Path  # the backing file: what the device holds, page cache of the filesystem above excluded
    mount: Path
    device: str  # loopN, as under /sys/block

    def sectors_written(self) -> int:
        """512-byte sectors written to the device since it was set up (the 7th field, block/stat.rst)."""
        return int(Path(f"/sys/block/{self.device}/stat").read_text().split()[6])


@contextlib.contextmanager
def loop_ext4(image: Path, mount: Path, size_mb: int = 64) -> Iterator[LoopFs]:
    """mkfs.ext4 (no root reserve: the agent runs as root in tests) on a loop device, mounted; all undone after."""
    with image.open("wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "ext4", dev, str(mount)], check=True)
        try:
            yield LoopFs(image, mount, Path(dev).name)
        finally:
            if subprocess.run(["umount", str(mount)], check=False).returncode:
                subprocess.run(["umount", "--lazy", str(mount)], check=False)  # a test left a file open
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def fill(fs: LoopFs) -> Path:
    """Take every free block of the filesystem with one file (remove it to free the drive again)."""
    filler = fs.mount / "filler"
    chunk = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk[:size])
            with contextlib.suppress(OSError):
                os.fsync(f.fileno())
    probe = fs.mount / "probe"
    try:
        probe.write_bytes(b"x" * 8192)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError(f"{fs.mount} still has room after filling it")
    finally:
        probe.unlink(missing_ok=True)
    return filler


def power_cut_copy(fs: LoopFs, into: Path) -> Path:
    """What the disk would hold after a power cut now: the backing file copied, its journal replayed.

    The copy reads the device's own blocks; the filesystem's dirty page cache above it is not there, exactly
    as after a power cut. ``e2fsck -fy`` replays the journal as the next mount would. Returns the directory
    the files of the copy were extracted to (debugfs: no mount, nothing else touches the copy).
    """
    copy = into / "after-power-cut.img"
    subprocess.run(["cp", "--sparse=always", str(fs.image), str(copy)], check=True)
    fsck = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True, text=True)
    assert fsck.returncode < 4, f"e2fsck could not repair the copy ({fsck.returncode}): {fsck.stdout}{fsck.stderr}"
    out = into / "after-power-cut"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", str(copy)], check=True, capture_output=True)
    return out
