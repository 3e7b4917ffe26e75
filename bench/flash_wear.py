"""Flash wear: MB written per day by the agent (and the local InfluxDB) at 10 and 100 readings/s, sinks up and down.

    .venv-3.11/bin/python bench/flash_wear.py              # 120 s per case (about 11 minutes)
    .venv-3.11/bin/python bench/flash_wear.py --seconds 30 # quicker, coarser

Needs root (loop devices) and Debian's influxd. Each writer gets its own ext4 image on a loop device, mounted with
the defaults, and is measured at the block device (``/sys/block/loopN/stat``, sectors written × 512), so data,
metadata and the ext4 journal all count, then extrapolated to a day. The agent's spool is one device, its state file
another (both are in the agent's data directory as shipped: their sum is the agent's figure today; the state file
alone is what moving it to /run saves); the local InfluxDB's data, WAL and meta a third. 100 simulated sensors at
1 Hz make 100 readings/s, as in issue 15. "Sinks down" is the only sink on a port nobody listens on: every window is
spooled.
The fsync floor is a bare append-only file taking the same bytes with an fdatasync every commit interval.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fieldstation.influxd import LocalInfluxd, free_port
from fieldstation.reading import Reading

#: The agent before the write path of issue 15 (spool + state file, 100 readings/s, InfluxDB up), same method.
OLD_MB_PER_DAY = 10_600
#: Past the start's own writes and their delayed writeback and journal checkpoint (dirty_expire_centisecs: 30 s).
WARM_UP_S = 90


@contextlib.contextmanager
def loop_ext4(image: Path, mount: Path, size_mb: int = 512, mkfs_options: Sequence[str] = ()) -> Iterator[str]:
    """An ext4 image on a loop device mounted at ``mount``; yields the device name (loopN)."""
    with image.open("wb") as f:
        f.truncate(size_mb << 20)
    # Inode tables and journal initialised now: otherwise ext4lazyinit writes them in the background for minutes
    # after the mount, and that would be counted against whoever is measured.
    init = "lazy_itable_init=0,lazy_journal_init=0"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", init, *mkfs_options, str(image)], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True)
    name = dev.stdout.strip()
    try:
        mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", name, str(mount)], check=True)
        try:
            yield Path(name).name
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", name], check=False)


def sectors(dev: str) -> int:
    return int(Path(f"/sys/block/{dev}/stat").read_text().split()[6])


def per_day(sectors_written: int, seconds: float) -> float:
    return sectors_written * 512 / seconds * 86400 / 1e6


def line_bytes(rate: int) -> int:
    """Line protocol bytes per second the simulated sensors produce (the payload)."""
    line = Reading("simulated", {"value": 12.345678}, {"sensor": "s42", "unit": "K"}, time.time_ns()).to_line()
    return rate * (len(line) + 1)


def run_agent(work: Path, rate: int, sinks_up: bool, seconds: float, commit_interval: float) -> dict[str, float]:
    state = work / "state"
    with (
        loop_ext4(work / "agent.img", state) as agent_dev,
        loop_ext4(work / "statefile.img", work / "statefile") as statefile_dev,
        contextlib.ExitStack() as stack,
    ):
        influx_dev = None
        if sinks_up:
            influx_dev = stack.enter_context(loop_ext4(work / "influx.img", work / "influx"))
            server = LocalInfluxd(work / "influx").start()
            stack.callback(server.stop)
            server.query('CREATE DATABASE "fieldstation"')
            url = server.url
        else:
            url = f"http://127.0.0.1:{free_port()}"
        (work / "config.py").write_text(
            "from fieldstation.sensors.simulated import Simulated\n"
            f"sensors = [Simulated(name=f's{{i}}', interval=1.0, unit='K') for i in range({rate})]\n"
        )
        (work / "agent.toml").write_text(
            f'config = "{work / "config.py"}"\nstate_file = "{work / "statefile" / "state.json"}"\n'
            f'energy_file = "{state / "energy.json"}"\n'  # on the agent's drive, as on a station
            f'[spool]\npath = "{state / "spool.db"}"\ncommit_interval = {commit_interval}\n'
            f'[[sinks]]\nname = "local"\nurl = "{url}"\ntimeout = 2\n'
        )
        with (work / "agent.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fieldstation.cli", "run", "--settings", str(work / "agent.toml")],
                stdout=log,
                stderr=log,
            )
        try:
            time.sleep(WARM_UP_S)
            a0, f0, t0 = sectors(agent_dev), sectors(statefile_dev), time.monotonic()
            i0 = sectors(influx_dev) if influx_dev else 0
            while time.monotonic() - t0 < seconds:
                time.sleep(1)
                print(f"\r  {rate}/s sinks {'up' if sinks_up else 'down'}: {time.monotonic() - t0:.0f}/{seconds:.0f} s",
                      end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            a1, f1, t1 = sectors(agent_dev), sectors(statefile_dev), time.monotonic()
            i1 = sectors(influx_dev) if influx_dev else 0
            own = json.loads((work / "statefile" / "state.json").read_text()).get("bytes_written_per_day") or 0.0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {
        "spool": per_day(a1 - a0, t1 - t0),
        "state_file": per_day(f1 - f0, t1 - t0),
        "influx": per_day(i1 - i0, t1 - t0) if sinks_up else float("nan"),
        "own": own / 1e6,
    }


def fsync_floor(work: Path, rate: int, interval: float, seconds: float) -> float:
    """A bare append-only file taking the payload with an fdatasync every ``interval``: the cost of durability."""
    with loop_ext4(work / "floor.img", work / "floor") as dev:
        chunk = b"x" * int(line_bytes(rate) * interval)
        fd = os.open(work / "floor" / "segment", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            time.sleep(1)
            s0, t0 = sectors(dev), time.monotonic()
            while time.monotonic() - t0 < seconds:
                os.write(fd, chunk)
                os.fdatasync(fd)
                time.sleep(interval)
            s1, t1 = sectors(dev), time.monotonic()
        finally:
            os.close(fd)
    return per_day(s1 - s0, t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measured seconds per case (after warm-up)")
    parser.add_argument("--commit-interval", type=float, default=0.5, help="the agent's spool.commit_interval")
    parser.add_argument("--cases", default="10:up,10:down,100:up,100:down", help="readings/s:sinks, comma-separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("flash_wear.py needs root (loop devices)", file=sys.stderr)
        return 2
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores {cpu}, Python {platform.python_version()}, "
          f"{args.seconds:g} s per case after {WARM_UP_S} s warm-up, commit_interval {args.commit_interval:g} s")
    print("| readings/s | sinks | agent: spool MB/day | + state file | = agent as shipped | own /proc/self/io |"
          " InfluxDB | payload | before | ratio (spool) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [(int(rate), sinks == "up") for rate, sinks in (c.split(":") for c in args.cases.split(","))]
    for rate, up in cases:
        with tempfile.TemporaryDirectory(prefix="flash-wear-") as tmp:
            r = run_agent(Path(tmp), rate, up, args.seconds, args.commit_interval)
        payload = line_bytes(rate) * 86400 / 1e6
        before = OLD_MB_PER_DAY if rate == 100 and up and args.commit_interval == 0.5 else None
        # One sector in the measured time is 512 B × 86400 / seconds: below that, "nothing written" is the figure.
        ratio = ("nothing written" if r["spool"] < 0.5 else f"{before / r['spool']:.0f}× less") if before else ""
        influx = f"{r['influx']:.0f}" if up else "(down)"
        print(f"| {rate} | {'up' if up else 'down'} | **{r['spool']:.1f}** | {r['state_file']:.1f} |"
              f" {r['spool'] + r['state_file']:.1f} | {r['own']:.1f} | {influx} | {payload:.0f} | {before or ''} |"
              f" {ratio} |", flush=True)
    for rate in sorted({rate for rate, up in cases if not up}):
        with tempfile.TemporaryDirectory(prefix="flash-wear-") as tmp:
            floor = fsync_floor(Path(tmp), rate, args.commit_interval, args.seconds)
        what = f"fsync floor: bare append + fdatasync every {args.commit_interval:g} s"
        print(f"| {rate} | {what} | {floor:.0f} | | | | | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
