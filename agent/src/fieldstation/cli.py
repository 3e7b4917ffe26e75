"""``fieldstation``: the one command-line entry point.

Every user mistake ends in one line on stderr and exit code 2; tracebacks only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation import __version__
from fieldstation.errors import ConfigError
from fieldstation.paths import DEFAULT_CONFIG, DEFAULT_SETUP

if TYPE_CHECKING:
    from fieldstation.reading import Reading
    from fieldstation.sensor import Sensor
    from fieldstation.settings import AgentSettings

# Each command imports what it uses, in its body: `--help` and `check` must not pay for pydantic models, asyncio
# or HTTP they never touch (a Pi 3 feels every 100 ms; bench/startup_bench.py).

FEATURE_COMMANDS: tuple[str, ...] = ("fieldstation.tools.cli", "fieldstation.backup.cli", "fieldstation.firstboot")
#: The commands build_parser defines itself (a test checks this against the parser).
OWN_COMMANDS = frozenset(
    {"run", "once", "check", "sensors", "status", "influx", "grafana", "record", "upload-server", "simulate", "demo"}
)
EXIT_USAGE = 2


def _setup_logging(level: str) -> None:
    # journald adds the timestamp and unit; keep lines short and parseable.
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _settings(args: argparse.Namespace) -> AgentSettings:
    from fieldstation.settings import load_settings

    settings = load_settings(args.settings)
    if getattr(args, "config", None):
        settings.config = Path(args.config)
    return settings


def _format_fields(r: Reading) -> str:
    unit = r.tags.get("unit", "")
    parts = []
    for k, v in r.fields.items():
        shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{k}={shown}")
    return " ".join(parts) + (f" {unit}" if unit else "")


def print_readings(readings: list[Reading]) -> None:
    for r in readings:
        stamp = datetime.fromtimestamp(r.time_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]
        print(f"{stamp}  {r.tags.get('sensor', '?'):<18} {_format_fields(r)}", flush=True)


def _driver(s: Sensor) -> str:
    return type(s).driver or type(s).__name__


# -- commands -------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from fieldstation.loader import load_sensors, threads_left_running

    if args.settings is not None:
        from fieldstation.settings import load_settings

        load_settings(args.settings)
    sensors = load_sensors(args.path)
    drivers = sorted({_driver(s) for s in sensors})
    print(f"{args.path}: OK, {len(sensors)} sensors ({', '.join(drivers)})")
    for t in threads_left_running():
        print(f"fieldstation: {args.path}: warning: it starts a thread ({t.name}) that keeps running", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fieldstation.agent import Agent
    from fieldstation.loader import load_sensors

    settings = _settings(args)
    sensors = load_sensors(settings.config)
    return Agent(settings, sensors, on_readings=print_readings if args.print else None).run_forever()


def _user_line(exc: BaseException, sensor: Sensor) -> str:
    """``file:line`` of the innermost frame of config.py in the traceback, else where the sensor is defined."""
    where = None
    if sensor._origin is not None:
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == sensor._origin[0]:
                where = f"{frame.filename}:{frame.lineno}"
    return where or sensor.origin


def _print_user_traceback(exc: BaseException, sensor: Sensor) -> None:
    """The traceback from the first frame of config.py on; the scheduler's frames above it are trimmed."""
    frames = traceback.extract_tb(exc.__traceback__)
    path = sensor._origin[0] if sensor._origin is not None else None
    first = next((i for i, f in enumerate(frames) if f.filename == path), 0)
    lines = ["Traceback (most recent call last):\n"]
    if first:
        lines.append(f"  ... {first} fieldstation frame{'s' if first != 1 else ''} above config.py trimmed\n")
    lines += traceback.format_list(frames[first:])
    lines += traceback.format_exception_only(exc)
    print("".join(lines), end="", file=sys.stderr, flush=True)


def _undeclared(sensor: Sensor, readings: list[Reading]) -> list[str]:
    declared = sensor.declared_fields()
    if declared is None:
        return []
    got = dict.fromkeys(f for r in readings for f in r.fields if f != "out_of_range")
    return [f for f in got if f not in declared]


def cmd_once(args: argparse.Namespace) -> int:
    import asyncio

    from fieldstation.loader import load_sensors
    from fieldstation.scheduler import Scheduler

    sensors = load_sensors(args.config or DEFAULT_CONFIG)
    if args.log_level != "debug":
        # `once` prints each failure itself, with the line of config.py; the scheduler's log line would repeat it.
        logging.getLogger("fieldstation.scheduler").setLevel(logging.ERROR)
    sched = Scheduler(sensors, lambda _: None)
    timings: dict[str, list[float]] = {s.name: [] for s in sensors}
    failed: dict[str, list[str]] = {s.name: [] for s in sensors}
    warned: set[str] = set()

    async def passes() -> None:
        loop = asyncio.get_running_loop()
        for st in sched.states.values():
            st.started = loop.time()
        try:
            for n in range(args.n):
                for st in sched.states.values():
                    st.retry_at = 0.0  # `once` retries every pass: no backoff between passes

                async def one(name: str, n: int) -> list[Reading]:
                    st = sched.states[name]
                    errors_before, exc_before = st.errors, st.last_exception
                    t0 = time.perf_counter()
                    readings = await sched.read_once(st)
                    timings[name].append(time.perf_counter() - t0)
                    if st.errors > errors_before:
                        exc = st.last_exception if st.last_exception is not exc_before else None
                        where = _user_line(exc, st.sensor) if exc is not None else st.sensor.origin
                        failed[name].append(st.last_error or "error")
                        print(f"pass {n + 1}  {name:<18} ERROR {where}: {st.last_error}", flush=True)
                        if args.verbose and exc is not None:
                            _print_user_traceback(exc, st.sensor)
                    others = _undeclared(st.sensor, readings)
                    if others and name not in warned:
                        warned.add(name)
                        print(
                            f"pass {n + 1}  {name:<18} WARNING {st.sensor.origin}: read() returned fields it does not"
                            f" declare: {', '.join(others)} (declared: {', '.join(st.sensor.declared_fields() or [])})",
                            flush=True,
                        )
                    return readings

                results = await asyncio.gather(*(one(s.name, n) for s in sensors))
                for readings in results:
                    print_readings(readings)
        finally:
            await sched._close_all()

    asyncio.run(passes())
    if args.timing:
        print()
        print(f"{'sensor':<18} {'driver':<12} {'reads':>5} {'errors':>6} {'min ms':>8} {'mean ms':>8} {'max ms':>8}")
        for s in sensors:
            t = timings[s.name]
            ms = [x * 1000 for x in t] or [0.0]
            print(
                f"{s.name:<18} {_driver(s):<12} {len(t):>5} {len(failed[s.name]):>6} "
                f"{min(ms):>8.2f} {sum(ms) / len(ms):>8.2f} {max(ms):>8.2f}"
            )
    return 1 if any(failed.values()) else 0


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def cmd_sensors(args: argparse.Namespace) -> int:
    from fieldstation.loader import load_sensors

    settings = _settings(args)
    sensors = load_sensors(settings.config)
    state = _read_state(settings.state_file) or {}
    live = state.get("sensors", {})
    age = time.time() - state.get("time", 0)
    fresh = age < max(3 * settings.health_interval, 30)
    print(f"{'sensor':<18} {'driver':<10} {'interval':>8}  {'state':<11} last value")
    for s in sensors:
        info = live.get(s.name, {}) if fresh else {}
        last = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("last", {}).items())
        unit = s.unit if isinstance(s.unit, str) else ",".join(f"{k}:{v}" for k, v in s.unit.items())
        shown_state = info.get("state", "not running" if not fresh else "unknown")
        print(f"{s.name:<18} {_driver(s):<10} {s.interval:>7g}s  {shown_state:<11} {last} {unit}".rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fieldstation.settings import load_settings
    from fieldstation.spool import Spool

    settings = load_settings(args.settings)
    if not settings.spool.path.exists():
        raise ConfigError(f"{settings.spool.path}: no spool yet (has the agent run?)")
    spool = Spool(settings.spool.path, max_bytes=settings.spool.max_bytes)
    state = _read_state(settings.state_file) or {}
    sinks_state = state.get("sinks", {})
    rows = []
    for sink in settings.sinks:
        b = spool.backlog(sink.name)
        live = sinks_state.get(sink.name, {})
        rows.append(
            {
                "sink": sink.name,
                "url": sink.url,
                "depth": b.depth,
                "oldest_unsent_age_s": round(b.oldest_age_s, 3),
                # The spool records a sink's progress through it; a sink that keeps up takes its windows straight
                # from the agent and never moves it: the live state has that sink's last write.
                "last_success": max((b.last_success_ns / 1e9 if b.last_success_ns else 0.0),
                                    float(live.get("last_success") or 0.0)) or None,
                "last_error": live.get("last_error"),
                # Points the server refused and the sink dropped, this run (from the live state).
                "dropped_points": live.get("dropped_points", 0),
            }
        )
    used, dropped = spool.used_bytes(), spool.counter("dropped")
    spool.close()
    report = {
        "spool": str(settings.spool.path),
        "bytes": used,
        "dropped": dropped,
        "sinks": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"spool {settings.spool.path}: {used / 1e6:.1f} MB, {dropped} points dropped over the disk budget")
    print(f"{'sink':<12} {'depth':>8} {'oldest unsent':>14} {'refused':>8}  {'last successful write':<22} error")
    for r in rows:
        last = datetime.fromtimestamp(r["last_success"]).isoformat(" ", "seconds") if r["last_success"] else "never"
        print(
            f"{r['sink']:<12} {r['depth']:>8} {r['oldest_unsent_age_s']:>13.1f}s {r['dropped_points']:>8}  {last:<22} "
            f"{r['last_error'] or ''}"
        )
    return 0


def cmd_influx_setup(args: argparse.Namespace) -> int:
    from fieldstation.influx_setup import load_setup, setup
    from fieldstation.influxql import Influx

    cfg = load_setup(args.file)
    if args.wait:
        Influx(cfg.url).wait_ready(args.wait)
    setup(cfg, state=args.state)
    return 0


def cmd_grafana_render(args: argparse.Namespace) -> int:
    from fieldstation.grafana import render
    from fieldstation.grafana.settings import DEFAULT_GRAFANA_SETTINGS, GrafanaSettings
    from fieldstation.loader import load_sensors
    from fieldstation.settings import load_settings, load_toml

    gs_path = args.grafana or DEFAULT_GRAFANA_SETTINGS
    gs = load_toml(gs_path, GrafanaSettings) if args.grafana or gs_path.exists() else GrafanaSettings()
    sensors = [] if gs.fleet_only else load_sensors(args.config)  # a fleet's central server has no config.py
    agent_settings = load_settings(args.settings)
    changed = render(args.outdir, sensors, gs, agent_settings.energy, agent_settings.ingest)
    for rel in changed:
        print(f"{args.outdir / rel}: written")
    print(f"{len(changed)} file{'s' if len(changed) != 1 else ''} changed", flush=True)
    return 0


def cmd_grafana_orgs(args: argparse.Namespace) -> int:
    from fieldstation.grafana.orgs import DEFAULT_ORGS_FILE, OrgsError, OrgsSettings, reload_provisioning, sync
    from fieldstation.grafana.settings import DEFAULT_GRAFANA_SETTINGS, GrafanaSettings
    from fieldstation.settings import load_toml

    gs = load_toml(args.grafana or DEFAULT_GRAFANA_SETTINGS, GrafanaSettings)
    if not gs.organizations:
        print(f"{args.grafana or DEFAULT_GRAFANA_SETTINGS}: organizations = false: nothing to do", flush=True)
        return 0
    path = args.file or DEFAULT_ORGS_FILE
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    if mode & 0o077:
        raise ConfigError(f"{path}: readable by others (mode {mode:o}); it holds passwords: make it 0600")
    settings = load_toml(path, OrgsSettings)
    try:
        changes = sync(gs, settings, reset_passwords=args.reset_passwords)
        if args.reload:
            reload_provisioning(settings)
    except OrgsError as exc:
        print(f"fieldstation grafana orgs: {exc}", file=sys.stderr)
        return 1
    print(f"{changes} change{'s' if changes != 1 else ''}", flush=True)
    return 0


def _field_value(text: str) -> bool | int | float | str:
    """``true``/``false`` → bool, ``12i`` or ``12`` → int, ``1.5`` → float, anything else → string."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text.removesuffix("i"))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r}: expected key=value")
        out.append((key, value))
    return out


def cmd_record(args: argparse.Namespace) -> int:
    """One point into the agent's spool: jobs (backups, remote shutdowns) report through the agent's sinks."""
    from fieldstation.reading import encode_line
    from fieldstation.spool import Spool

    settings = _settings(args)
    tags = dict(_pairs(args.tag, "--tag"))
    fields = {k: _field_value(v) for k, v in _pairs(args.field, "--field")}
    if not fields:
        raise ConfigError("record: give at least one --field key=value")
    line = encode_line(args.measurement, tags, fields, time.time_ns())
    spool = Spool(settings.spool.path, max_bytes=settings.spool.max_bytes, sinks=[s.name for s in settings.sinks])
    try:
        spool.append([line])
    finally:
        spool.close()
    print(line)
    return 0


def cmd_upload_server(args: argparse.Namespace) -> int:
    """POST /upload/<source>: files handed to the agent's inbox, answered with its report."""
    import signal

    from fieldstation.ingest.upload import load_upload_settings, serve

    server = serve(load_upload_settings(args.settings), args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"upload endpoint on http://{args.host}:{server.server_address[1]}/upload/<source>", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded defaults: the example config of simulated sensors, a throwaway InfluxDB, live readings."""
    from fieldstation import demo

    return demo.run(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Start the device simulators and write a config.py that reads them; run until Ctrl-C or --duration."""
    import signal
    import threading

    from fieldstation.simulators import DEFAULT_PORTS, Station

    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ports = {name: 0 for name in DEFAULT_PORTS} if args.free_ports else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Station(directory, ports) as station:
        config = directory / "config.py"
        tmp = config.with_suffix(".tmp")
        tmp.write_text(station.config())
        tmp.replace(config)  # whole or not at all: scripts wait for this file
        assert station.tcp_meters and station.arduino and station.http
        print(f"Modbus TCP meters  127.0.0.1:{station.tcp_meters.port} (WE-515 id 1, SDM630 id 2)")
        if station.rtu_port:
            print(f"Modbus RTU meters  {station.rtu_port} at 9600 8N1 (WE-515 id 1, SDM120 id 2)")
        else:
            print("Modbus RTU meters  not started: socat is not installed")
        print(f"Arduino board      127.0.0.1:{station.arduino.port}")
        print(f"HTTP JSON station  http://127.0.0.1:{station.http.port}/weather")
        print(f"config             {config}\ntry                fieldstation once -n 3 --timing {config}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.duration)
    return 0


# -- parser ---------------------------------------------------------------------------------------------


def _admin_commands(sub: Any, settings_help: str) -> None:
    """``influx setup`` and ``grafana render``: what Ansible runs."""

    groups: dict[str, Any] = {}

    def nested(group: str, group_help: str, name: str, fn: Callable[[argparse.Namespace], int], text: str) -> Any:
        if group not in groups:
            groups[group] = sub.add_parser(group, help=group_help).add_subparsers(
                dest=f"{group}_command", required=True, metavar="COMMAND"
            )
        sp = groups[group].add_parser(name, help=text, description=text)
        sp.set_defaults(fn=fn)
        return sp

    sp = nested(
        "influx",
        "InfluxDB administration.",
        "setup",
        cmd_influx_setup,
        "Create the database, users, retention policies and continuous queries (idempotent).",
    )
    sp.add_argument("--file", type=Path, default=DEFAULT_SETUP, help=f"setup file (default {DEFAULT_SETUP})")
    sp.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait this long for InfluxDB to answer")
    sp.add_argument(
        "--state",
        type=Path,
        help="keep the admin login in force here (root-only), so a changed admin password is handed over "
        "(the unit uses /var/lib/fieldstation-influx-setup/admin.json)",
    )

    sp = nested(
        "grafana",
        "Grafana provisioning.",
        "render",
        cmd_grafana_render,
        "Write datasource, dashboards and alerting provisioning for config.py (deterministic).",
    )
    sp.add_argument("outdir", type=Path, help="Grafana's provisioning directory, e.g. /etc/grafana/provisioning")
    sp.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"config.py (default {DEFAULT_CONFIG}; not read when grafana.toml sets fleet_only)",
    )
    sp.add_argument("--grafana", type=Path, help="grafana.toml (default /etc/fieldstation/grafana.toml if present)")
    sp.add_argument("--settings", type=Path, help=settings_help + "; gives the tariff's currency and time zone")

    sp = nested(
        "grafana",
        "Grafana provisioning.",
        "orgs",
        cmd_grafana_orgs,
        "One Grafana organization, team and Viewer logins per client, through Grafana's HTTP API (idempotent).",
    )
    sp.add_argument("--file", type=Path, help="grafana-orgs.toml: admin and logins (default /etc/fieldstation/…)")
    sp.add_argument("--grafana", type=Path, help="grafana.toml (default /etc/fieldstation/grafana.toml)")
    sp.add_argument("--reset-passwords", action="store_true", help="set every login's password from the file")
    sp.add_argument("--reload", action="store_true", help="then ask Grafana to re-read its provisioning files")


def build_parser(features: bool = True) -> argparse.ArgumentParser:
    """The whole CLI; without ``features``, only the commands defined in this module (see :func:`main`)."""
    p = argparse.ArgumentParser(prog="fieldstation", description="Fieldstation acquisition agent.")
    p.add_argument("--version", action="version", version=f"fieldstation {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    settings_help = "agent settings (default /etc/fieldstation/agent.toml, else embedded defaults)"
    sp = add("run", cmd_run, "Run the service: read sensors, spool, write to the sinks.")
    sp.add_argument("--config", type=Path, help="config.py (default: from the settings)")
    sp.add_argument("--settings", type=Path, help=settings_help)
    sp.add_argument("--print", action="store_true", help="also print every reading")

    sp = add("once", cmd_once, "Read every sensor N times and print the readings (nothing is stored).")
    sp.add_argument("config", nargs="?", type=Path, help=f"config.py (default {DEFAULT_CONFIG})")
    sp.add_argument("-n", type=int, default=1, help="passes (default 1)")
    sp.add_argument("--timing", action="store_true", help="print a per-sensor timing table")
    sp.add_argument("--verbose", action="store_true", help="full tracebacks for failing sensors")

    sp = add("check", cmd_check, "Load and validate config.py.")
    sp.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG, help=f"config.py (default {DEFAULT_CONFIG})")
    sp.add_argument("--settings", type=Path, help="also validate this agent.toml")

    sp = add("sensors", cmd_sensors, "Table of sensors: interval, state, last value.")
    sp.add_argument("--config", type=Path)
    sp.add_argument("--settings", type=Path, help=settings_help)

    sp = add("status", cmd_status, "Spool depth, per-sink state and last successful write.")
    sp.add_argument("--settings", type=Path, help=settings_help)
    sp.add_argument("--json", action="store_true")

    _admin_commands(sub, settings_help)

    sp = add("record", cmd_record, "Append one point to the agent's spool (for jobs: backups, remote shutdowns).")
    sp.add_argument("measurement", help="e.g. fieldstation_backup")
    sp.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--field", action="append", default=[], metavar="KEY=VALUE", help="true/false, 12i, 1.5 or text")
    sp.add_argument("--settings", type=Path, help=settings_help)

    sp = add("upload-server", cmd_upload_server, "Serve POST /upload/<source> for file drops over HTTP.")
    sp.add_argument("--host", default="0.0.0.0", help="listen address (default all: building servers are on the LAN)")  # noqa: S104
    sp.add_argument("--port", type=int, default=8080, help="Siemens Insight servers reach only 80, 8080 or 8081")
    sp.add_argument("--settings", type=Path, help="its own settings (default /etc/fieldstation-upload/upload.toml)")

    sp = add("simulate", cmd_simulate, "Start device simulators (Modbus, Arduino, HTTP JSON) and write a config.py.")
    sp.add_argument("--dir", type=Path, default=Path("fieldstation-sim"), help="where config.py goes")
    sp.add_argument("--free-ports", action="store_true", help="free ports instead of 5020, 5000 and 8089")
    sp.add_argument("--duration", type=float, help="stop after this many seconds")

    # Commands that live with their feature: each module has ``register(sub, settings_help)`` and keeps its
    # top-level imports light (the heavy ones load when the command runs).
    for module in FEATURE_COMMANDS if features else ():
        importlib.import_module(module).register(sub, settings_help)

    sp = add("demo", cmd_demo, "Run the example config against a throwaway local InfluxDB, printing live readings.")
    sp.add_argument("--config", type=Path, help="another config.py to demo")
    sp.add_argument("--duration", type=float, help="stop after this many seconds")
    return p


def _exit_past_config_threads(rc: int) -> int:
    """Exit now if config.py left a thread running: the interpreter would wait for it forever at exit."""
    loader = sys.modules.get("fieldstation.loader")  # not imported: no config.py ran
    if loader is not None and loader.threads_left_running():
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(rc)
    return rc


def _raised(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes ``module.Class`` among ``names`` whose module the command imported.

    An exception is raised only by its module's code, so one whose module is not loaded cannot be in flight; the
    ``except`` clauses below evaluate this when something is raised, which keeps those modules out of startup.
    """
    found = []
    for name in names:
        module, _, cls = name.rpartition(".")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], cls))
    return tuple(found)


#: Options of the top-level parser that take a value (the next word is not the command).
_VALUED_OPTIONS = ("--log-level",)


def _own_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` names a command defined in this module (``check``, ``once``, ``run``, ...).

    Those parse exactly the same without the feature modules' parsers, whose imports cost a Pi 3 a tenth of a second
    (bench/startup_bench.py); ``--help``, no command or another command builds the whole CLI.
    """
    words = iter(argv)
    for word in words:
        if word in _VALUED_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word in OWN_COMMANDS
    return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(features=not _own_command(argv))
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        rc: int = _exit_past_config_threads(args.fn(args))
    except _raised("fieldstation.errors.ConfigError", "fieldstation.spool.SpoolError") as exc:
        for line in str(exc).splitlines():
            print(f"fieldstation: {line}", file=sys.stderr)
        return _exit_past_config_threads(EXIT_USAGE)
    except _raised("fieldstation.influxql.InfluxError") as exc:
        print(f"fieldstation {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(
            f"fieldstation {args.command}: {type(exc).__name__}: {exc} (--verbose shows the traceback)", file=sys.stderr
        )
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
