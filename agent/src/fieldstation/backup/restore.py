"""``fieldstation restore [BACKUP]``: fetch a backup, check every checksum, then put InfluxDB, Grafana and the
configs back.

InfluxDB 1.x cannot rename a database, so "restore into a new name, then swap" is: restore each database as
``<db>_restore`` (proving the files restore), keep a local portable backup of the live database, drop the live
one, restore again under its own name, drop ``<db>_restore``. Retention policies come back with the data; users,
grants and continuous queries are re-applied from influx-setup.toml when it exists (as ``fieldstation influx
setup`` does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldstation.backup import influx
from fieldstation.backup.backup import (
    MANIFEST,
    SD_IMAGE,
    SECRETS,
    SIGNATURE,
    STAMP,
    Progress,
    complete_backups,
    hostname,
    influx_target,
    open_share,
    sign,
)
from fieldstation.backup.influx import BackupError, InfluxTarget
from fieldstation.backup.share import Share
from fieldstation.ingest.inbox import sha256_of
from fieldstation.settings import BackupSettings


def resolve(share: Share, host: str, name: str | None) -> str:
    """``None`` or ``latest``: the newest complete backup of ``host``."""
    names = complete_backups(share, host)
    if not names:
        raise BackupError(f"{share.url}/{host}: no complete backup")
    if name in (None, "latest"):
        return names[-1]
    if name not in names:
        raise BackupError(f"{share.url}/{host}/{name}: no such complete backup (have {names[0]} … {names[-1]})")
    return name


def check_signature(share: Share, folder: str, body: bytes, say: Callable[[str], None]) -> None:
    """With a signing key, the manifest (and through its checksums every file) must be the one the backup wrote."""
    key = share.credentials.signing_key
    if key is None:
        say("manifest: not checked for tampering (no signing_key in the credentials)")
        return
    where = f"{share.url}/{folder}/{SIGNATURE}"
    if not share.exists(f"{folder}/{SIGNATURE}"):
        raise BackupError(f"{where}: missing: the backup is unsigned, and a signing key is set; refusing it")
    signature = share.read_bytes(f"{folder}/{SIGNATURE}").decode(errors="replace").strip()
    if not hmac.compare_digest(signature, sign(key, body)):
        raise BackupError(f"{where}: does not match the manifest: changed on the NAS, or signed with another key")
    say("manifest: signature good")


def fetch(
    share: Share, folder: str, dest: Path, say: Callable[[str], None], *, sd_image: bool = False
) -> dict[str, Any]:
    """Download a backup (the SD-card image only if asked) and check every checksum; returns the manifest."""
    body = share.read_bytes(f"{folder}/{MANIFEST}")
    check_signature(share, folder, body, say)
    try:
        manifest: dict[str, Any] = json.loads(body)
        files: dict[str, dict[str, Any]] = manifest["files"]
        made = dt.datetime.fromisoformat(manifest["created"]).strftime(STAMP)
        host = manifest["hostname"]
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"{share.url}/{folder}/{MANIFEST}: not a Fieldstation manifest") from None
    if f"{host}/{made}" != folder:  # a good backup renamed on the NAS to pass for a newer one, or another host's
        raise BackupError(f"{share.url}/{folder}/{MANIFEST}: made as {host}/{made}, not {folder}; refusing it")
    wanted = {rel: f for rel, f in files.items() if sd_image or rel != SD_IMAGE}
    progress = Progress("download", sum(int(f["bytes"]) for f in wanted.values()), say)
    bad = []
    for rel, meta in sorted(wanted.items()):
        if rel == SD_IMAGE:  # checked as it streams past: the card's image is never stored here
            digest = _Hashing()
            share.get(f"{folder}/{rel}", digest, progress)  # type: ignore[arg-type]  # write() is all get needs
            if digest.sha.hexdigest() != meta["sha256"]:
                bad.append(rel)
            continue
        local = dest / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("wb") as out:
            share.get(f"{folder}/{rel}", out, progress)
        if sha256_of(local) != meta["sha256"]:
            bad.append(rel)
    progress.show()
    if bad:
        raise BackupError(f"{share.url}/{folder}: checksum mismatch in {', '.join(bad)}")
    say(f"checksums: {len(wanted)} files match the manifest")
    return manifest


class _Hashing:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return len(data)


def _systemctl(*args: str) -> bool:
    if shutil.which("systemctl") is None:
        return False
    return subprocess.run(["systemctl", *args], capture_output=True, check=False).returncode == 0


def restore_influx(
    target: InfluxTarget, src: Path, manifest: dict[str, Any], safety: Path, say: Callable[[str], None]
) -> None:
    client = target.client
    for db in sorted(manifest["databases"]):
        staging = f"{db}_restore"
        live = influx.databases(client)
        if staging in live:
            influx.drop(client, staging)
        influx.restore(target, src, db, staging)
        say(f"InfluxDB: {db} restored as {staging}")
        if db in live:
            influx.backup_db(target, db, safety / db)
            say(f"InfluxDB: the live {db} saved first to {safety / db}")
            influx.drop(client, db)
        influx.restore(target, src, db, db)
        influx.drop(client, staging)
        say(f"InfluxDB: {db} swapped in")


def reapply_setup(settings: BackupSettings, say: Callable[[str], None]) -> None:
    if settings.influx_setup.exists():
        from fieldstation.influx_setup import load_setup, setup

        setup(load_setup(settings.influx_setup), say=lambda line: say(f"influx setup: {line}"))


def restore_grafana(src: Path, dest: Path, say: Callable[[str], None]) -> None:
    if not src.exists():
        return
    running = _systemctl("is-active", "--quiet", "grafana-server.service")
    if running:
        _systemctl("stop", "grafana-server.service")
    tmp = dest.with_name(dest.name + ".restoring")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(src)) as source, contextlib.closing(sqlite3.connect(tmp)) as target:
            source.backup(target)
        if dest.exists():
            st = dest.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
            tmp.chmod(st.st_mode & 0o777)
        tmp.replace(dest)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"{dest}: cannot restore Grafana's database: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        if running:
            _systemctl("start", "grafana-server.service")
    say(f"Grafana: {dest}")


def restore_configs(src: Path, configs: dict[str, Path], say: Callable[[str], None]) -> None:
    for name, dest in configs.items():
        archive = src / f"{name}.tar.gz"
        if not archive.exists():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                # "tar": owners and modes kept (root restores them), but no member may land outside dest, link out
                # of it, or carry setuid bits: the archive comes from a NAS that others may write to.
                tar.extractall(dest, filter="tar")
        except (OSError, tarfile.TarError) as exc:
            raise BackupError(f"{archive}: cannot restore into {dest}: {exc}") from None
        say(f"configs: {dest}")


def decrypt_secrets(archive: Path, identity: Path) -> bytes:
    """The secrets' tar.gz, decrypted in memory (a few KB) and checked readable, so a wrong identity stops the restore
    before anything is changed."""
    age = shutil.which("age")
    if age is None:
        raise BackupError("age: not installed (apt-get install age); needed to decrypt the secrets")
    try:
        if identity.stat().st_mode & 0o077:
            raise BackupError(f"{identity}: age identity readable by others; chmod 0600 it")
    except OSError as exc:
        raise BackupError(f"{identity}: cannot read the age identity: {exc.strerror or exc}") from None
    proc = subprocess.run(
        [age, "--decrypt", "--identity", str(identity), str(archive)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = next((line.removeprefix("age: error: ") for line in err if "error" in line), "failed")
        raise BackupError(f"{identity}: cannot decrypt {SECRETS}: {reason}")
    try:
        with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:gz") as tar:
            tar.getmembers()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{SECRETS}: decrypted, but not a tar archive: {exc}") from None
    return proc.stdout


def restore_secrets(data: bytes, configs: dict[str, Path], say: Callable[[str], None]) -> None:
    """Each ``<config name>/<path>`` member into its config folder, with the same checks as the clear archives."""
    done: dict[str, int] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name, _, rel = member.name.partition("/")
                if name not in configs or not rel:
                    raise BackupError(f"{SECRETS}: {member.name}: not in a restored config folder")
                configs[name].mkdir(parents=True, exist_ok=True)
                member.name = rel
                tar.extract(member, configs[name], filter="tar")
                done[name] = done.get(name, 0) + 1
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{SECRETS}: cannot restore: {exc}") from None
    for name, n in sorted(done.items()):
        say(f"secrets: {n} files into {configs[name]}")


def explain_secrets(manifest: dict[str, Any], configs: dict[str, Path], host: str, say: Callable[[str], None]) -> None:
    """Without the identity: which secret files this restore did not bring back, and where they come from."""
    files: dict[str, list[str]] = (manifest.get("secrets") or {}).get("files") or {}
    missing = [f"{configs[n]}/{rel}" for n, rels in sorted(files.items()) if n in configs for rel in rels
               if not (configs[n] / rel).exists()]
    why = "kept in the backup encrypted: add --age-identity FILE" if (manifest.get("secrets") or {}).get(
        "archive") else "not in the backup (made without age recipients)"
    say(f"secrets: {sum(map(len, files.values()))} files not restored: {why}")
    if missing:
        say(f"secrets: missing here, rewrite them from the vault (ansible-playbook site.yml --limit {host}): "
            + ", ".join(missing))


def run_restore(
    settings: BackupSettings,
    name: str | None,
    *,
    host: str | None = None,
    age_identity: Path | None = None,
    say: Callable[[str], None] = print,
) -> str:
    host = host or hostname()
    target = influx_target(settings)
    work = settings.work_dir / "restore"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    try:
        with open_share(settings, say) as share:
            chosen = resolve(share, host, name)
            say(f"restoring {settings.share.rstrip('/')}/{host}/{chosen}")
            manifest = fetch(share, f"{host}/{chosen}", work, say)
        secrets = None
        if age_identity is not None:
            if not (work / SECRETS).exists():
                raise BackupError(f"{host}/{chosen}: holds no encrypted secrets (made without age recipients)")
            secrets = decrypt_secrets(work / SECRETS, age_identity)
        stamp = dt.datetime.now(dt.UTC).strftime(STAMP)
        restore_influx(target, work / "influxdb", manifest, settings.work_dir / f"pre-restore-{stamp}", say)
        restore_grafana(work / "grafana.db", settings.grafana_db, say)
        restore_configs(work / "configs", settings.configs, say)
        if secrets is not None:
            restore_secrets(secrets, settings.configs, say)
        else:
            explain_secrets(manifest, settings.configs, host, say)
        # After the configs: InfluxDB's users get the passwords of the influx-setup.toml now in place.
        reapply_setup(settings, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"restore of {host}/{chosen} complete")
    return chosen
