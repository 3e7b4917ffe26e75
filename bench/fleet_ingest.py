"""A fleet's central server: how many samples per second one VictoriaMetrics single-node server (Debian's
``victoria-metrics``) ingests here, and how many stations that is.

1. **Per station**: the samples per second a station sends from a config.py (default: the example station's
   config, ``agent/src/fieldstation/example_config.py``): each sensor's declared fields divided by its interval,
   plus the agent's own health readings every ``health_interval`` (10 s) with two sinks (local and central).
   VictoriaMetrics stores each field of a line as a sample of its own series (``<measurement>_<field>``).
2. **Ingest**: a throwaway server on loopback (data in a temporary directory, the role's flags), fed line protocol
   as stations send it (``station`` tag, batches of ``--batch`` lines of one field each, ns timestamps) from
   ``--clients`` keep-alive connections for ``--seconds``, straight to ``/write`` and then through vmauth over
   HTTPS (one user per station, as the central role configures it). Bodies are encoded before the clock starts,
   so the client's Python costs little; client and server share the machine's cores all the same.
3. **Stations per server**: the ingest rate divided by a station's rate, and at a quarter of it (headroom for
   queries, merges and a fleet's backlogs arriving at once).

It prints the figures and the server's RSS; it asserts nothing.

    .venv-3.11/bin/python bench/fleet_ingest.py [--config PATH] [--stations 200] [--series 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from fieldstation.influxd import free_port
from fieldstation.loader import load_sensors

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "agent/src/fieldstation/example_config.py"
#: Health fields per health interval (agent.health_readings, scheduler.health_readings): per sensor 5 counts and a
#: latency; per sink depth, oldest unsent age and 5 sink counters; the spool's dropped, held and dropped in memory,
#: and bytes written per day.
HEALTH_PER_SENSOR = 6
HEALTH_PER_SINK = 7
HEALTH_AGENT = 4


def station_rate(config: Path, health_interval: float = 10.0, sinks: int = 2) -> tuple[float, int, int]:
    """(samples/s, sensors, fields of sensor readings per round) of one station running ``config``."""
    sensors = load_sensors(config)
    rate = 0.0
    fields = 0
    for s in sensors:
        n = len(s.declared_fields() or ["value"])
        fields += n
        rate += n / s.interval
    rate += (HEALTH_PER_SENSOR * len(sensors) + HEALTH_PER_SINK * sinks + HEALTH_AGENT) / health_interval
    return rate, len(sensors), fields


def start(args: list[str], ready: str, context: ssl.SSLContext | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ready, timeout=1, context=context) as r:  # noqa: S310  (our loopback URL)
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{args[0]} did not start")


def bodies(stations: int, series: int, batch: int, total_lines: int, t0: int) -> list[tuple[str, bytes]]:
    """(station, body) pairs: each station's series, one sample each per round, timestamps 1 s apart per round
    from ``t0`` (ns)."""
    out: list[tuple[str, bytes]] = []
    lines: list[str] = []
    rounds = max(1, total_lines // (stations * series))
    for r in range(rounds):
        ts = t0 + r * 10**9
        for st in range(stations):
            name = f"st-{st:04d}"
            for i in range(series):
                lines.append(f"bench,sensor=s{i:03d},unit=K,station={name} value={r + i * 0.001} {ts}")
                if len(lines) == batch:
                    out.append((name, "\n".join(lines).encode()))
                    lines = []
    if lines:
        out.append(("st-0000", "\n".join(lines).encode()))
    return out


def feed(
    host: str,
    port: int,
    work: list[tuple[str, bytes]],
    clients: int,
    seconds: float,
    *,
    tls: ssl.SSLContext | None,
    passwords: dict[str, str] | None,
) -> tuple[int, float]:
    """POST the bodies (round robin over ``clients`` connections) until done or ``seconds`` pass: (lines, s)."""
    sent = [0] * clients
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def run(k: int) -> None:
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(host, port, context=tls, timeout=60)
            if tls
            else http.client.HTTPConnection(host, port, timeout=60)
        )
        for i in range(k, len(work), clients):
            if time.monotonic() > stop:
                break
            station, body = work[i]
            headers = {"Content-Type": "text/plain"}
            if passwords:
                cred = base64.b64encode(f"{station}:{passwords[station]}".encode()).decode()
                headers["Authorization"] = f"Basic {cred}"
            conn.request("POST", "/write?db=fieldstation&precision=ns", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 204:
                errors.append(f"{resp.status}")
                return
            sent[k] += body.count(b"\n") + 1
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"writes refused: {errors[:3]}")
    return sum(sent), elapsed


def start_vmauth(
    tmp: Path, vm_port: int, auth_port: int, passwords: dict[str, str]
) -> tuple[subprocess.Popen[bytes], ssl.SSLContext]:
    """vmauth over HTTPS (a self-signed certificate) with one user per station, as the central role sets it up."""
    routes = [{"src_paths": ["/write", "/ping"], "url_prefix": f"http://127.0.0.1:{vm_port}"}]
    users = [{"username": u, "password": p, "url_map": routes} for u, p in passwords.items()]
    (tmp / "auth.yml").write_text(json.dumps({"users": users}))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tmp / "c.key"), "-out", str(tmp / "c.crt"), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(tmp / "c.crt"))
    auth = start(
        ["vmauth", f"-auth.config={tmp / 'auth.yml'}", f"-httpListenAddr=127.0.0.1:{auth_port}", "-tls",
         f"-tlsCertFile={tmp / 'c.crt'}", f"-tlsKeyFile={tmp / 'c.key'}", "-loggerLevel=ERROR"],
        f"https://127.0.0.1:{auth_port}/health",
        context,
    )  # fmt: skip
    return auth, context


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=EXAMPLE)
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--series", type=int, default=50, help="series per station in the ingest test")
    ap.add_argument("--batch", type=int, default=5000, help="lines per POST (the sink's batch_size)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--lines", type=int, default=3_000_000, help="lines encoded beforehand (at most this many sent)")
    args = ap.parse_args()
    for binary in ("victoria-metrics", "vmauth", "openssl"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} not found: apt-get install victoria-metrics openssl")

    rate, n_sensors, fields = station_rate(args.config)
    print(f"one station ({args.config.name}): {n_sensors} sensors, {fields} fields per round")
    print(f"  samples per second sent to the central server     {rate:10.2f}")
    print(f"  samples per day                                   {rate * 86400:10.0f}")

    tmp = Path(tempfile.mkdtemp(prefix="fleet-ingest-"))
    vm_port, auth_port = free_port(), free_port()
    vm = start(
        [
            "victoria-metrics",
            f"-storageDataPath={tmp / 'data'}",
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            "-dedup.minScrapeInterval=1ms",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ],
        f"http://127.0.0.1:{vm_port}/health",
    )
    auth: subprocess.Popen[bytes] | None = None
    try:
        print(f"encoding {args.lines} lines: {args.stations} stations x {args.series} series, batches of {args.batch}")
        day_ago = (int(time.time()) - 86400) * 10**9
        work = bodies(args.stations, args.series, args.batch, args.lines, day_ago)
        warm = work[: len(work) // 20]
        feed("127.0.0.1", vm_port, warm, args.clients, args.seconds, tls=None, passwords=None)  # series created
        lines, s = feed("127.0.0.1", vm_port, work[len(warm) :], args.clients, args.seconds, tls=None, passwords=None)
        direct = lines / s
        print(f"VictoriaMetrics /write, {args.clients} connections: {lines} samples in {s:.1f} s")
        print(f"  samples per second                                {direct:10.0f}")
        print(f"  RSS of victoria-metrics                           {rss_mb(vm.pid):10.1f} MB")

        passwords = {f"st-{i:04d}": base64.b64encode(os.urandom(12)).decode() for i in range(args.stations)}
        auth, context = start_vmauth(tmp, vm_port, auth_port, passwords)
        # Other timestamps than the direct run's (12 h later): the same bodies would be deduplicated, not stored.
        del work
        shifted = bodies(args.stations, args.series, args.batch, args.lines, day_ago + 43200 * 10**9)
        lines, s = feed("127.0.0.1", auth_port, shifted, args.clients, args.seconds, tls=context, passwords=passwords)
        proxied = lines / s
        print(
            f"through vmauth (HTTPS, {args.stations} users), {args.clients} connections: {lines} samples in {s:.1f} s"
        )
        print(f"  samples per second                                {proxied:10.0f}")
        print(f"  RSS of vmauth                                     {rss_mb(auth.pid):10.1f} MB")
        best = min(direct, proxied)
        print("stations per single-node server (the slower path):")
        print(f"  at the measured rate                              {best / rate:10.0f}")
        print(f"  at a quarter of it (headroom)                     {best / rate / 4:10.0f}")
    finally:
        for proc in (auth, vm):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
