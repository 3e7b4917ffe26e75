"""The everyday tools' commands: ``doctor``, ``spikes``, ``rename-series``, ``export``, ``ups test-shutdown``
(registered by cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from fieldstation.errors import ConfigError

GRAFANA_TOKEN_ENV = "FIELDSTATION_GRAFANA_TOKEN"  # noqa: S105  (a variable's name, not a secret)


def _influx_args(sp: argparse.ArgumentParser, settings_help: str) -> None:
    g = sp.add_argument_group("InfluxDB (default: influx-setup.toml's if readable, else the agent's first sink)")
    g.add_argument("--settings", type=Path, help=settings_help)
    g.add_argument("--sink", help="the sink of agent.toml to use (default the first)")
    g.add_argument("--url", help="InfluxDB URL instead of the sink's")
    g.add_argument("--db", help="database instead of the sink's")
    g.add_argument("--rp", help="retention policy (default: the database's default, raw)")
    _credential_args(g)


def _credential_args(g: Any) -> None:
    g.add_argument("--user", help="InfluxDB user; the password comes from $FIELDSTATION_INFLUX_PASSWORD")
    g.add_argument(
        "--influx-setup",
        type=Path,
        help="influx-setup.toml whose server and admin to use (default /etc/fieldstation/… if readable)",
    )


def _range_args(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("time range (default the last 24 h)")
    g.add_argument("--start", help="RFC 3339 time, e.g. 2026-11-29T00:00:00Z, or ns since the epoch")
    g.add_argument("--end", help="default now")
    g.add_argument("--last", help="duration back from --end, e.g. 24h or 7d")


def _series_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("measurement")
    sp.add_argument("--where", action="append", default=[], metavar="TAG=VALUE", help="only these series")


def _target(args: argparse.Namespace) -> Any:
    from fieldstation.tools.common import target

    return target(args.settings, args.url, args.db, args.sink, user=args.user, setup_path=args.influx_setup)


def _grafana_settings(path: Path | None) -> Any:
    from fieldstation.grafana.settings import DEFAULT_GRAFANA_SETTINGS, GrafanaSettings
    from fieldstation.settings import load_toml

    path = path or (DEFAULT_GRAFANA_SETTINGS if DEFAULT_GRAFANA_SETTINGS.exists() else None)
    return load_toml(path, GrafanaSettings) if path else None


# -- doctor -----------------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from fieldstation.loader import load_sensors
    from fieldstation.settings import load_settings
    from fieldstation.tools import doctor
    from fieldstation.tools.common import target

    settings = load_settings(args.settings)
    gs = _grafana_settings(args.grafana)
    inp = doctor.Inputs(
        influx=target(args.settings, args.url, args.db, user=args.user, setup_path=args.influx_setup),
        spool=settings.spool.path,
        sinks=[s.name for s in settings.sinks],
        state_file=settings.state_file,
        health_interval=settings.health_interval,
        grafana_url=args.grafana_url or (gs.url if gs else None),
        grafana_token=os.environ.get(GRAFANA_TOKEN_ENV) or None,
        provisioning=args.provisioning or (Path(gs.provisioning_path) if gs else None),
        backup_max_age=args.backup_max_age or (gs.alerts.backup_max_age if gs else "26h"),
        drill_max_age=args.drill_max_age,
        timeout=args.timeout,
    )
    for name in ("fstab", "mounts", "sys", "proc", "throttled_file"):
        if getattr(args, name) is not None:
            setattr(inp, name, getattr(args, name))
    config = args.config or settings.config
    if config.exists():
        try:
            sensors = load_sensors(config)
        except ConfigError as exc:
            inp.nut_error = str(exc)
        else:
            inp.nut = [(s.host, s.port, s.ups) for s in sensors if type(s).driver == "nut"]  # type: ignore[attr-defined]
    results = doctor.run_checks(inp)
    if args.json:
        print(doctor.to_json(results))
    else:
        doctor.print_table(results)
    return 1 if any(r.status == doctor.FAIL for r in results) else 0


# -- spikes -----------------------------------------------------------------------------------------------


def cmd_spikes(args: argparse.Namespace) -> int:
    from fieldstation.tools import spikes
    from fieldstation.tools.common import tag_filter, time_range

    if args.window < 3:
        raise ConfigError("spikes --window: at least 3 points")
    if args.method == "absolute" and args.min is None and args.max is None:
        raise ConfigError("spikes --method absolute: give --min and/or --max")
    t = _target(args)
    span = time_range(args.start, args.end, args.last)
    o = spikes.Options(window=args.window, k=args.k, min_deviation=args.min_deviation, low=args.min, high=args.max)
    found = spikes.find(
        t, args.measurement, args.field, rp=args.rp, tags=tag_filter(args.where), span=span, method=args.method, o=o
    )
    spikes.print_table(found, args.measurement, args.field, "median" if args.method == "mad" else "limit")
    if not found:
        print("no spikes")
        return 0
    if not args.delete:
        print(f"{len(found)} spike{'s' if len(found) != 1 else ''} (dry run: --delete removes them)")
        return 0
    n = spikes.delete(t, args.measurement, args.field, found, args.rp)
    print(f"{n} spike{'s' if n != 1 else ''} deleted")
    return 0


# -- rename-series ----------------------------------------------------------------------------------------


def cmd_rename(args: argparse.Namespace) -> int:
    from fieldstation.loader import load_sensors
    from fieldstation.settings import load_settings
    from fieldstation.tools import rename

    if args.old == args.new:
        raise ConfigError("rename-series: OLD and NEW are the same")
    config = args.config or load_settings(args.settings).config
    still = [s.name for s in load_sensors(config) if s.measurement_name == args.old] if config.exists() else []
    if still and not args.force:
        raise ConfigError(
            f'{config}: {", ".join(still)} still write {args.old}: set measurement="{args.new}" there and restart '
            "the agent first (then rename with --merge), or --force"
        )
    t = _target(args)
    copied = rename.copy(t, args.old, args.new, merge=args.merge)
    for rp, n in copied.items():
        print(f"{rp}: {n} points copied into {args.new}, counts and field types verified")
    rename.drop(t, args.old, args.new, list(copied), merge=args.merge)
    print(f"{args.old}: dropped")
    gs = _grafana_settings(args.grafana)
    provisioning = args.provisioning or (Path(gs.provisioning_path) if gs else None)
    if provisioning is not None and provisioning.is_dir():
        for path in rename.rewrite_dashboards(provisioning, args.old, args.new):
            print(f"{path}: now reads {args.new}")
    if still:
        print(
            f'{config}: {", ".join(still)} still write {args.old}: set measurement="{args.new}" there, '
            "restart the agent and run fieldstation grafana render",
            file=sys.stderr,
        )
    return 0


# -- export -----------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from fieldstation.tools import export
    from fieldstation.tools.common import duration_ns, tag_filter, time_range

    fmt = args.format or ("parquet" if args.output and args.output.suffix == ".parquet" else "csv")
    if args.every:
        duration_ns(args.every)  # a one-line error for a bad interval, before InfluxDB sees it
    t = _target(args)
    span = time_range(args.start, args.end, args.last)
    try:
        n = export.export(
            t,
            args.measurement,
            rp=args.rp,
            fields=args.field,
            tags=tag_filter(args.where),
            span=span,
            every=args.every,
            fmt=fmt,
            output=args.output,
        )
    except BrokenPipeError:
        # `fieldstation export … | head`: the reader has gone; stop quietly (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    print(f"export: {n} rows{f' to {args.output}' if args.output else ''}", file=sys.stderr)
    return 0


# -- ups test-shutdown ------------------------------------------------------------------------------------


def cmd_ups_test_shutdown(args: argparse.Namespace) -> int:
    from fieldstation.tools import ups

    return ups.cmd_test_shutdown(args.file or ups.DEFAULT_FILE, args.timeout)


# -- scan -------------------------------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    from fieldstation.tools import scan

    try:
        mqtt = scan.parse_broker(args.mqtt) if args.mqtt is not None else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.seconds <= 0:
        raise ConfigError(f"--seconds {args.seconds:g}: must be above 0")
    nut = None if args.no_nut else (args.nut_host, args.nut_port)
    sections = scan.scan(sys_root=args.sys, dev_root=args.dev, nut=nut, mqtt=mqtt, seconds=args.seconds)
    sys.stdout.write(scan.render(sections))
    return 0


def _register_scan(add: Any) -> None:
    sp = add("scan", cmd_scan, "List the serial ports, 1-Wire and I2C sensors, UPSes and MQTT topics the station "
             "sees, each with a config.py snippet.")
    sp.add_argument("--mqtt", metavar="HOST[:PORT]", help="also list the topics this broker carries (subscribes to #)")
    sp.add_argument("--seconds", type=float, default=5.0, help="how long to listen with --mqtt (default 5)")
    sp.add_argument("--nut-host", default="127.0.0.1", help="upsd to ask for its UPSes (default 127.0.0.1)")
    sp.add_argument("--nut-port", type=int, help="upsd's port (default 3493)")
    sp.add_argument("--no-nut", action="store_true", help="do not ask upsd")
    for name in ("sys", "dev"):
        sp.add_argument(f"--{name}", type=Path, default=Path(f"/{name}"), help=argparse.SUPPRESS)  # for tests


def register(sub: Any, settings_help: str) -> None:
    def add(name: str, fn: Any, text: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("doctor", cmd_doctor, "Check the whole appliance: OK / WARN / FAIL per check, with a fix hint.")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--settings", type=Path, help=settings_help)
    sp.add_argument("--config", type=Path, help="config.py (default: from the settings); its nut sensors are checked")
    sp.add_argument("--grafana", type=Path, help="grafana.toml (default /etc/fieldstation/grafana.toml if present)")
    sp.add_argument("--url", help="InfluxDB URL instead of the first sink's")
    sp.add_argument("--db", help="database instead of the first sink's")
    _credential_args(sp)
    sp.add_argument("--grafana-url", help=f"Grafana instead of grafana.toml's url (token from ${GRAFANA_TOKEN_ENV})")
    sp.add_argument("--provisioning", type=Path, help="Grafana's provisioning directory")
    sp.add_argument("--backup-max-age", help="WARN when the last backup is older (default grafana.toml's, 26h)")
    sp.add_argument("--drill-max-age", default="8d", help="WARN when the last restore drill is older (default 8d)")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds each check may take (default 10)")
    for name in ("fstab", "mounts", "sys", "proc", "throttled-file"):
        sp.add_argument(f"--{name}", type=Path, help=argparse.SUPPRESS)  # other roots, for tests

    _register_scan(add)

    sp = add("spikes", cmd_spikes, "Find outliers in one field over a time range; --delete removes them.")
    _series_args(sp)
    sp.add_argument("--field", default="value", help="the field to scan (default value)")
    _range_args(sp)
    sp.add_argument("--method", choices=["mad", "absolute"], default="mad", help="default mad: rolling median/MAD")
    sp.add_argument("--window", type=int, default=11, help="mad: points per window (default 11)")
    sp.add_argument("-k", type=float, default=5.0, help="mad: threshold in scaled MADs (default 5)")
    sp.add_argument("--min-deviation", type=float, default=0.0, help="mad: ignore deviations up to this (units)")
    sp.add_argument("--min", type=float, help="absolute: values below are spikes")
    sp.add_argument("--max", type=float, help="absolute: values above are spikes")
    sp.add_argument("--delete", action="store_true", help="delete the spikes listed (default: dry run)")
    _influx_args(sp, settings_help)

    sp = add("rename-series", cmd_rename, "Rename a measurement: copy with every tag, verify counts, drop the old.")
    sp.add_argument("old")
    sp.add_argument("new")
    sp.add_argument("--merge", action="store_true", help="copy into NEW even if it exists")
    sp.add_argument("--force", action="store_true", help="even though config.py's sensors still write OLD")
    sp.add_argument("--provisioning", type=Path, help="Grafana's provisioning directory (default grafana.toml's)")
    sp.add_argument("--grafana", type=Path, help="grafana.toml (default /etc/fieldstation/grafana.toml if present)")
    sp.add_argument("--config", type=Path, help="config.py to check for sensors still writing OLD")
    _influx_args(sp, settings_help)

    sp = add("export", cmd_export, "Export a time range of series to CSV or Parquet, optionally resampled.")
    _series_args(sp)
    sp.add_argument("--field", action="append", default=[], help="a field to export (repeatable; default all)")
    _range_args(sp)
    sp.add_argument("--every", help="resample: mean per interval, e.g. 1m")
    sp.add_argument("--format", choices=["csv", "parquet"], help="default from --output's suffix, else csv")
    sp.add_argument("-o", "--output", type=Path, help="file (default: CSV to stdout)")
    _influx_args(sp, settings_help)
    _register_ups(sub)


def _register_ups(sub: Any) -> None:
    ups = sub.add_parser("ups", help="UPS shutdowns (NUT).").add_subparsers(
        dest="ups_command", required=True, metavar="COMMAND"
    )
    text = "Dry run of the remote shutdowns: each host reachable, its pinned host key OK, the shutdown allowed."
    sp = ups.add_parser("test-shutdown", help=text, description=text)
    sp.set_defaults(fn=cmd_ups_test_shutdown)
    sp.add_argument("--file", type=Path, help="the nut role's ups-shutdown.toml (default /etc/fieldstation/…)")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds per host and step (default 10)")
