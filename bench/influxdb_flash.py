"""InfluxDB on flash: MB written per day by the local InfluxDB at 100 readings/s, Debian's defaults vs the role's.

    sudo .venv-3.11/bin/python bench/influxdb_flash.py               # 180 s per config (about 8 minutes)
    sudo .venv-3.11/bin/python bench/influxdb_flash.py --seconds 60  # quicker, coarser

Needs root (loop devices), Debian's influxd and the repository's .venv-ansible. Each config gets a fresh ext4
image on a loop device holding InfluxDB's data, WAL and meta, measured at the block device
(``/sys/block/loopN/stat``, sectors written × 512: data, metadata and the ext4 journal all count), extrapolated
to a day. The configs:

- "Debian defaults": the package's /etc/influxdb/influxdb.conf with only its directories moved to the loop mount and
  its ports to free loopback ones;
- "role": ``ansible/roles/influxdb/templates/etc/influxdb/influxdb.conf.j2`` rendered by Ansible with the role's
  defaults (only the data directory and the ports given), i.e. what the station runs.

Both get the station's database, users, retention policies and continuous queries from the role's
influx-setup.toml through ``fieldstation influx setup``. The load is the agent's: 100 series at 1 Hz (100 readings/s
of line protocol), posted in batches every ``--post-interval`` seconds (the agent's commit_interval: each commit
tick POSTs its window to the caught-up sinks), one POST at a time, each waiting for its answer (a 204 from
InfluxDB 1.x comes after its WAL fsync, so a POST's latency includes wal-fsync-delay).

What minutes of real time cannot show: the cache snapshots (one per cache-snapshot-memory-size of points, hours apart
at this rate) and the compactions that follow them. A second phase measures those: a whole day of the same points
(timestamps of yesterday) posted in large batches to a fresh instance of the same config whose WAL is moved to a
tmpfs (not counted: the first phase counts the WAL) and whose cold durations are 1 s, so that every snapshot and
compaction of that day, the final full one included, happens within the phase. The day's total is the sum.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from flash_wear import loop_ext4, per_day, sectors  # bench/flash_wear.py: the same loop-mounted ext4 and counter

from fieldstation.influxd import free_port
from fieldstation.reading import Reading
from fieldstation.settings import SpoolSettings

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "ansible" / "roles" / "influxdb"
ANSIBLE = ROOT / ".venv-ansible" / "bin" / "ansible"
DEBIAN_CONF = Path("/etc/influxdb/influxdb.conf")
WARM_UP_S = 35  # past the first writeback of dirty pages (dirty_expire_centisecs: 30 s)
SERIES = 100  # 100 sensors at 1 Hz: 100 readings/s
#: The issue's measurement of Debian's influxdb 1.6 defaults at 100 readings/s (issue 15).
ISSUE_MB_PER_DAY = 2350
MKFS_OPTIONS: list[str] = []  # --mkfs-options
AGENT = ("agent", "bench-agent-pw")
ADMIN = ("admin", "bench-admin-pw")


def render(template: str, dest: Path, extra: dict[str, object]) -> None:
    """Render one of the role's templates with its defaults (and ``extra``) through Ansible itself."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible" / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    subprocess.run(
        [str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE / 'templates' / template} dest={dest} mode=0600",
         "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", json.dumps({"ansible_python_interpreter": str(ANSIBLE.parent / "python"), **extra})],
        check=True, capture_output=True, env=env, cwd=ROOT / "ansible",
    )


def debian_config(dest: Path, data: Path, http: str, rpc: str) -> None:
    """The package's own influxdb.conf, its directories and ports moved (nothing else changed)."""
    text = DEBIAN_CONF.read_text().replace("/var/lib/influxdb", str(data))
    text = f'bind-address = "{rpc}"\n' + re.sub(r"(?m)^\[http\]$", f'[http]\n  bind-address = "{http}"', text, count=1)
    dest.write_text(text)


def role_config(dest: Path, data: Path, http: str, rpc: str, role_vars: dict[str, str]) -> None:
    render("etc/influxdb/influxdb.conf.j2", dest,
           {**role_vars, "influxdb_data_dir": str(data), "influxdb_http_bind": http, "influxdb_backup_bind": rpc})


def config(name: str, dest: Path, data: Path, http: str, rpc: str, *, role_vars: dict[str, str]) -> None:
    if name == "debian":
        debian_config(dest, data, http, rpc)
    else:
        role_config(dest, data, http, rpc, role_vars)


def setup_file(dest: Path, http: str) -> None:
    render("etc/fieldstation/influx-setup.toml.j2", dest,
           {"influxdb_http_bind": http, "influxdb_admin_password": ADMIN[1],
            "influxdb_agent_password": AGENT[1], "influxdb_grafana_password": "bench-grafana-pw"})


def conf_value(conf: Path, key: str) -> str:
    m = re.search(rf'(?m)^\s*{re.escape(key)}\s*=\s*"?([^"\n]*)"?', conf.read_text())
    return m.group(1) if m else "(default)"


class Writer:
    """The agent's load: SERIES series at 1 Hz, one POST every ``interval`` with the points due since the last."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.next_due = [time.time() + i / SERIES for i in range(SERIES)]
        self.latencies: list[float] = []
        self.points = 0

    def post_due(self) -> None:
        now = time.time()
        lines = []
        for i in range(SERIES):
            while self.next_due[i] <= now:
                due = self.next_due[i]
                lines.append(Reading("simulated", {"value": 20 + (due % 60) / 7}, {"sensor": f"s{i}", "unit": "K"},
                                     int(due * 1e9)).to_line())
                self.next_due[i] = due + 1.0
        if not lines:
            return
        t0 = time.monotonic()
        post(self.url, "\n".join(lines).encode())
        self.latencies.append(time.monotonic() - t0)
        self.points += len(lines)

    def run_for(self, seconds: float, label: str) -> None:
        t0, shown = time.monotonic(), -1
        while (elapsed := time.monotonic() - t0) < seconds:
            self.post_due()
            if int(elapsed) != shown:
                shown = int(elapsed)
                print(f"\r  {label}: {shown}/{seconds:.0f} s", end="", file=sys.stderr, flush=True)
            time.sleep(self.interval)  # as the agent's committer: the interval between the end of one and the next
        print(file=sys.stderr)


def start_influxd(conf: Path, log: Path, http: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(["influxd", "run", "-config", str(conf)], stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{http}/ping", timeout=1) as resp:
            if resp.status == 204:
                return proc
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"influxd did not answer on {http}; see {log}")


def post(url: str, body: bytes) -> None:
    token = base64.b64encode(f"{AGENT[0]}:{AGENT[1]}".encode()).decode()
    req = urllib.request.Request(f"{url}/write?db=fieldstation", data=body, method="POST",  # noqa: S310 (loopback)
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310
        assert resp.status == 204, resp.status


def tsm_files(data: Path) -> list[tuple[str, int, int]]:
    """The station database's TSM files (_internal's, where Debian's defaults keep it, go on being written)."""
    found = []
    for p in (data / "data" / "fieldstation").rglob("*.tsm"):
        with contextlib.suppress(FileNotFoundError):  # removed by a compaction meanwhile
            st = p.stat()
            found.append((str(p), st.st_size, st.st_mtime_ns))
    return sorted(found)


def most_files_in_a_shard(data: Path) -> int:
    shards = [Path(p).parent for p, _, _ in tsm_files(data)]
    return max((shards.count(s) for s in set(shards)), default=0)


def tsm_day(work: Path, name: str, role_vars: dict[str, str]) -> tuple[float, float]:
    """MB the snapshots and compactions of one day of points write, and the MB of TSM files left.

    The WAL goes to a tmpfs (the real-time phase counts it) and is not fsynced (no need to wait). The day is posted
    with the config's own snapshot settings (snapshots when the cache reaches its size), then influxd is restarted
    with both cold durations at 1 s: the end of the day, when the shard goes cold (its last snapshot, then its
    full compaction), without waiting hours.
    """
    data, wal = work / "influxdb", work / "wal"
    http, rpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    conf, setup = work / "influxdb.conf", work / "influx-setup.toml"
    wal.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(wal)], check=True)
    try:
        with loop_ext4(work / "influx.img", data, size_mb=1024, mkfs_options=MKFS_OPTIONS) as dev:
            config(name, conf, data, http, rpc, role_vars=role_vars)
            text = re.sub(r"(?m)^\s*wal-dir\s*=.*$", f'  wal-dir = "{wal}"', conf.read_text())
            text = re.sub(r"(?m)^\s*#?\s*wal-fsync-delay\s*=.*$", "", text)
            day_conf = re.sub(r"(?m)^\[data\]$", '[data]\n  wal-fsync-delay = "0s"', text, count=1)
            text = re.sub(r"(?m)^\s*#?\s*(cache-snapshot-write-cold-duration|compact-full-write-cold-duration)\s*=.*$",
                          "", day_conf)
            cold_conf = re.sub(r"(?m)^\[data\]$", '[data]\n  cache-snapshot-write-cold-duration = "1s"\n'
                               '  compact-full-write-cold-duration = "1s"', text, count=1)
            conf.write_text(day_conf)
            setup_file(setup, http)
            proc = start_influxd(conf, work / "influxd.log", http)
            try:
                subprocess.run([sys.executable, "-m", "fieldstation.cli", "influx", "setup", "--file", str(setup)],
                               check=True, capture_output=True)
                s0 = sectors(dev)
                day0 = (int(time.time()) // 86400 - 1) * 86400  # yesterday, inside the raw policy's 35 days
                batch = 1800  # seconds of points per POST: 180 000 points, under max-body-size (25 MB)
                for part in range(86400 // batch):
                    lines = [
                        # Reading(...).to_line() would write the same; a format string is 10x faster.
                        f"simulated,sensor=s{i},unit=K value={20 + (t % 60) / 7!r} {t * 10**9 + i * 10**7}"
                        for t in range(day0 + part * batch, day0 + (part + 1) * batch) for i in range(SERIES)
                    ]
                    post(f"http://{http}", "\n".join(lines).encode())
                    print(f"\r  {name}: a day of points: {(part + 1) * batch / 3600:g}/24 h", end="", file=sys.stderr,
                          flush=True)
                print(file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(120)
            conf.write_text(cold_conf)
            proc = start_influxd(conf, work / "influxd.log", http)
            try:
                # The cold snapshot and the full compaction: until one file per shard, unchanged for 10 s.
                last, still, deadline = tsm_files(data), 0, time.monotonic() + 900
                while time.monotonic() < deadline and (most_files_in_a_shard(data) > 1 or still < 10):
                    time.sleep(1)
                    now = tsm_files(data)
                    still = still + 1 if now == last else 0
                    last = now
                    print(f"\r  {name}: the day gone cold: {most_files_in_a_shard(data)} TSM files in a shard", end="",
                          file=sys.stderr, flush=True)
                print(file=sys.stderr)
                s1 = sectors(dev)
                left = sum(size for _, size, _ in tsm_files(data))
            finally:
                proc.terminate()
                proc.wait(120)
    finally:
        subprocess.run(["umount", str(wal)], check=False)
    return (s1 - s0) * 512 / 1e6, left / 1e6


def measure(work: Path, name: str, seconds: float, post_interval: float,
            role_vars: dict[str, str]) -> dict[str, Any]:
    data = work / "influxdb"
    http, rpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    conf, setup = work / "influxdb.conf", work / "influx-setup.toml"
    with loop_ext4(work / "influx.img", data, mkfs_options=MKFS_OPTIONS) as dev:
        config(name, conf, data, http, rpc, role_vars=role_vars)
        setup_file(setup, http)
        proc = start_influxd(conf, work / "influxd.log", http)
        try:
            subprocess.run([sys.executable, "-m", "fieldstation.cli", "influx", "setup", "--file", str(setup)],
                           check=True, capture_output=True)
            writer = Writer(f"http://{http}", post_interval)
            writer.run_for(WARM_UP_S, f"{name}: warm-up")
            writer.latencies.clear()
            writer.points = 0
            s0, t0 = sectors(dev), time.monotonic()
            writer.run_for(seconds, f"{name}: measuring")
            s1, t1 = sectors(dev), time.monotonic()
        finally:
            proc.terminate()
            proc.wait(60)
    lat = sorted(writer.latencies)
    return {
        "mb_per_day": per_day(s1 - s0, t1 - t0),
        "points_per_s": writer.points / (t1 - t0),
        "posts_per_s": len(lat) / (t1 - t0),
        "latency_median": statistics.median(lat),
        "latency_max": lat[-1],
        "fsync_delay": conf_value(conf, "wal-fsync-delay"),
        "monitor": conf_value(conf, "store-enabled"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="seconds measured per config after warm-up (0: only the day of snapshots and compactions)")
    parser.add_argument("--post-interval", type=float, default=SpoolSettings.model_fields["commit_interval"].default,
                        help="seconds between the agent's POSTs (default: its commit_interval, each commit tick "
                        "POSTing its window and waiting for the answer)")
    parser.add_argument("--configs", default="debian,role", help="comma-separated: debian, role")
    parser.add_argument("--role-var", action="append", default=[], metavar="NAME=VALUE",
                        help="render the role's config with this variable changed (to compare settings)")
    parser.add_argument("--mkfs-options", default="", help="extra mkfs.ext4 options for InfluxDB's drive, e.g. "
                        "'-O fast_commit'")
    parser.add_argument("--no-tsm", action="store_true", help="skip the day of snapshots and compactions")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill unmounts and detaches like Ctrl-C
    role_vars = dict(v.split("=", 1) for v in args.role_var)
    MKFS_OPTIONS.extend(args.mkfs_options.split())
    if os.geteuid() != 0:
        print("influxdb_flash.py needs root (loop devices)", file=sys.stderr)
        return 2
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    version = subprocess.run(["influxd", "version"], check=True, capture_output=True, text=True).stdout.strip()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores {cpu}, {version}, {SERIES} readings/s posted every "
          f"{args.post_interval:g} s, {args.seconds:g} s per config after {WARM_UP_S} s warm-up")
    print("| config | wal-fsync-delay | _internal stored | real time: MB/day | a day's snapshots + compactions: MB"
          " (TSM left) | total MB/day | points/s | POSTs/s | POST latency median / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        nan = float("nan")
        r = {"mb_per_day": nan, "points_per_s": nan, "posts_per_s": nan, "latency_median": nan, "latency_max": nan,
             "fsync_delay": "", "monitor": ""}
        if args.seconds > 0:
            with tempfile.TemporaryDirectory(prefix="influxdb-flash-") as tmp:
                r = measure(Path(tmp), name, args.seconds, args.post_interval, role_vars)
        tsm, left = float("nan"), float("nan")
        if not args.no_tsm:
            with tempfile.TemporaryDirectory(prefix="influxdb-flash-") as tmp:
                tsm, left = tsm_day(Path(tmp), name, role_vars)
        label = "Debian defaults" if name == "debian" else "role" + (f" ({', '.join(args.role_var)})" if role_vars
                                                                     else " (its defaults)")
        label += f" (mkfs.ext4 {args.mkfs_options})" if args.mkfs_options else ""
        print(f"| {label} | {r['fsync_delay']} | {r['monitor']} | {r['mb_per_day']:.0f} | {tsm:.0f} ({left:.0f}) |"
              f" **{r['mb_per_day'] + tsm:.0f}** | {r['points_per_s']:.0f} | {r['posts_per_s']:.2f} |"
              f" {r['latency_median'] * 1000:.0f} / {r['latency_max'] * 1000:.0f} ms |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
