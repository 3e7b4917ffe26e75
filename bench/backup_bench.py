"""Backup and restore-drill time next to ``influxd backup`` alone, for a station's database.

Seeds a throwaway InfluxDB (Debian's influxd) with ``--days`` of ``--rate`` readings per second (default 30 days
at 10/s: 25.9 M points, ten sensors at 1 Hz, one float field each with two decimals of noise, tags sensor and unit,
in the ``raw`` policy as ``fieldstation influx setup`` makes it), starts a real smbd on 127.0.0.1, then times, once
each:

- **influxd backup**: ``influxd backup -portable`` to a local folder, nothing else (the floor);
- **fieldstation backup**: the census (point counts per measurement), the same portable backup, Grafana and config
  archives (small here), checksums, upload over SMB, rename, rotation;
- **fieldstation backup verify**: download, checksums, restore into a scratch database, the census of scratch and
  live, drop;

and prints seconds, sizes and the ratios. It asserts nothing.

    .venv-3.11/bin/python bench/backup_bench.py [--days 30] [--rate 10]
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from fieldstation.backup import influx as influx_ops
from fieldstation.backup.backup import run_backup
from fieldstation.backup.influx import InfluxTarget
from fieldstation.backup.verify import run_verify
from fieldstation.influx_setup import Credentials, InfluxSetup, setup
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from fieldstation.settings import BackupSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.samba import running_samba  # the tests' smbd, started the same way

SENSORS = 10
BATCH = 50_000


def seed(url: str, days: int, rate: int) -> int:
    """``days`` of ``rate`` points per second, ending now; returns the number of points."""
    setup(InfluxSetup(url=url, admin=Credentials(username="admin", password=SecretStr("x"))), say=lambda _: None)
    client = Influx(url)
    sensors = max(1, min(SENSORS, rate))
    step_ns = 10**9 * sensors // rate  # each sensor's interval
    end = time.time_ns() // 10**9 * 10**9
    start = end - days * 86400 * 10**9
    total = days * 86400 * rate
    lines: list[str] = []
    rng = random.Random(1)  # a sensor's noise: real readings do not compress to nothing
    written = 0
    t = start
    k = 0
    t0 = time.monotonic()
    while written + len(lines) < total:
        for s in range(sensors):
            lines.append(f"temperature,sensor=t{s},unit=°C value={20 + rng.random() * 5:.2f} {t}")
        t += step_ns
        k += 1
        if len(lines) >= BATCH:
            client.write(lines, "fieldstation", "raw")
            written += len(lines)
            lines = []
            if k % (BATCH * 20 // sensors) == 0:
                print(f"  seeding: {written / 1e6:.1f}/{total / 1e6:.1f} M points, {time.monotonic() - t0:.0f} s",
                      flush=True)
    if lines:
        client.write(lines, "fieldstation", "raw")
        written += len(lines)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--rate", type=int, default=10, help="readings per second")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fieldstation-backup-bench-"))
    server = LocalInfluxd(tmp / "influxd").start()
    try:
        t0 = time.monotonic()
        points = seed(server.url, args.days, args.rate)
        print(f"seeded {points:,} points in {time.monotonic() - t0:.0f} s", flush=True)
        data = sum(f.stat().st_size for f in (tmp / "influxd").rglob("*") if f.is_file())
        target = InfluxTarget(server.url, None, f"127.0.0.1:{server.rpc_port}")

        t0 = time.monotonic()
        influx_ops.backup(target, tmp / "plain")
        plain_s = time.monotonic() - t0
        plain_bytes = sum(f.stat().st_size for f in (tmp / "plain").rglob("*") if f.is_file())
        shutil.rmtree(tmp / "plain")

        with running_samba(tmp / "smb") as smb:
            cred = smb.credentials_file(tmp / "cred")
            settings = BackupSettings(share=smb.url(), port=smb.port, credentials=cred, influx_url=server.url,
                                      influx_setup=tmp / "absent.toml", influx_rpc=target.rpc,
                                      grafana_db=tmp / "absent.db", configs={}, work_dir=tmp / "work")
            quiet = lambda _line: None  # noqa: E731
            t0 = time.monotonic()
            result = run_backup(settings, say=quiet)
            backup_s = time.monotonic() - t0
            t0 = time.monotonic()
            drill = run_verify(settings, say=quiet)
            verify_s = time.monotonic() - t0
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{args.days} days at {args.rate}/s = {points:,} points, data dir {data / 1e6:.0f} MB")
    print(f"{'step':<28} {'seconds':>8} {'MB':>8} {'× influxd backup':>17}")
    print(f"{'influxd backup -portable':<28} {plain_s:>8.1f} {plain_bytes / 1e6:>8.1f} {1:>17.1f}")
    print(f"{'fieldstation backup':<28} {backup_s:>8.1f} {result.bytes / 1e6:>8.1f} {backup_s / plain_s:>17.1f}")
    print(f"{'fieldstation backup verify':<28} {verify_s:>8.1f} {drill.bytes / 1e6:>8.1f} {verify_s / plain_s:>17.1f}")
    print(f"drill {'passed' if drill.ok else 'FAILED: ' + '; '.join(drill.problems)}")


if __name__ == "__main__":
    main()
