"""``fieldstation backup [--sd-image]``, ``fieldstation backup verify`` and ``fieldstation restore [BACKUP]``.

Each backup and each drill, good or failed, leaves one reading for the agent's spool (queued in its ``incoming``
folder, taken within a second by the running agent): measurement
``fieldstation_backup``, tag ``kind`` = ``backup`` | ``restore_drill``, fields ``ok``, ``bytes``, ``duration_s``
(what the agent dashboard and the "no good backup" alert read).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fieldstation.paths import DEFAULT_BACKUP_SETTINGS

MEASUREMENT = "fieldstation_backup"


def _say(line: str) -> None:
    print(line, flush=True)


def record(agent_settings: Path | None, kind: str, *, ok: bool, size: int, duration_s: float) -> None:
    """The result as one line protocol point, queued for the agent's spool (``spool.enqueue``): the backup runs as
    root, and opening the spool itself would leave SQLite's WAL files root's."""
    from fieldstation.reading import encode_line
    from fieldstation.settings import load_settings
    from fieldstation.spool import enqueue

    settings = load_settings(agent_settings)
    line = encode_line(
        MEASUREMENT, {"kind": kind}, {"ok": ok, "bytes": size, "duration_s": round(duration_s, 3)}, time.time_ns()
    )
    enqueue(settings.spool.path, [line], kind)


def _run(args: argparse.Namespace, kind: str, fn: Any) -> int:
    """Run a job, print one line on failure, and record its reading either way."""
    from fieldstation.backup.influx import BackupError
    from fieldstation.backup.share import ShareError
    from fieldstation.influxql import InfluxError
    from fieldstation.loader import ConfigError
    from fieldstation.settings import BackupSettings, load_toml
    from fieldstation.spool import SpoolError

    start = time.monotonic()
    ok, size, rc = False, 0, 1
    try:
        settings = load_toml(args.settings, BackupSettings)
        ok, size = fn(settings)
        rc = 0 if ok else 1
    except (BackupError, ShareError, InfluxError, ConfigError) as exc:
        print(f"fieldstation {args.command}: {exc}", file=sys.stderr)
    except OSError as exc:  # local: the staging folder full, the SD card unreadable
        print(f"fieldstation {args.command}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    if not args.no_record:
        try:
            record(args.agent_settings, kind, ok=ok, size=size, duration_s=time.monotonic() - start)
        except (ConfigError, SpoolError, OSError) as exc:
            print(f"fieldstation {args.command}: result not recorded: {exc}", file=sys.stderr)
    return rc


def cmd_backup(args: argparse.Namespace) -> int:
    if args.backup_command == "verify":
        return cmd_verify(args)
    from fieldstation.backup.backup import run_backup

    def job(settings: Any) -> tuple[bool, int]:
        sd = None
        if args.sd_image is not None:
            sd = Path(args.sd_image) if args.sd_image else settings.sd_device
        result = run_backup(settings, sd_image=sd, say=_say)
        return True, result.bytes

    return _run(args, "backup", job)


def cmd_verify(args: argparse.Namespace) -> int:
    from fieldstation.backup.verify import run_verify

    def job(settings: Any) -> tuple[bool, int]:
        drill = run_verify(settings, host=args.host, age_identity=args.age_identity, say=_say)
        if not drill.ok:
            more = f" (and {len(drill.problems) - 1} more)" if len(drill.problems) > 1 else ""
            print(f"fieldstation backup: restore drill failed: {drill.problems[0]}{more}", file=sys.stderr)
        return drill.ok, drill.bytes

    return _run(args, "restore_drill", job)


def cmd_restore(args: argparse.Namespace) -> int:
    from fieldstation.backup.influx import BackupError
    from fieldstation.backup.restore import run_restore
    from fieldstation.backup.share import ShareError
    from fieldstation.influxql import InfluxError
    from fieldstation.settings import BackupSettings, load_toml

    settings = load_toml(args.settings, BackupSettings)
    try:
        run_restore(settings, args.backup, host=args.host, age_identity=args.age_identity, say=_say)
    except (BackupError, ShareError, InfluxError) as exc:
        print(f"fieldstation restore: {exc}", file=sys.stderr)
        return 1
    return 0


def _settings(sp: argparse.ArgumentParser, default: object = DEFAULT_BACKUP_SETTINGS) -> None:
    sp.add_argument(
        "--settings", type=Path, default=default, help=f"backup settings (default {DEFAULT_BACKUP_SETTINGS})"
    )


def _host(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", help="whose backups (default this host's name)")


def _identity(sp: argparse.ArgumentParser, what: str, default: object = None) -> None:
    sp.add_argument(
        "--age-identity",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"the age identity (private key) of one of age_recipients: {what}",
    )


def _recording(sp: argparse.ArgumentParser, settings_help: str, default: object = None) -> None:
    sp.add_argument(
        "--agent-settings", type=Path, default=default, help=settings_help + "; its spool gets the result reading"
    )
    no_record = False if default is None else default
    sp.add_argument("--no-record", action="store_true", default=no_record, help="do not record the result")


def register(sub: Any, settings_help: str) -> None:
    text = "Back up InfluxDB, Grafana and the configs to the SMB share, then rotate."
    sp = sub.add_parser("backup", help=text, description=text)
    _settings(sp)
    sp.add_argument(
        "--sd-image",
        nargs="?",
        const="",
        metavar="DEVICE",
        help="also stream a gzip of the whole SD card (default: sd_device of the settings)",
    )
    _recording(sp, settings_help)
    sp.set_defaults(fn=cmd_backup, backup_command=None, host=None, age_identity=None)
    verbs = sp.add_subparsers(dest="backup_command", metavar="COMMAND")
    text = "The restore drill: restore the latest backup into scratch databases and compare with the live ones."
    vp = verbs.add_parser("verify", help=text, description=text)
    # SUPPRESS: an option given before `verify` is not reset by the sub-command's own default.
    _settings(vp, argparse.SUPPRESS)
    _host(vp)
    _recording(vp, settings_help, argparse.SUPPRESS)
    _identity(vp, "also decrypt the secrets' archive (a drill by hand)", argparse.SUPPRESS)

    text = "Restore InfluxDB, Grafana and the configs from a backup on the share (default the latest)."
    rp = sub.add_parser("restore", help=text, description=text)
    rp.add_argument("backup", nargs="?", help="the backup's name (a UTC stamp like 20260130T021500Z) or 'latest'")
    _settings(rp)
    _host(rp)
    _identity(rp, "the config files that hold secrets come back too (without it: the restore lists them)")
    rp.set_defaults(fn=cmd_restore)
