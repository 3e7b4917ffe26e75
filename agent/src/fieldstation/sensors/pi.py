"""The Raspberry Pi's own health: CPU, load, memory, disk, SoC temperature, throttling, SD-card writes.

Everything comes from files under ``root`` (``/proc``, ``/sys/class/thermal``, and ``os.statvfs`` of the
configured mount points) plus ``vcgencmd get_throttled`` for the firmware's under-voltage and throttling
flags. ``root`` is ``/`` on the Pi itself; a host's ``/`` mounted into a container (``-v /:/host:ro`` and
``root="/host"``) or a directory of captured files works the same way.

One read takes a :class:`Snapshot` (the raw text of each file, the statvfs numbers, vcgencmd's output) and
the pure function :func:`decode` turns two consecutive snapshots into fields, so golden cases feed captured
text. ``cpu_percent`` and ``sd_bytes_written`` are differences between two reads: they appear from the second
read on. A file that is missing (no thermal zone in a container, no ``mmcblk0`` on a Pi booting from USB)
omits its fields; only when nothing under ``root`` can be read does the read fail.

Disk use is written as one pair of fields per mount point, named after it (``disk_used_percent_root`` for
``/``, ``disk_used_percent_boot_firmware`` for ``/boot/firmware``), rather than as readings tagged with the
mount: that keeps one point per unit per read, and the core's conversion, range check and precision apply.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import ClassVar, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from fieldstation.sensor import Sensor, SensorError

log = logging.getLogger("fieldstation.sensors.pi")

#: Field → unit. Fields without a physical unit (load averages, flags) have "". The per-mount disk fields
#: take the unit of their prefix (see :data:`MOUNT_UNITS`).
UNITS = {
    "cpu_percent": "%",
    "load1": "",
    "load5": "",
    "load15": "",
    "mem_total": "B",
    "mem_available": "B",
    "mem_used_percent": "%",
    "soc_temp": "°C",
    "sd_bytes_written": "B",
    "uptime": "s",
}

#: Prefix of the per-mount fields (``<prefix>_<mount name>``) → unit.
MOUNT_UNITS = {
    "disk_used_percent": "%",
    "disk_available": "B",
}

#: ``vcgencmd get_throttled`` bits (Raspberry Pi documentation, "vcgencmd") → boolean field. Bits 0–3 are
#: the current state, bits 16–19 are sticky: set once the condition has occurred since boot.
THROTTLED_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}

#: Source name → path below ``root``. ``soc_temp`` is completed with the configured thermal zone.
FILES = {
    "stat": "proc/stat",
    "loadavg": "proc/loadavg",
    "meminfo": "proc/meminfo",
    "diskstats": "proc/diskstats",
    "uptime": "proc/uptime",
    "soc_temp": "sys/class/thermal/{zone}/temp",
}

#: /proc/diskstats counts 512-byte sectors whatever the device's own sector size (Documentation/block/stat).
SECTOR_BYTES = 512

Fields = dict[str, float | bool]
T = TypeVar("T")


# -- the raw inputs of one read -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatVfs:
    """The numbers of ``os.statvfs`` the disk fields need."""

    frsize: int
    blocks: int
    bfree: int
    bavail: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one read saw: file texts by source name, statvfs by mount point, vcgencmd's output."""

    texts: dict[str, str] = field(default_factory=dict)
    #: Source name → the full path it was (or would have been) read from, for messages.
    paths: dict[str, str] = field(default_factory=dict)
    statvfs: dict[str, StatVfs] = field(default_factory=dict)
    #: Output of ``vcgencmd get_throttled``; None when the command is absent or failed.
    throttled: str | None = None
    #: ``path: reason`` of each file or mount point that could not be read.
    unreadable: list[str] = field(default_factory=list)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_snapshot(root: str, thermal_zone: str = "thermal_zone0", mounts: Iterable[str] = ()) -> Snapshot:
    """Read the files under ``root`` and statvfs of each mount point (vcgencmd is the sensor's business)."""
    snap = Snapshot()
    for name, rel in FILES.items():
        path = os.path.join(root, rel.format(zone=thermal_zone))
        snap.paths[name] = path
        try:
            snap.texts[name] = _read_text(path)
        except OSError as exc:
            snap.unreadable.append(f"{path}: {exc.strerror or exc}")
    for mount in mounts:
        path = os.path.join(root, mount.lstrip("/"))
        try:
            st = os.statvfs(path)
        except OSError as exc:
            snap.unreadable.append(f"{path}: {exc.strerror or exc}")
            continue
        snap.statvfs[mount] = StatVfs(st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail)
    return snap


# -- pure parsers: text in, numbers out; ValueError on text they do not understand ------------------------


def parse_stat(text: str) -> tuple[int, int]:
    """The aggregate ``cpu`` line of /proc/stat → (idle, total) in clock ticks.

    Idle includes iowait. Only the first eight columns (user nice system idle iowait irq softirq steal) are
    summed: guest and guest_nice are already counted in user and nice.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            ticks = [int(x) for x in parts[1:9]]
            if len(ticks) < 4:
                raise ValueError(f"short cpu line: {line!r}")
            return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks)
    raise ValueError("no 'cpu' line")


def cpu_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Busy share of all CPUs between two :func:`parse_stat` results; None if no tick passed."""
    d_idle = after[0] - before[0]
    d_total = after[1] - before[1]
    if d_total <= 0:
        return None
    # iowait may go backwards (it is an estimate), so clamp.
    return min(max(100.0 * (d_total - d_idle) / d_total, 0.0), 100.0)


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """/proc/loadavg (``0.52 0.58 0.59 1/185 1234``) → the 1, 5 and 15 minute load averages."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"expected three load averages, got {text.strip()!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo → name → bytes (``kB`` values are KiB); values without a unit are kept as they are."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        value = int(parts[0])
        out[name.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def mem_fields(meminfo: dict[str, int]) -> Fields:
    """mem_total, mem_available and mem_used_percent (the share not available, as ``free`` counts it)."""
    if "MemTotal" not in meminfo:
        raise ValueError("no MemTotal")
    total = meminfo["MemTotal"]
    fields: Fields = {"mem_total": total}
    available = meminfo.get("MemAvailable")  # Linux 3.14 and later: every Raspberry Pi OS kernel
    if available is not None:
        fields["mem_available"] = available
        if total > 0:
            fields["mem_used_percent"] = 100.0 * (total - available) / total
    return fields


def parse_diskstats(text: str) -> dict[str, int]:
    """/proc/diskstats → device → sectors written (the 7th statistic, column 10 of the line)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 10:
            out[parts[2]] = int(parts[9])
    return out


def parse_uptime(text: str) -> float:
    """/proc/uptime (``12345.67 45678.90``) → seconds since boot."""
    parts = text.split()
    if not parts:
        raise ValueError("empty")
    return float(parts[0])


def parse_temp(text: str) -> float:
    """A thermal zone's ``temp`` (millidegrees Celsius) → °C."""
    return int(text.strip()) / 1000.0


_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|[0-9]+)")


def parse_throttled(text: str) -> dict[str, bool]:
    """``vcgencmd get_throttled`` output (``throttled=0x50005``) → one boolean per bit of :data:`THROTTLED_BITS`."""
    m = _THROTTLED.search(text)
    if m is None:
        raise ValueError(f"expected throttled=0x..., got {text.strip()!r}")
    word = int(m.group(1), 0)
    return {name: bool(word >> bit & 1) for bit, name in THROTTLED_BITS.items()}


def mount_name(mount: str) -> str:
    """The suffix of a mount point's fields: ``/`` → ``root``, ``/boot/firmware`` → ``boot_firmware``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", mount).strip("_")
    return name or "root"


def disk_fields(mount: str, st: StatVfs) -> Fields:
    """Disk use of one mount point, as ``df`` computes it: used / (used + available to non-root users)."""
    suffix = mount_name(mount)
    used = (st.blocks - st.bfree) * st.frsize
    available = st.bavail * st.frsize
    fields: Fields = {}
    if used + available > 0:
        fields[f"disk_used_percent_{suffix}"] = 100.0 * used / (used + available)
    fields[f"disk_available_{suffix}"] = available
    return fields


def _parsed(snap: Snapshot, name: str, parser: Callable[[str], T]) -> T | None:
    """``parser`` applied to one source's text; None if the file was missing; SensorError if garbled."""
    text = snap.texts.get(name)
    if text is None:
        return None
    try:
        return parser(text)
    except (ValueError, IndexError) as exc:
        raise SensorError(f"{snap.paths.get(name, name)}: unexpected content: {exc}") from None


def decode(before: Snapshot | None, after: Snapshot, disk: str = "mmcblk0") -> Fields:
    """Two consecutive snapshots → fields. Without ``before`` (the first read) the deltas are omitted."""
    fields: Fields = {}
    cpu = _parsed(after, "stat", parse_stat)
    cpu_before = _parsed(before, "stat", parse_stat) if before is not None else None
    if cpu is not None and cpu_before is not None:
        pct = cpu_percent(cpu_before, cpu)
        if pct is not None:
            fields["cpu_percent"] = pct
    load = _parsed(after, "loadavg", parse_loadavg)
    if load is not None:
        fields["load1"], fields["load5"], fields["load15"] = load
    meminfo = _parsed(after, "meminfo", parse_meminfo)
    if meminfo is not None:
        try:
            fields.update(mem_fields(meminfo))
        except ValueError as exc:
            raise SensorError(f"{after.paths.get('meminfo', 'meminfo')}: unexpected content: {exc}") from None
    for mount, st in after.statvfs.items():
        fields.update(disk_fields(mount, st))
    temp = _parsed(after, "soc_temp", parse_temp)
    if temp is not None:
        fields["soc_temp"] = temp
    written = (_parsed(after, "diskstats", parse_diskstats) or {}).get(disk)
    written_before = (_parsed(before, "diskstats", parse_diskstats) or {}).get(disk) if before is not None else None
    if written is not None and written_before is not None and written >= written_before:
        fields["sd_bytes_written"] = (written - written_before) * SECTOR_BYTES
    uptime = _parsed(after, "uptime", parse_uptime)
    if uptime is not None:
        fields["uptime"] = uptime
    if after.throttled is not None:
        try:
            fields.update(parse_throttled(after.throttled))
        except ValueError as exc:
            raise SensorError(f"vcgencmd get_throttled: {exc}") from None
    return fields


def _default_units() -> dict[str, str]:
    return dict(UNITS)


# -- the sensor ------------------------------------------------------------------------------------------


class Pi(Sensor):
    """The health of the Raspberry Pi the agent runs on (or of the host whose root is at ``root``)."""

    driver: ClassVar[str] = "pi"

    root: str = Field("/", description="Where /proc and /sys are found: / on the Pi, say /host in a container.")
    mounts: list[str] = Field(
        default_factory=lambda: ["/"], description="Mount points whose disk use is written (absolute, below root)."
    )
    disk: str = Field("mmcblk0", description="Block device (as named in /proc/diskstats) whose writes are counted.")
    thermal_zone: str = Field("thermal_zone0", description="The SoC's zone in /sys/class/thermal.")
    vcgencmd: str = Field(
        "vcgencmd", description="The vcgencmd command; if it is not on PATH the throttling fields are omitted."
    )
    unit: str | dict[str, str] = Field(default_factory=_default_units, description="Units per field.")
    interval: float = Field(10.0, description="Seconds between reads.")

    _previous: Snapshot | None = PrivateAttr(default=None)
    _vcgencmd_error: str | None = PrivateAttr(default=None)

    @field_validator("mounts")
    @classmethod
    def _mounts_distinct(cls, v: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for mount in v:
            if not mount.startswith("/"):
                raise ValueError(f"mount point {mount!r} must be an absolute path")
            other = seen.setdefault(mount_name(mount), mount)
            if other != mount:
                raise ValueError(f"mount points {other!r} and {mount!r} would both write fields *_{mount_name(mount)}")
        return v

    @model_validator(mode="after")
    def _mount_units(self) -> Pi:
        if isinstance(self.unit, dict):
            for mount in self.mounts:
                for prefix, unit in MOUNT_UNITS.items():
                    self.unit.setdefault(f"{prefix}_{mount_name(mount)}", unit)
        return self

    def declared_fields(self) -> list[str]:
        mounts = [f"{prefix}_{mount_name(m)}" for m in self.mounts for prefix in MOUNT_UNITS]
        return [*UNITS, *mounts, *THROTTLED_BITS.values()]

    def snapshot(self) -> Snapshot:
        """One read's raw inputs."""
        return replace(read_snapshot(self.root, self.thermal_zone, self.mounts), throttled=self._get_throttled())

    def read(self) -> Fields:
        snap = self.snapshot()
        if not snap.texts and not snap.statvfs:
            reason = snap.unreadable[0] if snap.unreadable else "no files"
            raise SensorError(f"nothing readable under {self.root}: {reason}")
        fields = decode(self._previous, snap, self.disk)
        self._previous = snap
        return fields

    def _get_throttled(self) -> str | None:
        exe = shutil.which(self.vcgencmd)
        if exe is None:
            return None
        try:
            done = subprocess.run(
                [exe, "get_throttled"],
                capture_output=True,
                text=True,
                timeout=min(0.5 * self.read_timeout, 5.0),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._vcgencmd_failed(f"{exe} get_throttled: {exc}")
            return None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            self._vcgencmd_failed(
                f"{exe} get_throttled exited with {done.returncode}: {detail[0] if detail else 'no output'}"
                " (is the agent's user in the video group?)"
            )
            return None
        self._vcgencmd_error = None
        return done.stdout

    def _vcgencmd_failed(self, msg: str) -> None:
        if msg != self._vcgencmd_error:  # once per distinct error, not every interval
            log.warning("sensor %s: %s; throttling fields omitted", self.name, msg)
        self._vcgencmd_error = msg
