"""fieldstation firstboot / growroot: the boot partition's settings (fieldstation.txt and Raspberry Pi Imager's
cloud-init files), bad input reported in one line, secrets filled consistently, and the partition grown in an image
file. Applied to a root filesystem in a temporary directory; the booted image is tests/image/test_image.py's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fieldstation.cli import main
from fieldstation.firstboot import (
    User,
    apply_user,
    apply_wifi,
    fill_secrets,
    grow_partition,
    make_certificates,
    parse_cloud_init,
    parse_settings,
    scrub_wifi_password,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFieldstationTestKeyOnlyForTests0000000000 you@laptop"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCtestkey second@host"

# What Raspberry Pi Imager writes on a trixie card (abridged: apt, keyboard and runcmd sections left out).
IMAGER_USER_DATA = f"""#cloud-config
hostname: imager-pi
manage_etc_hosts: true
timezone: Europe/Paris
users:
- name: alice
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: false
  passwd: $5$abcdefgh$0123456789abcdefghijklmnopqrstuvwxyzABCDEF
  ssh_authorized_keys:
    - {KEY}
  sudo: ALL=(ALL) NOPASSWD:ALL
enable_ssh: true
ssh_pwauth: false
"""
IMAGER_NETWORK_CONFIG = """network:
  version: 2
  wifis:
    renderer: networkd
    wlan0:
      dhcp4: true
      optional: true
      access-points:
        "Lab Wi-Fi":
          password: "correct horse battery"
      regulatory-domain: "DE"
"""


def test_fieldstation_txt_gives_hostname_keys_and_wifi() -> None:
    text = f"""# comment
hostname=Station-7
ssh_authorized_key={KEY}
ssh_authorized_key = "{KEY2}"
#wifi_ssid=ignored
wifi_ssid=Lab Net
wifi_password=s3cret-wifi-pw
wifi_country=fr
"""
    s = parse_settings(text, admin="admin")
    assert s.errors == []
    assert s.hostname == "station-7"
    assert [(u.name, u.ssh_keys) for u in s.users] == [("admin", [KEY, KEY2])]
    assert s.wifi is not None and (s.wifi.ssid, s.wifi.password, s.wifi.country) == ("Lab Net", "s3cret-wifi-pw", "FR")


def test_the_shipped_template_sets_nothing_until_edited() -> None:
    template = Path(__file__).parents[2] / "ansible/roles/firstboot/templates/boot/firmware/fieldstation.txt.j2"
    text = template.read_text().replace("{{ base_hostname | default('fieldstation') }}", "fieldstation")
    s = parse_settings(text.replace("{{ firstboot_user }}", "admin"))
    assert (s.hostname, s.users, s.wifi, s.errors) == ("", [], None, [])
    # Every key the template documents is one the parser knows: uncommenting each line is valid.
    uncommented = "\n".join(line[1:] for line in text.splitlines() if line.startswith("#") and "=" in line
                            and line[1:].split("=")[0] in {"hostname", "ssh_authorized_key", "wifi_ssid",
                                                           "wifi_password", "wifi_country"})
    parsed = parse_settings(uncommented)
    assert [e for e in parsed.errors if "unknown key" in e] == []


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("hostname=bad_name!", "line 1: hostname 'bad_name!' is not a valid host name"),
        ("ssh_authorized_key=not a key", "line 1: 'not a key' is not an SSH public key"),
        ("colour=blue", "line 1: unknown key 'colour'"),
        ("just words", "line 1: expected key=value"),
        ("wifi_ssid=Net\nwifi_password=short\nwifi_country=FR", "the Wi-Fi password must be 8 to 63 characters"),
        ("wifi_ssid=Net\nwifi_password=long-enough\nwifi_country=FRA", "wifi_country 'FRA' is not a two-letter"),
        ("wifi_password=long-enough", "wifi_password or wifi_country given without wifi_ssid"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_file_and_the_others_still_apply(line: str, error: str) -> None:
    s = parse_settings(f"{line}\nhostname=good-one", source="/boot/firmware/fieldstation.txt")
    if not line.startswith("hostname"):
        assert s.hostname == "good-one"
    assert len(s.errors) == 1 and "\n" not in s.errors[0]
    assert s.errors[0].startswith("/boot/firmware/fieldstation.txt")
    assert error in s.errors[0]


def test_raspberry_pi_imagers_cloud_init_files() -> None:
    s = parse_cloud_init(IMAGER_USER_DATA, IMAGER_NETWORK_CONFIG)
    assert s.errors == []
    assert s.hostname == "imager-pi"
    assert [(u.name, u.ssh_keys, u.password_hash.startswith("$5$")) for u in s.users] == [("alice", [KEY], True)]
    assert s.wifi is not None and (s.wifi.ssid, s.wifi.password, s.wifi.country) == ("Lab Wi-Fi", "correct horse battery", "DE")


@pytest.mark.parametrize(
    ("user_data", "network_config", "error"),
    [
        ("hostname: [unclosed", None, "user-data line 1: not valid YAML"),
        ("- a list", None, "user-data: expected a mapping at the top, got list"),
        ("users:\n- name: Bad User\n", None, "user-data: user name 'Bad User' is not a valid login name"),
        (None, "network:\n  wifis:\n    wlan0:\n      access-points:\n        x: {password: long-enough-pw}\n", "wifi_country"),
    ],
)
def test_broken_cloud_init_files_are_one_line_each(
    user_data: str | None, network_config: str | None, error: str
) -> None:
    s = parse_cloud_init(user_data, network_config)
    assert len(s.errors) == 1 and "\n" not in s.errors[0] and error in s.errors[0], s.errors


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()
    (root / "etc/passwd").write_text(f"root:x:0:0:root:/root:/bin/bash\nadmin:x:{uid}:{gid}::/home/admin:/bin/bash\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tfieldstation\n")
    (root / "etc/hostname").write_text("fieldstation\n")
    return root


def test_secrets_are_filled_with_one_value_per_name_and_modes_kept(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/fieldstation").mkdir()
    setup = root / "etc/fieldstation/influx-setup.toml"
    setup.write_text('[admin]\npassword = "FIRSTBOOT_SECRET_INFLUXDB_ADMIN"\n[agent]\npassword = "FIRSTBOOT_SECRET_AGENT"\n')
    setup.chmod(0o600)
    agent = root / "etc/fieldstation/agent.toml"
    agent.write_text('password = "FIRSTBOOT_SECRET_AGENT"\n')
    agent.chmod(0o640)
    (root / "etc/untouched.conf").write_text("nothing here\n")

    assert fill_secrets(root) == ["AGENT", "INFLUXDB_ADMIN"]
    text = setup.read_text()
    assert "FIRSTBOOT_SECRET" not in text and "FIRSTBOOT_SECRET" not in agent.read_text()
    admin_pw, agent_pw = (line.split('"')[1] for line in text.splitlines() if "password" in line)
    assert agent.read_text() == f'password = "{agent_pw}"\n' and admin_pw != agent_pw and len(agent_pw) >= 24
    assert (setup.stat().st_mode & 0o777, agent.stat().st_mode & 0o777) == (0o600, 0o640)
    assert fill_secrets(root) == []  # nothing left: a second run changes nothing
    assert setup.read_text() == text
    assert not list((root / "var/lib/fieldstation-firstboot").glob("secrets*"))  # the values in flight are gone


def test_an_existing_user_gets_the_keys_once_with_private_modes(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    apply_user(root, User("admin", [KEY]))
    apply_user(root, User("admin", [KEY, KEY2]))
    keys = root / "home/admin/.ssh/authorized_keys"
    assert keys.read_text() == f"{KEY}\n{KEY2}\n"
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.parent.stat().st_mode & 0o777 == 0o700


def test_wifi_for_wpa_supplicant_or_networkmanager(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    wifi = parse_settings('wifi_ssid=My "Lab"\nwifi_password=s3cret-wifi-pw\nwifi_country=de').wifi
    assert wifi is not None
    assert apply_wifi(root, wifi) == "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    conf = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert 'ssid="My \\"Lab\\""' in conf.read_text() and "country=DE" in conf.read_text()
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service").is_symlink()
    settings = tmp_path / "fieldstation.txt"
    settings.write_text("wifi_ssid=Lab\n  wifi_password = s3cret-wifi-pw\nwifi_country=DE\n")
    scrub_wifi_password(settings)
    assert settings.read_text() == (
        "wifi_ssid=Lab\n#wifi_password=(applied on the first boot and removed from this file)\nwifi_country=DE\n"
    )
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/NetworkManager").touch()
    path = apply_wifi(root, wifi)
    assert path == "etc/NetworkManager/system-connections/fieldstation-wifi.nmconnection"
    assert "psk=s3cret-wifi-pw" in (root / path).read_text() and (root / path).stat().st_mode & 0o777 == 0o600


def test_the_command_applies_what_is_valid_reports_the_rest_and_runs_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "fieldstation.txt").write_text(f"hostname=station-9\nssh_authorized_key={KEY}\nwifi_country=XYZ\n")
    argv = ["firstboot", "--root", str(root), "--boot", str(boot), "--user", "admin"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert (root / "etc/hostname").read_text() == "station-9\n"
    assert "127.0.1.1\tstation-9" in (root / "etc/hosts").read_text()
    assert (root / "home/admin/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert "wifi_country=XYZ" in (boot / "fieldstation.txt").read_text()  # nothing applied, nothing scrubbed
    errors = [line for line in out.splitlines() if "wifi_" in line]
    assert errors == [f"fieldstation firstboot: {boot}/fieldstation.txt: wifi_password or wifi_country given without "
                      "wifi_ssid"]
    assert main(argv) == 0  # the stamp: the first boot happens once
    assert "already done" in capsys.readouterr().out


def test_growroot_extends_the_last_partition_of_an_image_file(tmp_path: Path) -> None:
    img = tmp_path / "card.img"
    img.write_bytes(b"")
    os.truncate(img, 64 * 2**20)
    table = "label: dos\nstart=2048, size=16384, type=c\nstart=18432, size=32768, type=83\n"
    subprocess.run(["sfdisk", "--quiet", str(img)], input=table, text=True, check=True)
    os.truncate(img, 128 * 2**20)  # the bigger card
    assert main(["growroot", "--image", str(img)]) == 0
    parts = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]["partitions"]
    assert parts[1]["start"] == 18432 and parts[1]["start"] + parts[1]["size"] == 128 * 2048
    assert parts[0]["size"] == 16384
    assert grow_partition(img, 2) == 0  # already full size


def test_growroot_refuses_a_partition_that_is_not_the_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "card.img"
    img.write_bytes(b"")
    os.truncate(img, 64 * 2**20)
    table = "label: dos\nstart=2048, size=16384, type=c\nstart=18432, size=16384, type=83\n"
    subprocess.run(["sfdisk", "--quiet", str(img)], input=table, text=True, check=True)
    assert main(["growroot", "--image", str(img), "--partition", "1"]) == 1
    assert capsys.readouterr().out == f"fieldstation growroot: {img}: partition 1 is not the last one: not growing it\n"
    assert main(["growroot", "--image", str(tmp_path / "missing.img")]) == 1
    assert "no partition table sfdisk can read" in capsys.readouterr().out


def test_a_requested_self_signed_certificate_is_made_once_for_the_hosts_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the grafana role asks for one with HTTPS and no certificate of the user's: made for the card's name, the
    key readable by root and the service's group only; a second run keeps it."""
    root = make_root(tmp_path)
    (root / "etc/hostname").write_text("labpi\n")
    (root / "etc/group").write_text(f"root:x:0:\ngrafana:x:{os.getgid() + 4242}:\n")
    (root / "etc/fieldstation/certificates.d").mkdir(parents=True)
    (root / "etc/fieldstation/certificates.d/grafana.json").write_text(json.dumps(
        {"cert": "/etc/grafana/tls/grafana.crt", "key": "/etc/grafana/tls/grafana.key", "group": "grafana",
         "days": 30}))
    assert make_certificates(root) == ["etc/grafana/tls/grafana.crt"]
    cert, key = root / "etc/grafana/tls/grafana.crt", root / "etc/grafana/tls/grafana.key"
    shown = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-ext", "subjectAltName"],
                           capture_output=True, text=True, check=True).stdout
    assert "CN = labpi" in shown and "DNS:labpi, DNS:labpi.local, IP Address:127.0.0.1" in shown, shown
    pair = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True, text=True, check=True)
    public = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], capture_output=True,
                            text=True, check=True)
    assert pair.stdout == public.stdout  # the key is the certificate's
    assert (key.stat().st_mode & 0o777, key.stat().st_gid, cert.stat().st_mode & 0o777) == (
        0o640, os.getgid() + 4242, 0o644)
    assert not [p for p in key.parent.iterdir() if p.name.startswith(".")]  # no work directory left behind
    before = cert.read_bytes()
    assert main(["certificates", "--root", str(root)]) == 0
    assert cert.read_bytes() == before
    assert "every requested certificate exists" in capsys.readouterr().out


def test_a_bad_certificate_request_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path)
    (root / "etc/fieldstation/certificates.d").mkdir(parents=True)
    (root / "etc/fieldstation/certificates.d/grafana.json").write_text('{"cert": "/etc/x.crt"}')
    assert main(["certificates", "--root", str(root)]) == 1
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "certificates.d/grafana.json: not a certificate request" in out, out
