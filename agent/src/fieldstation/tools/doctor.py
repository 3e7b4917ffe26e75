"""``fieldstation doctor``: the whole appliance checked at once, one row per check, with a fix hint.

The checks are a table (:data:`CHECKS`): name, function, hint. Each function gets the :class:`Inputs` (every path
and URL it reads, so a test can point it elsewhere) and returns a status and a one-line detail. ``SKIP`` means the
check does not apply on this host (no NUT configured, not a Raspberry Pi, no systemd); it is never a failure. Every
check runs on its own thread and is bounded by ``timeout``: one that does not finish is FAIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fieldstation.influxql import InfluxError
from fieldstation.tools.common import Target, duration_ns, format_time

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
GB = 1e9

#: Free space on a mounted filesystem: below this share WARN, below that FAIL.
FREE_WARN, FREE_FAIL = 0.10, 0.03
#: SD-card writes per day since boot above which the card wears out in a few years.
SD_WARN_BYTES_PER_DAY = 5 * GB
#: Spool: oldest unsent point older than this (seconds) WARN, FAIL.
BACKLOG_WARN_S, BACKLOG_FAIL_S = 600.0, 86400.0
#: fstab types that are not drives.
NOT_DRIVES = {"swap", "proc", "sysfs", "tmpfs", "devpts", "none", "cgroup", "cgroup2", "debugfs", "securityfs"}


@dataclass
class Inputs:
    """Everything the checks read; the defaults are the appliance's own."""

    influx: Target | None = None
    spool: Path | None = None
    sinks: list[str] = field(default_factory=list)
    state_file: Path | None = None
    health_interval: float = 10.0
    fstab: Path = Path("/etc/fstab")
    mounts: Path = Path("/proc/self/mounts")
    sys: Path = Path("/sys")
    proc: Path = Path("/proc")
    root: Path = Path("/")
    grafana_url: str | None = None
    grafana_token: str | None = None
    provisioning: Path | None = None
    nut: list[tuple[str, int, str]] = field(default_factory=list)  # (host, port, ups)
    nut_error: str | None = None  # config.py could not be read
    backup_max_age: str = "26h"
    drill_max_age: str = "8d"
    stale_window: str = "15m"
    agent_unit: str = "fieldstation-agent"
    throttled_file: Path = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
    vcgencmd: str = "vcgencmd"
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: str
    detail: str
    hint: str


Check = Callable[[Inputs], tuple[str, str]]


def _worst(*statuses: str) -> str:
    return max(statuses, key=[SKIP, OK, WARN, FAIL].index)


# -- drives -------------------------------------------------------------------------------------------------


def _mounted(inp: Inputs) -> dict[str, str]:
    """Mount point → device, from /proc/self/mounts (octal escapes undone)."""
    out = {}
    for line in inp.mounts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[1].encode().decode("unicode_escape")] = parts[0]
    return out


def check_drives(inp: Inputs) -> tuple[str, str]:
    try:
        fstab = inp.fstab.read_text()
    except OSError as exc:
        return WARN, f"{inp.fstab}: {exc.strerror}"
    mounted = _mounted(inp)
    status, notes = OK, []
    points = ["/"]
    for line in fstab.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0].startswith("#") or parts[2] in NOT_DRIVES or parts[1] in ("none", "/"):
            continue
        mount, options = parts[1], parts[3].split(",")
        if mount in mounted:
            points.append(mount)
        elif "noauto" in options:
            continue
        else:
            status = _worst(status, WARN if "nofail" in options else FAIL)
            notes.append(f"{mount} not mounted")
    for mount in points:
        try:
            st = os.statvfs(inp.root / mount.lstrip("/"))
        except OSError as exc:
            status, notes = FAIL, [*notes, f"{mount}: {exc.strerror}"]
            continue
        free = st.f_bavail / st.f_blocks if st.f_blocks else 1.0
        status = _worst(status, FAIL if free < FREE_FAIL else WARN if free < FREE_WARN else OK)
        notes.append(f"{mount} {free:.0%} free ({st.f_bavail * st.f_frsize / GB:.1f} GB)")
    return status, "; ".join(notes)


def _root_disk(inp: Inputs) -> str | None:
    """The whole-disk block device under / (``mmcblk0`` for ``mmcblk0p2``), from /sys/dev/block."""
    dev = os.stat(inp.root).st_dev
    link = inp.sys / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        real = link.resolve(strict=True)
    except OSError:
        return None
    return real.parent.name if (real / "partition").exists() else real.name


def _agent_writes(inp: Inputs) -> str:
    """The agent's own bytes written per day (its state file, from /proc/self/io), as a detail suffix."""
    if inp.state_file is None:
        return ""
    try:
        per_day = json.loads(inp.state_file.read_text()).get("bytes_written_per_day")
    except (OSError, ValueError, AttributeError):
        return ""
    return f"; the agent writes {per_day / 1e6:.1f} MB/day" if isinstance(per_day, int | float) else ""


def check_sd_writes(inp: Inputs) -> tuple[str, str]:
    disk = _root_disk(inp)
    agent = _agent_writes(inp)
    if disk is None:
        return SKIP, f"/ is not on a block device (container or network root){agent}"
    if not disk.startswith("mmcblk"):
        return SKIP, f"/ is on {disk}, not an SD card{agent}"
    # /sys/block/<dev>/stat: the 7th number is sectors written, 512 bytes each (Documentation/block/stat.rst).
    sectors = int((inp.sys / "block" / disk / "stat").read_text().split()[6])
    uptime_days = float((inp.proc / "uptime").read_text().split()[0]) / 86400
    per_day = sectors * 512 / max(uptime_days, 1 / 24)
    detail = f"{disk}: {per_day / GB:.2f} GB/day since boot{agent}"
    return (WARN if per_day > SD_WARN_BYTES_PER_DAY else OK), detail


# -- InfluxDB -----------------------------------------------------------------------------------------------


def check_influx(inp: Inputs) -> tuple[str, str]:
    if inp.influx is None:
        return SKIP, "no InfluxDB configured"
    t = inp.influx
    try:
        t.influx.query("SHOW MEASUREMENTS LIMIT 1", t.db)
    except InfluxError as exc:
        text = str(exc)
        if " 403 " in text:  # authenticated; this user may write but not read: still reachable
            return OK, f"{t.influx.url} db {t.db}: reachable, credentials accepted (no read privilege)"
        return FAIL, text
    auth = f"as {t.influx.auth[0]}" if t.influx.auth else "without credentials"
    return OK, f"{t.influx.url} db {t.db}: answering {auth}"


class _NoAnswer(Exception):
    """InfluxDB cannot be asked: the check reports what the influxdb check found instead of repeating it."""


def _last(inp: Inputs, q: str) -> list[dict[str, Any]]:
    assert inp.influx is not None
    try:
        return inp.influx.influx.rows(q, inp.influx.db, epoch="ns")
    except InfluxError as exc:
        raise _NoAnswer(str(exc)) from None


def _needs_influx(fn: Check) -> Check:
    def check(inp: Inputs) -> tuple[str, str]:
        if inp.influx is None:
            return SKIP, "no InfluxDB configured"
        try:
            return fn(inp)
        except _NoAnswer as exc:
            if " 403 " in str(exc):
                return WARN, "these credentials may not read the database: cannot tell"
            return SKIP, "cannot tell: InfluxDB is not answering (see influxdb)"

    return check


@_needs_influx
def check_stale_sensors(inp: Inputs) -> tuple[str, str]:
    window = inp.stale_window
    rows = _last(
        inp,
        'SELECT last("stale") AS "stale" FROM "fieldstation_sensor" '  # noqa: S608  (a duration of ours, no input)
        f'WHERE time > now() - {window} GROUP BY "sensor"',
    )
    if not rows:
        return WARN, f"no sensor health readings in the last {window}"
    stale = sorted(str(r["sensor"]) for r in rows if r.get("stale"))
    if stale:
        return WARN, f"stale: {', '.join(stale)} (of {len(rows)} sensors)"
    return OK, f"{len(rows)} sensors reporting"


def _backup_check(kind: str, max_age_attr: str) -> Check:
    @_needs_influx
    def check(inp: Inputs) -> tuple[str, str]:
        max_age = getattr(inp, max_age_attr)
        from fieldstation.backup.cli import MEASUREMENT  # the backup jobs' own name for their readings

        q = f'SELECT last("ok") AS "ok" FROM "{MEASUREMENT}" WHERE "kind" = \'{kind}\''  # noqa: S608  (constants)
        rows = _last(inp, q)
        if not rows:
            return WARN, f"no {kind.replace('_', ' ')} recorded yet"
        when, ok = int(rows[0]["time"]), rows[0]["ok"]
        age_ns = time.time_ns() - when
        detail = f"last at {format_time(when)[:19]}Z, {'ok' if ok else 'FAILED'}"
        if not ok:
            return FAIL, detail
        if age_ns > duration_ns(max_age):
            return WARN, f"{detail}, older than {max_age}"
        return OK, detail

    return check


# -- Grafana ------------------------------------------------------------------------------------------------


def _get(url: str, token: str | None, timeout: float) -> Any:
    req = urllib.request.Request(url)  # noqa: S310  (configured URL)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310  (configured URL)
        return json.load(r)


def provisioned_uids(provisioning: Path) -> set[str]:
    """uids of the dashboards in our provisioning files; every file must parse (ValueError names the one that not)."""
    yaml_files = [provisioning / "datasources" / "fieldstation.yaml", provisioning / "dashboards" / "fieldstation.yaml"]
    for path in yaml_files:
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {getattr(exc, 'strerror', None) or str(exc).splitlines()[0]}") from None
    uids = set()
    for path in sorted((provisioning / "dashboards").glob("fieldstation*/**/*.json")):
        try:
            uids.add(str(json.loads(path.read_text(encoding="utf-8"))["uid"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: {type(exc).__name__}: {exc}") from None
    if not uids:
        raise ValueError(f"{provisioning}/dashboards/fieldstation: no dashboards")
    return uids


def check_grafana(inp: Inputs) -> tuple[str, str]:
    if inp.grafana_url is None:
        return SKIP, "no Grafana configured (grafana.toml)"
    url = inp.grafana_url.rstrip("/")
    try:
        health = _get(f"{url}/api/health", None, min(5.0, inp.timeout))
    except (OSError, ValueError) as exc:
        return FAIL, f"{url}/api/health: {getattr(exc, 'reason', None) or exc}"
    if health.get("database") != "ok":
        return FAIL, f"{url}/api/health: database {health.get('database')}"
    return OK, f"{url}: Grafana {health.get('version', '?')}"


def check_provisioning(inp: Inputs) -> tuple[str, str]:
    if inp.provisioning is None:
        return SKIP, "no provisioning directory configured"
    try:
        uids = provisioned_uids(inp.provisioning)
    except ValueError as exc:
        return FAIL, str(exc)
    if inp.grafana_url and inp.grafana_token:
        url = f"{inp.grafana_url.rstrip('/')}/api/search?type=dash-db&limit=5000"
        try:
            found = {str(d.get("uid")) for d in _get(url, inp.grafana_token, min(5.0, inp.timeout))}
        except (OSError, ValueError) as exc:
            return FAIL, f"{url}: {getattr(exc, 'reason', None) or exc}"
        missing = sorted(uids - found)
        if missing:
            return FAIL, f"Grafana has not loaded {', '.join(missing)}"
        return OK, f"{len(uids)} dashboards loaded in Grafana"
    return OK, f"{len(uids)} dashboard files parse (set FIELDSTATION_GRAFANA_TOKEN to ask Grafana)"


# -- NUT, agent, clock, power -------------------------------------------------------------------------------


def check_nut(inp: Inputs) -> tuple[str, str]:
    from fieldstation.nut_client import NutClient, NutError

    if inp.nut_error:
        return WARN, inp.nut_error
    if not inp.nut:
        return SKIP, "no nut sensor in config.py"
    notes = []
    for host, port, ups in inp.nut:
        try:
            with NutClient(host, port, timeout=min(5.0, inp.timeout)) as c:
                status = c.list_vars(ups).get("ups.status", "?")
        except (OSError, NutError) as exc:
            return FAIL, f"{ups}@{host}:{port}: {exc}"
        notes.append(f"{ups}@{host}:{port} {status}")
    return OK, "; ".join(notes)


#: What the firstboot role leaves in an image: the services it holds until first boot has made the secrets.
FIRSTBOOT_HOLD = Path("etc/systemd/system/fieldstation-agent.service.d/fieldstation-firstboot.conf")


def check_firstboot(inp: Inputs) -> tuple[str, str]:
    from fieldstation.firstboot import done_stamp  # only this check needs it

    if not (inp.root / FIRSTBOOT_HOLD).exists():
        return SKIP, "not set up from the image (no first boot)"
    stamp = done_stamp(inp.root)
    if not stamp.exists():
        return FAIL, f"first boot has not finished: the database, Grafana and the agent wait for it (no {stamp})"
    return OK, "done: the image's placeholder secrets are replaced"


def check_agent(inp: Inputs) -> tuple[str, str]:
    systemctl = shutil.which("systemctl")
    if systemctl and Path("/run/systemd/system").is_dir():
        done = subprocess.run(
            [systemctl, "is-active", inp.agent_unit], capture_output=True, text=True, timeout=inp.timeout, check=False
        )
        state = done.stdout.strip() or "unknown"
        return (OK if state == "active" else FAIL), f"{inp.agent_unit}: {state}"
    # No systemd as init (a container, a build machine): the agent's state file says whether it runs.
    if inp.state_file is None:
        return SKIP, "systemd is not the init and no state file is configured"
    try:
        age = time.time() - float(json.loads(inp.state_file.read_text())["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return WARN, f"{inp.state_file}: no state (agent not running here?)"
    if age > max(3 * inp.health_interval, 30):
        return WARN, f"{inp.state_file}: last updated {age:.0f} s ago"
    return OK, f"state updated {age:.0f} s ago (no systemd here)"


def check_spool(inp: Inputs) -> tuple[str, str]:
    from fieldstation.spool import Spool, SpoolError

    if inp.spool is None or not inp.spool.exists():
        return WARN, f"{inp.spool}: no spool yet"
    try:
        spool = Spool(inp.spool)
    except SpoolError as exc:
        return FAIL, str(exc)
    try:
        backlogs = [spool.backlog(s) for s in (inp.sinks or spool.known_sinks())]
    finally:
        spool.close()
    worst = max((b.oldest_age_s for b in backlogs), default=0.0)
    detail = "; ".join(f"{b.sink} {b.depth} points, oldest {b.oldest_age_s:.0f} s" for b in backlogs)
    status = FAIL if worst > BACKLOG_FAIL_S else WARN if worst > BACKLOG_WARN_S else OK
    return status, detail or "no sinks"


class _Timex(ctypes.Structure):
    # struct timex (man 2 adjtimex) up to status; the kernel writes the rest into the padding.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


TIME_ERROR = 5  # adjtimex's return when the clock is not synchronised


def check_clock(inp: Inputs) -> tuple[str, str]:
    timedatectl = shutil.which("timedatectl")
    if timedatectl and Path("/run/systemd/system").is_dir():
        done = subprocess.run(
            [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=inp.timeout,
            check=False,
        )
        synced = done.stdout.strip()
        return (OK if synced == "yes" else WARN), f"NTPSynchronized={synced or '?'}"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    state = libc.adjtimex(ctypes.byref(_Timex()))
    if state < 0:
        return SKIP, f"adjtimex: {os.strerror(ctypes.get_errno())}"
    return (WARN if state == TIME_ERROR else OK), f"kernel clock {'not ' if state == TIME_ERROR else ''}synchronised"


def check_power(inp: Inputs) -> tuple[str, str]:
    from fieldstation.sensors.pi import parse_throttled

    try:
        text = "throttled=0x" + inp.throttled_file.read_text().strip()
    except OSError:
        exe = shutil.which(inp.vcgencmd)
        if exe is None:
            return SKIP, "not a Raspberry Pi (no get_throttled, no vcgencmd)"
        done = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=inp.timeout, check=False)
        text = done.stdout
    try:
        flags = parse_throttled(text)
    except ValueError as exc:
        return WARN, f"get_throttled: {exc}"
    now = [k for k, v in flags.items() if v and not k.endswith("_occurred")]
    since = [k.removesuffix("_occurred") for k, v in flags.items() if v and k.endswith("_occurred")]
    if now:
        return FAIL, f"now: {', '.join(now)}"
    if since:
        return WARN, f"since boot: {', '.join(since)}"
    return OK, "no under-voltage or throttling since boot"


#: name, check, hint shown when it is not OK.
CHECKS: list[tuple[str, Check, str]] = [
    ("first-boot", check_firstboot, "journalctl -b -u fieldstation-firstboot; fix fieldstation.txt, then reboot"),
    ("drives", check_drives, "mount the data drive (journalctl -b -u srv-data.mount) or free space on it"),
    ("sd-writes", check_sd_writes, "something writes to the SD card: keep logs and data on the data drive"),
    ("influxdb", check_influx, "systemctl status influxdb; check the sink's url and credentials in agent.toml"),
    ("grafana", check_grafana, "systemctl status grafana-server; journalctl -u grafana-server"),
    ("provisioning", check_provisioning, "re-render: fieldstation grafana render /etc/grafana/provisioning"),
    ("nut", check_nut, "systemctl status nut-server nut-driver@*; upsc -l"),
    ("agent", check_agent, "systemctl status fieldstation-agent; journalctl -u fieldstation-agent"),
    ("spool", check_spool, "fieldstation status: a sink is not accepting writes"),
    ("stale-sensors", check_stale_sensors, "fieldstation sensors; check the stale sensor's wiring or device"),
    (
        "backup",
        _backup_check("backup", "backup_max_age"),
        "journalctl -u fieldstation-backup; fieldstation backup runs one now",
    ),
    (
        "restore-drill",
        _backup_check("restore_drill", "drill_max_age"),
        "journalctl -u fieldstation-backup-verify; fieldstation backup verify runs one now",
    ),
    ("clock", check_clock, "timedatectl; check the NTP servers are reachable"),
    ("power", check_power, "use the official power supply; cool the Pi"),
]


def run_checks(inp: Inputs, checks: list[tuple[str, Check, str]] | None = None) -> list[Result]:
    """Every check at once, each on a daemon thread bounded by ``inp.timeout``."""
    checks = CHECKS if checks is None else checks
    results: dict[str, tuple[str, str]] = {}

    def run(name: str, fn: Check) -> None:
        try:
            results[name] = fn(inp)
        except Exception as exc:  # a check that breaks is a finding, not a crash of the doctor
            results[name] = FAIL, f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(n, fn), daemon=True, name=f"doctor-{n}") for n, fn, _ in checks]
    for th in threads:
        th.start()
    deadline = time.monotonic() + inp.timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    out = []
    for name, _fn, hint in checks:
        status, detail = results.get(name, (FAIL, f"no answer within {inp.timeout:g} s"))
        out.append(Result(name, status, detail, hint if status in (WARN, FAIL) else ""))
    return out


def print_table(results: list[Result]) -> None:
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{r.name:<{width}}  {r.status:<4}  {r.detail}")
        if r.hint:
            print(f"{'':<{width}}        fix: {r.hint}")


def to_json(results: list[Result]) -> str:
    return json.dumps([asdict(r) for r in results], indent=1)
