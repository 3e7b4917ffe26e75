"""Backups leak no secret to the NAS: a /etc/fieldstation holding every secret the roles write (the vault.example
names, realistic values, the roles' modes; InfluxDB's users with those passwords), backed up to a real smbd, then every
file on the share (gunzipped, tar members extracted, recursively) searched for each value. With an age recipient the secrets come back through a
restore given the identity; without one the restore names what to rewrite from the vault. A backup written to the
share by someone without the signing key (it is never on the share) is refused."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.backup.backup import SECRET_FILES, SECRETS, STAMP, sign
from harness.samba import requires_samba

from .conftest import Station

pytestmark = [requires_samba, pytest.mark.skipif(shutil.which("age") is None, reason="age not installed (apt)")]


def _pw() -> str:
    return secrets.token_urlsafe(18)


def _ssh_private_key(tmp: Path) -> str:
    key = tmp / "id_nas"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nut@station", "-f", str(key)], check=True)
    text = key.read_text()
    key.unlink()
    return text


def vault(tmp: Path, nas_password: str) -> dict[str, str]:
    """Every vault_* of group_vars/fieldstation/vault.example.yml, with a value such as a user would set."""
    return {
        "vault_influxdb_admin_password": _pw(),
        "vault_influxdb_agent_password": _pw(),
        "vault_influxdb_grafana_password": _pw(),
        "vault_nut_monitor_password": _pw(),
        "vault_grafana_admin_password": _pw(),
        "vault_grafana_smtp_password": _pw(),
        "vault_backup_password": nas_password,  # the test's smbd has to accept it
        "vault_backup_signing_key": secrets.token_hex(24),
        "vault_upload_siemens_token": secrets.token_hex(20),
        "vault_influxdb_acme_password": _pw(),
        "vault_grafana_alice_password": _pw(),
        "vault_nut_web1_password": _pw(),
        "vault_nas_shutdown_key": _ssh_private_key(tmp),
        "vault_central_token": secrets.token_hex(32),
    }


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def plant_secrets(station: Station) -> dict[str, str]:
    """The files the roles write under the configs, each holding its secrets, at the mode the role gives it."""
    etc = station.root / "etc/fieldstation"
    nut = station.root / "etc/nut"
    v = vault(station.root, station.samba.password)
    _write(etc / "backup.credentials", f"username={station.samba.user}\npassword={v['vault_backup_password']}\n"
           f"signing_key={v['vault_backup_signing_key']}\n", 0o600)
    _write(etc / "influx-setup.toml", f'url = "http://127.0.0.1:8086"\ndatabase = "fieldstation"\n'
           f'[admin]\nusername = "admin"\npassword = "{v["vault_influxdb_admin_password"]}"\n'
           f'[[users]]\nusername = "agent"\npassword = "{v["vault_influxdb_agent_password"]}"\n'
           f'[[users]]\nusername = "grafana"\npassword = "{v["vault_influxdb_grafana_password"]}"\n'
           f'[[users]]\nusername = "acme"\npassword = "{v["vault_influxdb_acme_password"]}"\n', 0o600)
    # 0644 by mistake: SECRET_FILES still keeps it off the share.
    _write(etc / "agent.toml", f'[[sinks]]\nname = "local"\nusername = "agent"\n'
           f'password = "{v["vault_influxdb_agent_password"]}"\n'
           f'[[sinks]]\nname = "central"\nurl = "https://central.example"\ntoken = "{v["vault_central_token"]}"\n'
           f'[ingest]\n[[ingest.sources]]\nname = "siemens"\ntoken = "{v["vault_upload_siemens_token"]}"\n', 0o644)
    _write(etc / "grafana-orgs.toml", f'[[logins]]\nlogin = "alice"\npassword = "{v["vault_grafana_alice_password"]}"\n'
           f'[admin]\npassword = "{v["vault_grafana_admin_password"]}"\nsmtp_password = '
           f'"{v["vault_grafana_smtp_password"]}"\n', 0o600)
    (etc / "shutdown-keys").mkdir(mode=0o700)
    _write(etc / "shutdown-keys/nas.lab", v["vault_nas_shutdown_key"], 0o600)
    # Not in SECRET_FILES: kept off the share by its mode alone (what the Pi keeps from its users).
    v["tls_key"] = "-----BEGIN PRIVATE KEY-----\n" + secrets.token_hex(64) + "\n-----END PRIVATE KEY-----\n"
    _write(etc / "tls/grafana.key", v["tls_key"], 0o600)
    _write(etc / "config.py", "# the station's sensors\nSENSORS = []\n", 0o640)  # the agent role's mode: kept apart
    _write(etc / "backup.toml", "# no secrets here; marker: clear-config-marker\n", 0o644)
    _write(nut / "upsd.users", f"[upsmon]\n  password = {v['vault_nut_monitor_password']}\n  upsmon primary\n"
           f"[web1]\n  password = {v['vault_nut_web1_password']}\n  upsmon secondary\n", 0o640)
    _write(nut / "upsmon.conf", f"MONITOR ups@localhost 1 upsmon {v['vault_nut_monitor_password']} primary\n", 0o640)
    # InfluxDB's users as influx-setup.toml makes them: its backup's meta must carry hashes only.
    for user in ("agent", "grafana", "acme"):
        station.influxd.query(f"CREATE USER {user} WITH PASSWORD '{v[f'vault_influxdb_{user}_password']}'")
    station.write_settings(credentials=str(etc / "backup.credentials"))
    return v


def blobs(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    """``data`` and everything inside it: gunzipped, and each member of a tar, recursively."""
    yield where, data
    if data[:2] == b"\x1f\x8b":
        yield from blobs(gzip.decompress(data), f"{where}|gunzip")
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    yield from blobs(f.read(), f"{where}:{m.name}")
    except tarfile.TarError:
        pass


def everything_on(share: Path) -> list[tuple[str, bytes]]:
    return [b for p in sorted(share.rglob("*")) if p.is_file() for b in blobs(p.read_bytes(), str(p))]


def leaks(share: Path, values: dict[str, str]) -> list[str]:
    found = everything_on(share)
    out = []
    for name, value in values.items():
        needles = {value.encode()} | {line.encode() for line in value.splitlines() if len(line) >= 16}
        out += [f"{name} in {where}" for where, data in found for n in needles if n in data]
    return out


def keypair(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def secret_files(station: Station) -> dict[str, tuple[bytes, int]]:
    out = {}
    for folder in ("etc/fieldstation", "etc/nut"):
        for p in sorted((station.root / folder).rglob("*")):
            if p.is_file() and (p.stat().st_mode & 0o004 == 0 or p.name == "agent.toml"):
                out[str(p.relative_to(station.root))] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


def test_no_secret_reaches_the_share_in_clear(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    values = plant_secrets(station)
    assert station.cli("backup", "--no-record") == 0
    found = everything_on(station.samba.dir())
    assert any(b"clear-config-marker" in data for _, data in found)  # the search does look inside the archives
    assert any("/influxdb/" in where and b"acme" in data and b"$2a$" in data for where, data in found)  # users: hashed
    assert leaks(station.samba.dir(), values) == []
    out = capsys.readouterr().out
    assert "encrypted" in out and "NOT encrypted" not in out  # SMB3 encryption, asked for and granted
    assert "secrets: not backed up (no age_recipients)" in out
    folder = next(next(station.samba.dir().iterdir()).iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["secrets"]["archive"] is None and not (folder / SECRETS).exists()
    assert set(manifest["secrets"]["files"]["fieldstation"]) == {
        "backup.credentials", "influx-setup.toml", "agent.toml", "grafana-orgs.toml", "shutdown-keys/nas.lab",
        "tls/grafana.key", "config.py"}
    assert set(manifest["secrets"]["files"]["nut"]) == {"upsd.users", "upsmon.conf"}
    with tarfile.open(folder / "configs/fieldstation.tar.gz") as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers()}
    assert {"backup.toml", "shutdown-keys", "tls"} <= names and not {"agent.toml", "config.py"} & names

    # The drill still passes; a restore without the secrets names what to rewrite from the vault.
    assert station.cli("backup", "verify", "--no-record") == 0
    for rel in ("etc/fieldstation/influx-setup.toml", "etc/fieldstation/backup.toml", "etc/nut/upsd.users"):
        (station.root / rel).unlink()
    capsys.readouterr()
    assert station.cli("restore") == 0
    out = capsys.readouterr().out
    assert "secrets: 9 files not restored: not in the backup (made without age recipients)" in out
    assert "rewrite them from the vault (ansible-playbook site.yml --limit" in out
    missing = next(line for line in out.splitlines() if "missing here" in line)
    assert "influx-setup.toml" in missing and "upsd.users" in missing and "backup.credentials" not in missing
    assert (station.root / "etc/fieldstation/backup.toml").read_text().startswith("# no secrets here")
    keypair(station.root / "id.key")
    assert station.cli("restore", "--age-identity", str(station.root / "id.key")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no encrypted secrets (made without age recipients)" in err


def test_secrets_round_trip_encrypted_to_the_users_key(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    values = plant_secrets(station)
    identity = station.root / "user-keeps-this.key"  # in real life on the user's laptop, never on the Pi
    recipient = keypair(identity)
    station.write_settings(credentials=str(station.root / "etc/fieldstation/backup.credentials"),
                           age_recipients=[recipient])
    before = secret_files(station)
    assert len(before) == 9
    assert station.cli("backup", "--no-record") == 0
    assert "secrets: encrypted with age to 1 recipient(s)" in capsys.readouterr().out
    assert leaks(station.samba.dir(), values) == []
    folder = next(next(station.samba.dir().iterdir()).iterdir())
    assert (folder / SECRETS).read_bytes().startswith(b"age-encryption.org/v1\n")
    assert json.loads((folder / "manifest.json").read_text())["secrets"]["age_recipients"] == [recipient]
    assert station.cli("backup", "verify", "--no-record") == 0  # the weekly drill, on the Pi without the identity
    assert station.cli("backup", "verify", "--no-record", "--age-identity", str(identity)) == 0

    # A new card: the secret files are gone (the credentials stay: the playbook writes them before a restore).
    for rel in before:
        if not rel.endswith("backup.credentials"):
            (station.root / rel).unlink()
    other = station.root / "other.key"
    keypair(other)
    capsys.readouterr()
    assert station.cli("restore", "--age-identity", str(other)) == 1  # refused before anything is changed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{other}: cannot decrypt {SECRETS}: no identity matched any of the recipients" in err
    assert not (station.root / "etc/fieldstation/influx-setup.toml").exists()
    assert station.cli("restore", "--age-identity", str(identity)) == 0
    out = capsys.readouterr().out
    assert f"secrets: 7 files into {station.root / 'etc/fieldstation'}" in out
    assert f"secrets: 2 files into {station.root / 'etc/nut'}" in out
    assert secret_files(station) == before  # contents and modes


def test_a_private_key_as_recipient_is_refused(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    identity = station.root / "id.key"
    keypair(identity)
    private = next(line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    station.write_settings(age_recipients=[private])
    assert station.cli("backup", "--no-record") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "that is an age identity (a private key): give its public key" in err
    assert private not in err
    station.write_settings(age_recipients=["age1notakey"])
    assert station.cli("backup", "--no-record") == 1
    assert "not an age recipient" in capsys.readouterr().err


def test_a_backup_forged_on_the_share_is_refused(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker reads everything on the share (no signing key there) and writes a newer backup: an evil
    config.py, secrets encrypted to the public recipient from the manifest, the manifest's checksums fixed, a
    signature under a guess. Neither restore nor the drill takes it; nor a good old backup renamed as newer."""
    values = plant_secrets(station)
    identity = station.root / "user.key"
    recipient = keypair(identity)
    station.write_settings(credentials=str(station.root / "etc/fieldstation/backup.credentials"),
                           age_recipients=[recipient])
    assert station.cli("backup", "--no-record") == 0
    host_dir = next(station.samba.dir().iterdir())
    good = next(host_dir.iterdir())
    assert leaks(station.samba.dir(), {"signing key": values["vault_backup_signing_key"]}) == []

    stamp = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime(STAMP)
    forged = host_dir / stamp
    shutil.copytree(good, forged)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("./config.py")
        body = b"import os; os.system('id > /tmp/pwned')\n"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    (forged / "configs/fieldstation.tar.gz").write_bytes(evil.getvalue())
    planted = subprocess.run(["age", "-r", recipient], input=gzip.compress(b"x"), capture_output=True, check=True)
    (forged / SECRETS).write_bytes(planted.stdout)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["created"] = dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
    for rel in ("configs/fieldstation.tar.gz", SECRETS):
        data = (forged / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (forged / "manifest.json").write_bytes(body)
    (forged / "manifest.json.hmac").write_text(sign(values["vault_backup_password"], body))  # the best guess
    capsys.readouterr()
    assert station.cli("restore", "--age-identity", str(identity)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{stamp}/manifest.json.hmac: does not match the manifest" in err
    assert station.cli("backup", "verify", "--no-record") == 1
    assert "does not match the manifest" in capsys.readouterr().err
    assert "os.system" not in (station.root / "etc/fieldstation/config.py").read_text()

    # A good, correctly signed backup renamed to pass for the newest.
    shutil.rmtree(forged)
    good.rename(host_dir / stamp)
    assert station.cli("restore") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"made as {host_dir.name}/{good.name}, not {host_dir.name}/{stamp}" in err


def test_secret_files_table_names_the_roles_secret_files() -> None:
    """Each role template that writes a secret under a backed-up config folder is in SECRET_FILES (whatever its
    mode), so a mode changed by mistake cannot send it to the NAS."""
    roles = Path(__file__).parents[3] / "ansible/roles"
    written = {
        "fieldstation": {"backup.credentials": "backup", "influx-setup.toml": "influxdb", "agent.toml": "agent",
                         "grafana-orgs.toml": "grafana"},
        "nut": {"upsd.users": "nut", "upsmon.conf": "nut"},
    }
    for folder, files in written.items():
        for name, role in files.items():
            assert (roles / role / "templates/etc" / folder / f"{name}.j2").exists(), (role, name)
            assert name in SECRET_FILES[folder]
    assert "shutdown-keys/*" in SECRET_FILES["fieldstation"]
    nut = (roles / "nut/vars/main.yml").read_text() + (roles / "nut/defaults/main.yml").read_text()
    assert "nut_shutdown_keys_dir: /etc/fieldstation/shutdown-keys\n" in nut
