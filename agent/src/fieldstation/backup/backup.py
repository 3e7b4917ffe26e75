"""``fieldstation backup``: InfluxDB, Grafana's database, the configs and a manifest, to ``<host>/<UTC stamp>/``.

Everything is staged locally (``influxd backup`` and SQLite's backup API both write files), checksummed, then
uploaded under ``<host>/.partial-<stamp>/`` and renamed to ``<host>/<stamp>/`` only once the manifest is there: a
backup that stopped half-way never looks complete. Rotation then deletes complete backups that are neither among
the newest ``keep_last`` nor younger than ``keep_days``; the one just made is always kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import hashlib
import hmac
import io
import json
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldstation import __version__
from fieldstation.backup import influx
from fieldstation.backup.influx import BackupError, InfluxTarget
from fieldstation.backup.share import Share, ShareError, read_credentials
from fieldstation.ingest.inbox import sha256_of
from fieldstation.settings import BackupSettings

STAMP = "%Y%m%dT%H%M%SZ"
_STAMP = re.compile(r"^\d{8}T\d{6}Z$")
PARTIAL = ".partial-"
MANIFEST = "manifest.json"
#: HMAC-SHA256 of the manifest's bytes under the credentials' signing_key (hex), next to it.
SIGNATURE = "manifest.json.hmac"


SD_IMAGE = "sdcard.img.gz"
#: The config files that hold secrets, as one tar encrypted with age to the inventory's recipients (absent without).
SECRETS = "configs/secrets.tar.gz.age"
AGE_HEADER = b"age-encryption.org/v1\n"
#: Config files that hold secrets whatever their mode (a wrong mode must not leak them to the NAS): fnmatch patterns
#: relative to each config folder. Every other file other users may not read (or that sits in a folder they may
#: not enter) is a secret too: what the Pi keeps from its own users, it keeps from the NAS.
SECRET_FILES: dict[str, tuple[str, ...]] = {
    "fieldstation": (
        "backup.credentials",  # the NAS password and the manifests' signing key
        "influx-setup.toml",  # InfluxDB's admin, agent, Grafana and client passwords
        "agent.toml",  # the sinks' passwords and tokens, the upload tokens
        "grafana-orgs.toml",  # the client logins' passwords
        "shutdown-keys/*",  # the NUT remote-shutdown SSH private keys
    ),
    "nut": ("upsd.users", "upsmon.conf"),  # the monitor passwords
    "grafana": ("grafana.ini", "provisioning/datasources/*", "tls/*.key"),  # tls/: HTTPS (role grafana)
}


def sign(key: str, body: bytes) -> str:
    """HMAC-SHA256 under the key in backup.credentials: a secret file, so never on the share itself."""
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def hostname() -> str:
    return socket.gethostname().split(".")[0]


def influx_target(settings: BackupSettings) -> InfluxTarget:
    """The URL and admin login from influx-setup.toml when it exists (the vault's), else influx_url unauthenticated."""
    if settings.influx_setup.exists():
        from fieldstation.influx_setup import load_setup

        cfg = load_setup(settings.influx_setup)
        return InfluxTarget(cfg.url, (cfg.admin.username, cfg.admin.password.get_secret_value()), settings.influx_rpc)
    return InfluxTarget(settings.influx_url, None, settings.influx_rpc)


def open_share(settings: BackupSettings, say: Callable[[str], None] | None = None) -> Share:
    share = Share(
        settings.share,
        read_credentials(settings.credentials),
        port=settings.port,
        timeout=settings.timeout,
        encrypt=settings.smb_encrypt,
    ).connect()
    if say is not None:
        say(f"share: {share.url}: {share.describe()}")
    return share


class Progress:
    """One line every few seconds (journald-friendly) and one at the end: ``label 12.3/45.6 MB (27 %)``."""

    def __init__(self, label: str, total: int, out: Callable[[str], None], every: float = 5.0) -> None:
        self.label, self.total, self.out, self.every = label, total, out, every
        self.done = 0
        self._next = time.monotonic() + every

    def __call__(self, n: int) -> None:
        self.done += n
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self.show()

    def show(self) -> None:
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        total = f"/{self.total / 1e6:.1f}" if self.total else ""
        self.out(f"{self.label}: {self.done / 1e6:.1f}{total} MB{pct}")


def iso(ns_or_dt: int | dt.datetime | None) -> str | None:
    if ns_or_dt is None:
        return None
    d = ns_or_dt if isinstance(ns_or_dt, dt.datetime) else dt.datetime.fromtimestamp(ns_or_dt / 1e9, dt.UTC)
    return d.isoformat().replace("+00:00", "Z")


# -- what is on the share ---------------------------------------------------------------------------------------


def complete_backups(share: Share, host: str) -> list[str]:
    """Names of the complete backups of ``host``, oldest first."""
    return [e.name for e in share.list(host) if e.is_dir and _STAMP.match(e.name)]


def to_delete(names: list[str], now: dt.datetime, keep_last: int, keep_days: int) -> list[str]:
    """The backups rotation removes: neither among the newest ``keep_last`` nor younger than ``keep_days``."""
    newest = sorted(names)
    keep = set(newest[-keep_last:]) if keep_last else set()
    if keep_days:
        limit = now - dt.timedelta(days=keep_days)
        keep |= {n for n in newest if dt.datetime.strptime(n, STAMP).replace(tzinfo=dt.UTC) >= limit}
    if newest:
        keep.add(newest[-1])  # never the latest, whatever the settings
    return [n for n in newest if n not in keep]


def rotate(
    share: Share, host: str, settings: BackupSettings, now: dt.datetime, say: Callable[[str], None]
) -> list[str]:
    gone = to_delete(complete_backups(share, host), now, settings.keep_last, settings.keep_days)
    for name in gone:
        share.rmtree(f"{host}/{name}")
        say(f"rotation: deleted {host}/{name}")
    return gone


# -- staging ----------------------------------------------------------------------------------------------------


def grafana_copy(src: Path, dest: Path) -> None:
    """A consistent copy through SQLite's online backup API (a file copy of a live database can be torn)."""
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{src}: Grafana database backup failed: {exc}") from None


def is_secret(name: str, root: Path, path: Path) -> bool:
    """Whether ``path`` (a file under the config folder ``root``) holds a secret: see :data:`SECRET_FILES`."""
    rel = path.relative_to(root).as_posix()
    if any(fnmatch.fnmatchcase(rel, pattern) for pattern in SECRET_FILES.get(name, ())):
        return True
    if path.is_symlink():
        return False  # the link itself, not what it names, goes into the archive
    if not path.stat().st_mode & stat.S_IROTH:
        return True
    return any(not (root / d).stat().st_mode & stat.S_IXOTH for d in Path(rel).parents if d != Path("."))


def split_configs(name: str, root: Path) -> tuple[list[str], list[str]]:
    """The files of a config folder as (clear, secret) paths relative to it, sorted."""
    clear: list[str] = []
    secret: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        (secret if is_secret(name, root, path) else clear).append(path.relative_to(root).as_posix())
    return clear, secret


def config_archive(src: Path, dest: Path, exclude: set[str]) -> None:
    """The folder without its secret files (their folders stay, so modes and owners come back)."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name.removeprefix("./") in exclude else info

    try:
        with tarfile.open(dest, "w:gz") as tar:
            tar.add(src, arcname=".", filter=keep)
    except OSError as exc:
        raise BackupError(f"{src}: cannot archive: {exc}") from None


def age_binary() -> str:
    found = shutil.which("age")
    if found is None:
        raise BackupError("age: not installed (apt-get install age); needed for the secrets of age_recipients")
    return found


def secrets_archive(secrets: dict[str, tuple[Path, list[str]]], recipients: list[str], dest: Path) -> None:
    """One tar of every secret file (``<config name>/<path>``), gzipped and piped straight into ``age``: the secrets
    are never written in clear, not even to the staging folder."""
    args = [age_binary(), "--encrypt", "--output", str(dest)]
    for r in recipients:
        args += ["--recipient", r]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            with proc.stdin, tarfile.open(fileobj=proc.stdin, mode="w|gz") as tar:
                for name, (root, files) in sorted(secrets.items()):
                    for rel in files:
                        tar.add(root / rel, arcname=f"{name}/{rel}", recursive=False)
        except (OSError, tarfile.TarError) as exc:
            proc.kill()
            raise BackupError(f"{dest.name}: cannot encrypt the secrets: {exc}") from None
        err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise BackupError(f"age: cannot encrypt the secrets: {err.splitlines()[-1] if err else proc.returncode}")


class GzipStream:
    """A readable gzip of ``src``, made chunk by chunk while it is uploaded (the card is never staged)."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.z = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip container
        self.sha = hashlib.sha256()
        self.size = 0
        self._done = False

    def read(self, _n: int = -1) -> bytes:
        out = b""
        while not out and not self._done:
            chunk = self.src.read(1 << 20)
            out = self.z.compress(chunk) if chunk else self.z.flush()
            self._done = not chunk
        self.sha.update(out)
        self.size += len(out)
        return out


def device_size(path: Path) -> int:
    with path.open("rb") as f:
        return f.seek(0, 2)


@dataclass
class Result:
    name: str
    bytes: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _workdir(root: Path, name: str) -> Iterator[Path]:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise BackupError(f"{root}: cannot create the staging folder: {exc.strerror or exc}") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stage(settings: BackupSettings, target: InfluxTarget, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the backup's files under ``work``; returns the manifest without its file list."""
    now = dt.datetime.now(dt.UTC)
    until = time.time_ns()
    client = target.client
    dbs = influx.databases(client)
    say(f"InfluxDB: counting points in {', '.join(dbs) or 'no database'}")
    census = {db: influx.census(client, db, until) for db in dbs}
    say(f"InfluxDB: portable backup from {target.rpc}")
    influx.backup(target, work / "influxdb")
    skipped = []
    if settings.grafana_db.exists():
        say(f"Grafana: {settings.grafana_db}")
        grafana_copy(settings.grafana_db, work / "grafana.db")
    else:
        skipped.append(str(settings.grafana_db))
    (work / "configs").mkdir()
    secrets: dict[str, tuple[Path, list[str]]] = {}
    for name, path in settings.configs.items():
        if path.is_dir():
            try:
                _, secret = split_configs(name, path)
            except OSError as exc:
                raise BackupError(f"{path}: cannot read: {exc.strerror or exc}") from None
            say(f"configs: {path} ({len(secret)} files with secrets kept apart)")
            config_archive(path, work / "configs" / f"{name}.tar.gz", set(secret))
            if secret:
                secrets[name] = (path, secret)
        else:
            skipped.append(str(path))
    if secrets and settings.age_recipients:
        say(f"secrets: encrypted with age to {len(settings.age_recipients)} recipient(s)")
        secrets_archive(secrets, settings.age_recipients, work / SECRETS)
    elif secrets:
        say("secrets: not backed up (no age_recipients): a restore rewrites them from the vault (the playbook)")
    lasts = [m["last"] for db in census.values() for rp in db.values() for m in rp.values() if m["last"]]
    oldest = [t for db in dbs for rp in influx.first_times(client, db).values() for t in rp.values()]
    return {
        "format": 1,
        "hostname": hostname(),
        "created": iso(now),
        "software": {
            "fieldstation": __version__,
            "influxdb": influx.influxd_version(),
            "python": sys.version.split()[0],
        },
        "covers": {
            "from": iso(min(oldest)) if oldest else None,
            "to": iso(until),
            "until_ns": until,
            "last_point": iso(max(lasts)) if lasts else None,
        },
        "databases": census,
        "skipped": skipped,
        # Which files hold secrets (their names, never their content), and whether and to whom they are encrypted.
        "secrets": {
            "files": {name: files for name, (_, files) in sorted(secrets.items())},
            "archive": SECRETS if secrets and settings.age_recipients else None,
            "age_recipients": list(settings.age_recipients) if secrets else [],
        },
    }


def run_backup(settings: BackupSettings, *, sd_image: Path | None = None, say: Callable[[str], None] = print) -> Result:
    host = hostname()
    target = influx_target(settings)
    with open_share(settings, say) as share:
        share.makedirs(host)
        for stale in [e.name for e in share.list(host) if e.name.startswith(PARTIAL)]:
            share.rmtree(f"{host}/{stale}")  # an earlier run that died: never complete, never kept
            say(f"removed the unfinished {host}/{stale}")
        with _workdir(settings.work_dir, "backup") as work:
            manifest = stage(settings, target, work, say)
            name = dt.datetime.fromisoformat(manifest["created"]).strftime(STAMP)
            files = sorted(p for p in work.rglob("*") if p.is_file())
            manifest["files"] = {
                p.relative_to(work).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files
            }
            result = Result(name, files=manifest["files"])
            partial = f"{host}/{PARTIAL}{name}"
            try:
                result.bytes = _upload(
                    share, work, partial, manifest=manifest, settings=settings, sd_image=sd_image, say=say
                )
            except (BackupError, ShareError):
                with contextlib.suppress(Exception):  # free the space; the partial name already says "incomplete"
                    share.rmtree(partial)
                raise
            share.rename(partial, f"{host}/{name}")
            say(f"backup complete: {settings.share.rstrip('/')}/{host}/{name} ({result.bytes / 1e6:.1f} MB)")
        result.deleted = rotate(share, host, settings, dt.datetime.now(dt.UTC), say)
    return result


def _upload(
    share: Share,
    work: Path,
    partial: str,
    *,
    manifest: dict[str, Any],
    settings: BackupSettings,
    sd_image: Path | None,
    say: Callable[[str], None],
) -> int:
    """Every staged file, the card's image if asked, and the manifest last; returns the bytes sent."""
    files = sorted(p for p in work.rglob("*") if p.is_file())
    total = sum(int(f["bytes"]) for f in manifest["files"].values())
    if sd_image is not None:
        need = device_size(sd_image)
        free = share.free_bytes()
        if free < total + need:
            raise BackupError(
                f"{settings.share}: {free / 1e9:.2f} GB free, the SD-card image may need up to "
                f"{(total + need) / 1e9:.2f} GB (the card's size); nothing written"
            )
    for folder in sorted({p.parent.relative_to(work).as_posix() for p in files}):
        share.makedirs(partial if folder == "." else f"{partial}/{folder}")
    progress = Progress("upload", total, say)
    for p in files:
        with p.open("rb") as src:
            share.put(src, f"{partial}/{p.relative_to(work).as_posix()}", progress)
    progress.show()
    sent = total
    if sd_image is not None:
        card = Progress(f"SD card {sd_image}", device_size(sd_image), say)
        with sd_image.open("rb") as dev:
            stream = GzipStream(_Counting(dev, card))
            share.put(stream, f"{partial}/{SD_IMAGE}")  # type: ignore[arg-type]  # read() is all put needs
        card.show()
        manifest["files"][SD_IMAGE] = {"sha256": stream.sha.hexdigest(), "bytes": stream.size}
        sent += stream.size
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    key = share.credentials.signing_key
    if key is not None:
        share.put(io.BytesIO(sign(key, body).encode()), f"{partial}/{SIGNATURE}")
    share.put(io.BytesIO(body), f"{partial}/{MANIFEST}")
    return sent + len(body)


class _Counting:
    def __init__(self, src: Any, progress: Progress) -> None:
        self.src, self.progress = src, progress

    def read(self, n: int) -> bytes:
        data: bytes = self.src.read(n)
        self.progress(len(data))
        return data
