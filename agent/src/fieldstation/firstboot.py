"""First boot of a flashed Fieldstation image: `fieldstation firstboot` and `fieldstation growroot`.

The image bakes no secrets and no site values (image/README.md). On the first boot, before the network and the
services start (systemd/fieldstation-firstboot.service):

- every ``FIRSTBOOT_SECRET_<NAME>`` placeholder the image build left in /etc is replaced by a random value, the same
  value for the same name in every file (InfluxDB's users in influx-setup.toml and the agent's agent.toml, ...);
- missing SSH host keys are generated (the build removed them);
- the self-signed certificates that files in /etc/fieldstation/certificates.d ask for (Grafana's, for HTTPS) are
  made for the card's hostname, so that no image carries a private key (`fieldstation certificates` does the same on
  a station set up by Ansible);
- per-device settings are read from the boot partition, which any computer can edit: ``fieldstation.txt``
  (KEY=value lines, a commented template ships there) and, as Raspberry Pi Imager writes them on trixie, cloud-init's
  ``user-data`` (hostname, users and their SSH keys) and ``network-config`` (Wi-Fi).

A setting that is wrong is reported in one line and skipped; the others still apply.

`fieldstation growroot` (systemd/fieldstation-growroot.service) extends the root partition to the end of the card
and grows the ext4 filesystem into it, online; outside a real block device (a container) it does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BOOT_DIR = Path("/boot/firmware")
SETTINGS_FILE = "fieldstation.txt"
USER_DATA = "user-data"
NETWORK_CONFIG = "network-config"
STATE_DIR = Path("var/lib/fieldstation-firstboot")  # relative to the root: stamps and the secrets in flight
SECRET_MARK = re.compile(rb"FIRSTBOOT_SECRET_([A-Z0-9_]+)")
SECRET_DIRS = ("etc",)  # where the image build leaves placeholders
CERTIFICATES_DIR = Path("etc/fieldstation/certificates.d")  # relative to the root: one JSON request per certificate
DEFAULT_USER = "admin"

HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+@openssh\.com) [A-Za-z0-9+/=]+( .*)?$"
)
COUNTRY = re.compile(r"^[A-Z]{2}$")
# fieldstation.txt keys: one name each, as documented in the template (image/fieldstation.txt).
KEYS = {"hostname", "ssh_authorized_key", "wifi_ssid", "wifi_password", "wifi_country"}


class FirstbootError(Exception):
    """One line naming the input and what is wrong with it."""


@dataclass
class Wifi:
    ssid: str
    password: str  # empty: an open network
    country: str


@dataclass
class User:
    name: str
    ssh_keys: list[str] = field(default_factory=list)
    password_hash: str = ""  # crypt(3) hash for console logins; SSH stays keys-only


@dataclass
class Settings:
    hostname: str = ""
    users: list[User] = field(default_factory=list)  # the first one is the administrator
    wifi: Wifi | None = None
    errors: list[str] = field(default_factory=list)  # one line each, for settings that were skipped


# -- reading the boot partition -----------------------------------------------------------------------------------


def _check_hostname(value: str, where: str) -> str:
    name = value.strip().lower()
    if not HOSTNAME.match(name):
        raise FirstbootError(f"{where}: hostname {value!r} is not a valid host name (letters, digits, '-', 1-63)")
    return name


def _check_key(value: str, where: str) -> str:
    key = value.strip()
    if not SSH_KEY.match(key):
        raise FirstbootError(f"{where}: {key[:40]!r} is not an SSH public key (ssh-ed25519 AAAA... comment)")
    return key


def _check_wifi(ssid: str, password: str, country: str, where: str) -> Wifi:
    if not 1 <= len(ssid.encode()) <= 32:
        raise FirstbootError(f"{where}: wifi_ssid must be 1 to 32 bytes")
    if password and not 8 <= len(password) <= 63:
        raise FirstbootError(f"{where}: the Wi-Fi password must be 8 to 63 characters (WPA2)")
    if not COUNTRY.match(country.upper()):
        raise FirstbootError(f"{where}: wifi_country {country!r} is not a two-letter country code (e.g. FR)")
    return Wifi(ssid, password, country.upper())


def _settings_line(line: str, where: str) -> tuple[str, str]:
    """(key, value) of one ``key=value`` line, the value unquoted; raises for a bad line or an unknown key."""
    key, sep, value = line.partition("=")
    key = key.strip().lower()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if not sep:
        raise FirstbootError(f"{where}: expected key=value, got {line[:40]!r}")
    if key not in KEYS:
        raise FirstbootError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
    if key == "hostname":
        value = _check_hostname(value, where)
    elif key == "ssh_authorized_key" and value:
        value = _check_key(value, where)
    return key, value


def parse_settings(text: str, source: str = SETTINGS_FILE, admin: str = DEFAULT_USER) -> Settings:
    """fieldstation.txt: ``key=value`` lines, ``#`` comments; ``ssh_authorized_key`` may repeat. A bad line is
    recorded in ``errors`` and skipped."""
    out = Settings()
    values: dict[str, str] = {}
    keys: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key, value = _settings_line(line, f"{source} line {n}")
        except FirstbootError as exc:
            out.errors.append(str(exc))
            continue
        if key == "ssh_authorized_key":
            keys += [value] if value else []
        else:
            values[key] = value
    out.hostname = values.get("hostname", "")
    if keys:
        out.users.append(User(admin, keys))
    if values.get("wifi_ssid"):
        try:
            out.wifi = _check_wifi(
                values["wifi_ssid"], values.get("wifi_password", ""), values.get("wifi_country", ""), source
            )
        except FirstbootError as exc:
            out.errors.append(str(exc))
    elif values.get("wifi_password") or values.get("wifi_country"):
        out.errors.append(f"{source}: wifi_password or wifi_country given without wifi_ssid")
    return out


def _yaml(text: str, source: str) -> dict[str, object]:
    import yaml  # only the cloud-init files need it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise FirstbootError(f"{source}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FirstbootError(f"{source}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _str_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def parse_cloud_init(user_data: str | None, network_config: str | None, admin: str = DEFAULT_USER) -> Settings:
    """The subset of cloud-init that Raspberry Pi Imager writes: ``hostname``, ``users`` (name, ssh_authorized_keys,
    passwd), top-level ``ssh_authorized_keys`` (for the image's administrator) and the first access point of
    ``network-config``'s ``wifis``."""
    out = Settings()
    if user_data is not None:
        try:
            data = _yaml(user_data, USER_DATA)
            if data.get("hostname"):
                out.hostname = _check_hostname(str(data["hostname"]), USER_DATA)
            top_keys = [_check_key(k, USER_DATA) for k in _str_list(data.get("ssh_authorized_keys"))]
            if top_keys:
                out.users.append(User(admin, top_keys))
            users = data.get("users")
            for entry in users if isinstance(users, list) else []:
                if not isinstance(entry, dict):
                    continue  # "default": cloud-init's distribution user, which this image does not have
                name = str(entry.get("name", ""))
                if not USERNAME.match(name):
                    raise FirstbootError(f"{USER_DATA}: user name {name!r} is not a valid login name")
                keys = [_check_key(k, f"{USER_DATA} user {name}") for k in _str_list(entry.get("ssh_authorized_keys"))]
                out.users.append(User(name, keys, str(entry.get("passwd") or "")))
        except FirstbootError as exc:
            out.errors.append(str(exc))
    if network_config is not None:
        try:
            data = _yaml(network_config, NETWORK_CONFIG)
            net = data.get("network", data)
            wifis = net.get("wifis") if isinstance(net, dict) else None
            for name, iface in (wifis if isinstance(wifis, dict) else {}).items():
                if not isinstance(iface, dict) or not iface.get("access-points"):
                    continue  # e.g. "renderer: NetworkManager" sits among the interfaces in Imager's file
                aps = iface["access-points"]
                ssid, ap = next(iter(aps.items()))
                password = str((ap or {}).get("password", ""))
                country = str(iface.get("regulatory-domain", ""))
                out.wifi = _check_wifi(str(ssid), password, country, f"{NETWORK_CONFIG} {name}")
                break
        except FirstbootError as exc:
            out.errors.append(str(exc))
    return out


def read_boot_partition(boot: Path, admin: str = DEFAULT_USER) -> Settings:
    """Both files' settings merged: fieldstation.txt wins over cloud-init for the hostname and Wi-Fi."""

    def read(name: str) -> str | None:
        try:
            return (boot / name).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise FirstbootError(f"{boot / name}: unreadable ({exc})") from None

    cloud = parse_cloud_init(read(USER_DATA), read(NETWORK_CONFIG), admin)
    text = read(SETTINGS_FILE)
    ours = parse_settings(text, str(boot / SETTINGS_FILE), admin) if text is not None else Settings()
    return Settings(
        hostname=ours.hostname or cloud.hostname,
        users=cloud.users + ours.users,
        wifi=ours.wifi or cloud.wifi,
        errors=cloud.errors + ours.errors,
    )


# -- applying ---------------------------------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    """Atomically, with its mode and owner from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.firstboot")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _files_with_placeholders(root: Path) -> Iterator[Path]:
    for top in SECRET_DIRS:
        for dirpath, _dirs, files in os.walk(root / top):
            for name in files:
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                with path.open("rb") as f:
                    if SECRET_MARK.search(f.read()):
                        yield path


def fill_secrets(root: Path) -> list[str]:
    """Replaces every placeholder under root/etc by its generated value; returns the names filled. The values are
    kept in the state directory (0600) until every file is written, so an interrupted run resumes consistently."""
    store = root / STATE_DIR / "secrets.json"
    values: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
    files = list(_files_with_placeholders(root))
    for path in files:
        for m in SECRET_MARK.finditer(path.read_bytes()):
            values.setdefault(m[1].decode(), secrets.token_urlsafe(24).replace("-", "x").replace("_", "y"))
    if files:
        _write(store, json.dumps(values), 0o600)
    for path in files:
        st = path.stat()
        data = SECRET_MARK.sub(lambda m: values[m[1].decode()].encode(), path.read_bytes())
        tmp = path.with_name(f".{path.name}.firstboot")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(st.st_mode))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, path)
    store.unlink(missing_ok=True)
    return sorted(values)


def _passwd_entry(root: Path, name: str) -> tuple[int, int, Path] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[0] == name:
            return int(parts[2]), int(parts[3]), Path(parts[5])
    return None


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise FirstbootError(f"{argv[0]} failed (rc={proc.returncode}): {detail[-1] if detail else ''}")


def apply_user(root: Path, user: User) -> None:
    """Creates the user if missing (an administrator: group sudo, passwordless sudo), sets its password hash if
    given, and adds its keys to ~/.ssh/authorized_keys (0600)."""
    prefix = [] if root == Path("/") else ["--root", str(root)]
    if _passwd_entry(root, user.name) is None:
        _run(["useradd", *prefix, "--create-home", "--shell", "/bin/bash", "--groups", "sudo", user.name])
        # No password to type (SSH takes keys only), so sudo must not ask for one; as base_admin_users get it.
        sudoers = root / "etc/sudoers.d/fieldstation-firstboot"
        rules = sudoers.read_text() if sudoers.exists() else ""
        _write(sudoers, rules + f"{user.name} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    if user.password_hash:
        _run(["usermod", *prefix, "--password", user.password_hash, user.name])
    entry = _passwd_entry(root, user.name)
    if entry is None or not user.ssh_keys:
        return
    uid, gid, home = entry
    ssh = root / home.relative_to("/") / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(ssh, uid, gid)
    path = ssh / "authorized_keys"
    present = path.read_text().splitlines() if path.exists() else []
    wanted = present + [k for k in user.ssh_keys if k not in present]
    _write(path, "\n".join(wanted) + "\n", 0o600, uid, gid)


def apply_hostname(root: Path, name: str) -> None:
    _write(root / "etc/hostname", name + "\n")
    hosts = root / "etc/hosts"
    lines = [line for line in hosts.read_text().splitlines() if not line.startswith("127.0.1.1")]
    _write(hosts, "\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")
    if root == Path("/"):
        _run(["hostname", name])  # hostnamed needs D-Bus, which is not up yet


def apply_wifi(root: Path, wifi: Wifi) -> str:
    """NetworkManager's keyfile where NetworkManager is installed (Raspberry Pi OS), else wpa_supplicant's file for
    wlan0 and its unit enabled (the Debian image, with systemd-networkd). Returns what was written."""
    if (root / "usr/sbin/NetworkManager").exists():
        security = f"\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={wifi.password}\n" if wifi.password else ""
        path = root / "etc/NetworkManager/system-connections/fieldstation-wifi.nmconnection"
        _write(
            path,
            f"[connection]\nid=fieldstation-wifi\ntype=wifi\ninterface-name=wlan0\nautoconnect=true\n\n"
            f"[wifi]\nmode=infrastructure\nssid={wifi.ssid}\n{security}\n"
            "[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n",
            0o600,
        )
    else:
        ssid = json.dumps(wifi.ssid)  # a quoted string, escapes as wpa_supplicant reads them
        secret = f"psk={json.dumps(wifi.password)}" if wifi.password else "key_mgmt=NONE"
        path = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
        _write(
            path,
            f"ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\ncountry={wifi.country}\n\n"
            f"network={{\n\tssid={ssid}\n\t{secret}\n}}\n",
            0o600,
        )
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "wpa_supplicant@wlan0.service"
        if not link.is_symlink():
            link.symlink_to("/lib/systemd/system/wpa_supplicant@.service")
        if root == Path("/") and Path("/sys/class/net/wlan0").exists():
            _run(["systemctl", "--no-block", "start", "wpa_supplicant@wlan0.service"])
    regdom = root / "etc/default/crda"  # the regulatory domain for the kernel (cfg80211 reads it via iw/crda)
    _write(regdom, f"REGDOMAIN={wifi.country}\n")
    return str(path.relative_to(root))


def _group_id(root: Path, name: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[0] == name:
            return int(parts[2])
    raise FirstbootError(f"no group {name!r} in {root / 'etc/group'}")


def make_certificates(root: Path) -> list[str]:
    """Makes each self-signed certificate that a request in root/etc/fieldstation/certificates.d names and that is
    missing: ``{"cert": path, "key": path, "group": name, "days": n}``, for the host's name (CN and subjectAltName:
    the name, name.local, 127.0.0.1), an EC P-256 key 0640 root:group, the certificate 0644. Returns the paths of the
    certificates made; a bad request raises FirstbootError naming it."""
    made: list[str] = []
    for request in sorted((root / CERTIFICATES_DIR).glob("*.json")):
        try:
            spec = json.loads(request.read_text())
            cert, key = (root / str(spec[k]).lstrip("/") for k in ("cert", "key"))
            group, days = str(spec.get("group", "root")), int(spec.get("days", 3650))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FirstbootError(f"{request}: not a certificate request ({type(exc).__name__}: {exc})") from None
        if cert.exists() and key.exists():
            continue
        hostname = _check_hostname((root / "etc/hostname").read_text(), str(root / "etc/hostname"))
        gid = _group_id(root, group)
        key.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=key.parent, prefix=".certificate-"))  # 0700: the key is never readable
        try:
            _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc",
                  "-days", str(days), "-subj", f"/CN={hostname}",
                  "-addext", f"subjectAltName=DNS:{hostname},DNS:{hostname}.local,IP:127.0.0.1",
                  "-keyout", str(work / "key"), "-out", str(work / "cert")])
            os.chown(work / "key", 0, gid)
            os.chmod(work / "key", 0o640)
            os.chmod(work / "cert", 0o644)
            os.replace(work / "key", key)
            os.replace(work / "cert", cert)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        made.append(str(cert.relative_to(root)))
    return made


def firstboot(root: Path, boot: Path, admin: str) -> list[str]:
    """Everything the first boot does; returns the one-line errors of the settings that were skipped."""
    filled = fill_secrets(root)
    print(f"fieldstation firstboot: {len(filled)} secret(s) generated: {', '.join(filled) or 'none'}")
    if shutil.which("ssh-keygen") and (root / "etc/ssh").is_dir():
        _run(["ssh-keygen", "-A", *([] if root == Path("/") else ["-f", str(root)])])
        print("fieldstation firstboot: SSH host keys present")
    try:
        settings = read_boot_partition(boot, admin)
    except FirstbootError as exc:
        return [str(exc)]
    errors = list(settings.errors)
    if settings.hostname:
        apply_hostname(root, settings.hostname)
        print(f"fieldstation firstboot: hostname {settings.hostname}")
    for user in settings.users:
        try:
            apply_user(root, user)
            print(f"fieldstation firstboot: user {user.name}: {len(user.ssh_keys)} SSH key(s)")
        except FirstbootError as exc:
            errors.append(f"user {user.name}: {exc}")
    try:
        for path in make_certificates(root):
            print(f"fieldstation firstboot: self-signed certificate /{path} for {settings.hostname or 'the image'}")
    except FirstbootError as exc:
        errors.append(str(exc))
    if settings.wifi:
        print(f"fieldstation firstboot: Wi-Fi {settings.wifi.ssid!r} ({settings.wifi.country}) in "
              f"{apply_wifi(root, settings.wifi)}")
        scrub_wifi_password(boot / SETTINGS_FILE)
    return errors


def scrub_wifi_password(path: Path) -> None:
    """Once applied (0600, root), the Wi-Fi password leaves fieldstation.txt, which anyone holding the card reads."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError:
        return
    kept = ["#wifi_password=(applied on the first boot and removed from this file)"
            if re.match(r"^\s*wifi_password\s*=", line) else line for line in lines]
    if kept != lines:
        with contextlib.suppress(OSError):  # a read-only boot partition keeps it; the settings still apply
            path.write_text("\n".join(kept) + "\n")


# -- growing the root filesystem ----------------------------------------------------------------------------------


def _sectors(path: Path) -> int:
    if path.is_block_device():
        out = subprocess.run(["blockdev", "--getsz", str(path)], capture_output=True, text=True, check=True).stdout
        return int(out)
    return path.stat().st_size // 512


def grow_partition(disk: Path, number: int) -> int:
    """Extends partition ``number`` of ``disk`` (a block device or an image file) to the end of it, if it is the last
    one and space follows; returns the sectors added (0: nothing to do)."""
    proc = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise FirstbootError(f"{disk}: no partition table sfdisk can read ({proc.stderr.strip()})")
    table = json.loads(proc.stdout)["partitiontable"]
    parts = table["partitions"]
    node = next((p for p in parts if re.search(rf"\D{number}$", p["node"])), None)
    if node is None:
        raise FirstbootError(f"{disk}: no partition {number}")
    end = int(node["start"]) + int(node["size"])
    if any(int(p["start"]) >= end for p in parts):
        raise FirstbootError(f"{disk}: partition {number} is not the last one: not growing it")
    last_usable = _sectors(disk) - (34 if table.get("label") == "gpt" else 0)
    spare = last_usable - end
    if spare < 2048:  # under 1 MiB: already grown
        return 0
    argv = ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N", str(number), str(disk)]
    proc = subprocess.run(argv, input=", +\n", capture_output=True, text=True, check=False)
    if proc.returncode:
        raise FirstbootError(f"{disk}: sfdisk could not extend partition {number}: {proc.stderr.strip()}")
    return spare


def growroot(mountpoint: Path = Path("/")) -> str:
    """Grows the partition holding ``mountpoint`` and its ext4 filesystem, online; returns what was done."""
    proc = subprocess.run(["findmnt", "-nvo", "SOURCE", str(mountpoint)], capture_output=True, text=True, check=False)
    source = Path(proc.stdout.strip() or "none")
    if not source.is_absolute() or not source.exists() or not source.is_block_device():
        return f"{mountpoint} is on {source}, not a block device (a container?): nothing to grow"
    sys_part = Path("/sys/class/block") / source.resolve().name
    if not (sys_part / "partition").exists():
        return f"{source} is not a partition: nothing to grow"
    number = int((sys_part / "partition").read_text())
    disk = Path("/dev") / sys_part.resolve().parent.name
    added = grow_partition(disk, number)
    if added:
        _run(["partx", "--update", "--nr", str(number), str(disk)])  # tells the kernel while / is mounted
    _run(["resize2fs", str(source)])  # no-op when already the partition's size
    return f"{source}: partition {'grown by ' + str(added * 512 // 2**20) + ' MiB' if added else 'already full size'}" \
        ", filesystem resized"


# -- the commands -------------------------------------------------------------------------------------------------


def _stamp(root: Path, name: str) -> Path:
    return root / STATE_DIR / f"{name}.done"


def done_stamp(root: Path) -> Path:
    """Where a finished first boot leaves its stamp (the image's held services assert it; doctor reads it)."""
    return _stamp(root, "firstboot")


def cmd_firstboot(args: argparse.Namespace) -> int:
    root: Path = args.root
    boot: Path = args.boot
    user: str = args.user
    stamp = _stamp(root, "firstboot")
    if stamp.exists() and not args.again:
        print(f"fieldstation firstboot: already done ({stamp}); --again runs it anew")
        return 0
    errors = firstboot(root, boot, user)
    _write(stamp, "")
    for line in errors:
        print(f"fieldstation firstboot: {line}", flush=True)
    return 1 if errors else 0


def cmd_certificates(args: argparse.Namespace) -> int:
    try:
        made = make_certificates(args.root)
    except FirstbootError as exc:
        print(f"fieldstation certificates: {exc}", flush=True)
        return 1
    for path in made:
        print(f"fieldstation certificates: made /{path}")
    if not made:
        print("fieldstation certificates: every requested certificate exists")
    return 0


def cmd_growroot(args: argparse.Namespace) -> int:
    try:
        if args.image:
            image: Path = args.image
            added = grow_partition(image, int(args.partition))
            print(f"fieldstation growroot: {args.image}: partition {args.partition} grown by {added} sectors")
        else:
            print(f"fieldstation growroot: {growroot()}")
    except FirstbootError as exc:
        print(f"fieldstation growroot: {exc}", flush=True)
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_help: str) -> None:
    sp = sub.add_parser(
        "firstboot", help="first boot of an image: secrets, SSH host keys, settings from the boot partition"
    )
    sp.add_argument("--boot", type=Path, default=BOOT_DIR, help=f"the boot partition (default {BOOT_DIR})")
    sp.add_argument(
        "--user",
        default=os.environ.get("FIELDSTATION_FIRSTBOOT_USER") or DEFAULT_USER,
        help="the administrator who gets fieldstation.txt's SSH keys (default $FIELDSTATION_FIRSTBOOT_USER or admin)",
    )
    sp.add_argument("--root", type=Path, default=Path("/"), help="apply to this root filesystem (default /)")
    sp.add_argument("--again", action="store_true", help="run even if a first boot already happened")
    sp.set_defaults(fn=cmd_firstboot)
    sp = sub.add_parser(
        "certificates", help=f"make the self-signed certificates /{CERTIFICATES_DIR}/*.json ask for, if missing"
    )
    sp.add_argument("--root", type=Path, default=Path("/"), help="in this root filesystem (default /)")
    sp.set_defaults(fn=cmd_certificates)
    sp = sub.add_parser("growroot", help="grow the root partition and filesystem to the end of the card")
    sp.add_argument("--image", type=Path, help="extend a partition of this image file instead (table only)")
    sp.add_argument("--partition", type=int, default=2, help="with --image: the partition number (default 2)")
    sp.set_defaults(fn=cmd_growroot)
