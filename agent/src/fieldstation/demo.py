"""``fieldstation demo``: the example config of simulated sensors against a throwaway local InfluxDB.

While it runs, its settings, spool and state live in one per-user directory (:func:`demo_dir`,
``$XDG_STATE_HOME/fieldstation/demo``, by default ``~/.local/state/fieldstation/demo``), whose ``agent.toml`` is what
the demo itself runs on: ``fieldstation status``, ``sensors`` and ``doctor`` with ``--settings`` pointing at it look at
the demo exactly as they look at a station (the banner prints the three commands). Nothing is kept: the directory
goes when the demo stops. One demo at a time per user (a lock next to the directory).

InfluxDB runs in a session of its own, so the terminal's Ctrl-C (SIGINT to the whole foreground process group)
reaches only the demo, which stops the agent, prints the summary from the still-running InfluxDB, then stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import IO

from fieldstation.loader import ConfigError, load_sensors
from fieldstation.settings import load_settings

EXAMPLE_CONFIG = Path(__file__).with_name("example_config.py")
DATABASE = "fieldstation"
#: Seconds between the demo agent's state writes: `fieldstation sensors` and `doctor` see it within that.
HEALTH_INTERVAL = 5.0
AGENT_TOML = """\
# Written by `fieldstation demo` for as long as it runs; removed when it stops.
config = {config}
state_file = {state}
health_interval = {health}

[spool]
path = {spool}

[[sinks]]
name = "demo"
url = {url}
database = {database}
"""


def demo_dir() -> Path:
    """Where a running demo keeps its settings, spool and state (the XDG base directory for state)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"  # relative: ignored, per XDG
    return root / "fieldstation" / "demo"


def fieldstation_command() -> str:
    """How to call this same ``fieldstation`` from another terminal: plain when on PATH, else the venv's path."""
    exe = Path(os.path.abspath(sys.executable)).with_name("fieldstation")
    if not exe.exists():
        return "fieldstation"
    on_path = shutil.which("fieldstation")
    if on_path and os.path.samefile(on_path, exe):
        return "fieldstation"
    return shlex.quote(str(exe))


def _lock(directory: Path) -> IO[str]:
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = (directory.parent / "demo.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"{directory}: another fieldstation demo is running; stop it first (Ctrl-C)") from None
    return lock


def _stop_leftover_influxd(directory: Path) -> None:
    """A demo killed outright (SIGKILL) leaves its influxd running in its own session: stop it before reusing."""
    try:
        pid = int((directory / "influxd.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(directory / "influxdb").encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _banner(url: str, directory: Path, settings: Path, config: Path) -> str:
    cmd, s = fieldstation_command(), shlex.quote(str(settings))
    return f"""\
InfluxDB {url} (database {DATABASE}); the demo's settings, spool and state are in {directory}
Grafana is not part of the demo: on a Pi it is at http://<host>.local:3000 (README: "Deploy to a Raspberry Pi"),
  and `vagrant up` forwards a VM's to http://localhost:3000.
While it runs, from another terminal:
  {cmd} status --settings {s}   # spool and sink
  {cmd} sensors --settings {s}  # every sensor's state and last value
  {cmd} doctor --settings {s}   # the appliance's checks (backups, NUT, Grafana do not apply here)
Next: copy {config}, edit it, `{cmd} check my_config.py`, then `agent/demo --config my_config.py`.
Ctrl-C stops the demo."""


def run(args: argparse.Namespace) -> int:
    from fieldstation.agent import Agent
    from fieldstation.cli import print_readings
    from fieldstation.influxd import LocalInfluxd
    from fieldstation.simulators import Station

    config = (args.config or EXAMPLE_CONFIG).resolve()
    sensors = load_sensors(config)
    directory = demo_dir()
    lock = _lock(directory)
    station: Station | None = None
    influx: LocalInfluxd | None = None
    try:  # whatever fails, influxd and the simulators are stopped and the directory removed
        _stop_leftover_influxd(directory)
        shutil.rmtree(directory, ignore_errors=True)  # a demo killed outright leaves its files
        directory.mkdir(mode=0o700)
        influx = LocalInfluxd(directory / "influxdb", own_session=True)
        influx.start()
        assert influx.proc is not None
        (directory / "influxd.pid").write_text(str(influx.proc.pid))
        # The example's Arduino and HTTP entries read simulated devices on their default ports.
        station = Station(directory / "sim", modbus=False)  # the example's meters are commented out
        try:
            station.start()
        except (OSError, RuntimeError) as exc:  # a port in use: pymodbus says RuntimeError, socketserver OSError
            print(f"simulators not started ({exc}): the Arduino and HTTP sensors will report errors", flush=True)
            station.stop()
            station = None
        influx.query(f"CREATE DATABASE {DATABASE}")
        settings_file = directory / "agent.toml"
        settings_file.write_text(
            AGENT_TOML.format(  # JSON strings are TOML basic strings
                config=json.dumps(str(config)),
                state=json.dumps(str(directory / "state.json")),
                health=HEALTH_INTERVAL,
                spool=json.dumps(str(directory / "spool.db")),
                url=json.dumps(influx.url),
                database=json.dumps(DATABASE),
            )
        )
        settings = load_settings(settings_file)  # the demo runs on the very file the other commands are given
        agent = Agent(settings, sensors, on_readings=print_readings)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            # Only now: from the banner on, Ctrl-C is the clean stop it announces.
            print(_banner(influx.url, directory, settings_file, config), flush=True)
            if args.duration:
                loop.call_later(args.duration, stop.set)
            await agent.run(stop)

        asyncio.run(main())
        count = influx.rows("SELECT count(*) FROM /.*/", DATABASE)
        stored = sum(v for row in count for k, v in row.items() if k.startswith("count_") and v)
        print(f"stopped: {agent.acknowledged} readings acknowledged; InfluxDB holds {stored} field values.", flush=True)
    finally:
        if station is not None:
            station.stop()
        if influx is not None:
            influx.stop()
        shutil.rmtree(directory, ignore_errors=True)  # settings, spool, state and InfluxDB's data: nothing to keep
        lock.close()
    return 0
