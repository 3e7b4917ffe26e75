"""The base role's Raspberry Pi buses (tasks/pi.yml) into a Debian bookworm root over the chroot connection, as the
image build runs it: each base_pi_* setting alone and all together, on a boot partition laid out as Raspberry Pi OS
ships it and, for Debian's raspi-firmware, with a stand-in of its kernel hook (the package exists for arm only; the
stand-in generates config.txt and cmdline.txt from the same /etc/default files, so what the role writes there is what
the firmware would read). The owner's own lines are checked to survive, and a second run to change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.rootfs import REPO, PlaybookResult, fresh_root, log, remove_root, requires_rootfs, run_playbook

pytestmark = [requires_rootfs, pytest.mark.timeout(1200)]

PLAYBOOK = f"""\
- name: The base role's Raspberry Pi buses alone
  hosts: fieldstation
  gather_facts: false
  tasks:
    - name: The role's checks
      ansible.builtin.include_role:
        name: {REPO / "ansible/roles/base"}
        tasks_from: preflight.yml
    - name: The Raspberry Pi buses
      ansible.builtin.include_role:
        name: {REPO / "ansible/roles/base"}
        tasks_from: pi.yml
"""
# Raspberry Pi OS bookworm's config.txt (abridged) with an owner's own lines, and its cmdline.txt.
CONFIG_TXT = """\
# For more options and information see http://rptl.io/configtxt
#dtparam=i2c_arm=on
#dtparam=spi=on
dtparam=audio=on
dtoverlay=vc4-kms-v3d
arm_64bit=1
dtoverlay=my-own-hat

[cm4]
otg_mode=1
"""
CMDLINE_TXT = ("console=serial0,115200 console=tty1 root=PARTUUID=35684e8a-02 rootfstype=ext4 fsck.repair=yes "
               "rootwait quiet\n")
# Each setting and the lines it adds after [all] in the managed block.
SETTINGS: dict[str, tuple[dict[str, object], list[str]]] = {
    "i2c": ({"base_pi_i2c": True}, ["dtparam=i2c_arm=on"]),
    "spi": ({"base_pi_spi": True}, ["dtparam=spi=on"]),
    "onewire": ({"base_pi_onewire_gpio": 4}, ["dtoverlay=w1-gpio,gpiopin=4"]),
    "uart": ({"base_pi_uart_rs485": True}, ["enable_uart=1", "dtoverlay=disable-bt"]),
    "uart-miniuart": ({"base_pi_uart_rs485": True, "base_pi_uart_bluetooth": "miniuart"},
                      ["enable_uart=1", "dtoverlay=miniuart-bt"]),
}
BEGIN = "# BEGIN Fieldstation: base_pi_* settings (ansible/roles/base/README.md)"
END = "# END Fieldstation: base_pi_* settings (ansible/roles/base/README.md)"
# Debian's raspi-firmware hook, reduced to what the role relies on: config.txt is its own text followed by
# /etc/default/raspi-firmware-custom, cmdline.txt names CONSOLES ("auto": the serial console ttyS1 and tty0).
DEBIAN_GENERATOR = """\
#!/bin/sh -e
[ "$DEB_MAINT_PARAMS" = configure ] || { echo "not configure" >&2; exit 1; }
CONSOLES=auto
. /etc/default/raspi-firmware
[ "$CONSOLES" = auto ] && CONSOLES="ttyS1,115200 tty0"
{ printf '# Do not modify this file!\\n# generated for %s\\narm_64bit=1\\nenable_uart=1\\nupstream_kernel=1\\n' "$1"
  [ -f /etc/default/raspi-firmware-custom ] && cat /etc/default/raspi-firmware-custom; } >/boot/firmware/config.txt
c=""; for x in $CONSOLES; do c="$c console=$x"; done
echo "${c# } root=LABEL=rootfs rw fsck.repair=yes rootwait" >/boot/firmware/cmdline.txt
"""
RASPI_FIRMWARE_DEFAULT = '# Set this to the kernel console(s)\n#CONSOLES="auto"\nROOTPART=LABEL=rootfs\n'


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("pi")
    root = fresh_root(tmp)
    yield root
    remove_root(root)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pi-work")
    (work / "pi.yml").write_text(PLAYBOOK)
    return work


def raspios_boot(root: Path) -> Path:
    """A boot partition as Raspberry Pi OS ships it, and no Debian generator."""
    boot = root / "boot/firmware"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "config.txt").write_text(CONFIG_TXT)
    (boot / "cmdline.txt").write_text(CMDLINE_TXT)
    for leftover in ("etc/modules-load.d/fieldstation-pi.conf", "etc/systemd/system/hciuart.service",
                     "etc/kernel/postinst.d/z50-raspi-firmware", "etc/default/raspi-firmware-custom"):
        (root / leftover).unlink(missing_ok=True)
    return boot


def block(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[lines.index(BEGIN) + 1:lines.index(END)]


def run(root: Path, workdir: Path, settings: dict[str, object]) -> PlaybookResult:
    log(f"pi.yml with {settings}")
    return run_playbook(root, settings, playbook=workdir / "pi.yml", workdir=workdir)


def test_unset_settings_leave_config_txt_and_cmdline_txt_as_they_are(root: Path, workdir: Path) -> None:
    boot = raspios_boot(root)
    result = run(root, workdir, {}).assert_ok()
    assert result.changed_tasks == []
    assert (boot / "config.txt").read_text() == CONFIG_TXT
    assert (boot / "cmdline.txt").read_text() == CMDLINE_TXT
    assert not (root / "etc/modules-load.d/fieldstation-pi.conf").exists()


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_setting_adds_its_lines_and_keeps_the_owners(root: Path, workdir: Path, name: str) -> None:
    settings, lines = SETTINGS[name]
    boot = raspios_boot(root)
    run(root, workdir, settings).assert_ok()
    config = (boot / "config.txt").read_text()
    assert block(config) == ["[all]", *lines]
    # The owner's lines, the commented ones included, are all still there, in order, before the block.
    assert config.startswith(CONFIG_TXT)
    uart = bool(settings.get("base_pi_uart_rs485"))
    cmdline = (boot / "cmdline.txt").read_text()
    if uart:
        assert cmdline == CMDLINE_TXT.replace("console=serial0,115200 ", "")
    else:
        assert cmdline == CMDLINE_TXT
    modules = root / "etc/modules-load.d/fieldstation-pi.conf"
    assert modules.exists() == (name == "i2c")
    if name == "i2c":
        assert "i2c-dev" in modules.read_text().splitlines()
    hciuart = root / "etc/systemd/system/hciuart.service"
    assert (hciuart.is_symlink() and str(hciuart.readlink()) == "/dev/null") == (name == "uart")


def test_all_settings_together_are_idempotent_and_unsetting_them_removes_the_block(root: Path, workdir: Path) -> None:
    boot = raspios_boot(root)
    every: dict[str, object] = {"base_pi_i2c": True, "base_pi_spi": True, "base_pi_onewire_gpio": 17,
                                "base_pi_uart_rs485": True}
    run(root, workdir, every).assert_ok()
    config = (boot / "config.txt").read_text()
    assert block(config) == ["[all]", "dtparam=i2c_arm=on", "dtparam=spi=on", "dtoverlay=w1-gpio,gpiopin=17",
                             "enable_uart=1", "dtoverlay=disable-bt"]
    cmdline = (boot / "cmdline.txt").read_text()
    assert "serial0" not in cmdline and "console=tty1 root=PARTUUID=35684e8a-02" in cmdline
    assert run(root, workdir, every).assert_ok().changed_tasks == []
    assert (boot / "config.txt").read_text() == config
    assert (boot / "cmdline.txt").read_text() == cmdline

    run(root, workdir, {}).assert_ok()
    assert (boot / "config.txt").read_text() == CONFIG_TXT
    assert not (root / "etc/modules-load.d/fieldstation-pi.conf").exists()


@pytest.mark.parametrize("pin", [2, 14, 28, -1])
def test_a_1_wire_pin_off_the_header_or_on_an_enabled_bus_is_refused(root: Path, workdir: Path, pin: int) -> None:
    boot = raspios_boot(root)
    result = run(root, workdir, {"base_pi_onewire_gpio": pin, "base_pi_i2c": True, "base_pi_uart_rs485": True})
    assert result.rc != 0
    assert f"base_pi_onewire_gpio {pin} is" in result.stdout
    assert (boot / "config.txt").read_text() == CONFIG_TXT


def test_debian_raspi_firmware_gets_the_settings_in_its_own_files(root: Path, workdir: Path) -> None:
    boot = raspios_boot(root)
    generator = root / "etc/kernel/postinst.d/z50-raspi-firmware"
    generator.parent.mkdir(parents=True, exist_ok=True)
    generator.write_text(DEBIAN_GENERATOR)
    generator.chmod(0o755)
    (root / "etc/default/raspi-firmware").write_text(RASPI_FIRMWARE_DEFAULT)
    (root / "etc/default/raspi-firmware-custom").write_text("# mine\ngpu_mem=16\n")
    (root / "boot/vmlinuz-6.1.0-28-arm64").write_text("")
    # Unset: the generator's files are not touched and it does not run.
    run(root, workdir, {}).assert_ok()
    assert (boot / "config.txt").read_text() == CONFIG_TXT
    assert (root / "etc/default/raspi-firmware-custom").read_text() == "# mine\ngpu_mem=16\n"

    every: dict[str, object] = {"base_pi_i2c": True, "base_pi_onewire_gpio": 4, "base_pi_uart_rs485": True}
    run(root, workdir, every).assert_ok()
    custom = (root / "etc/default/raspi-firmware-custom").read_text()
    assert custom.startswith("# mine\ngpu_mem=16\n")
    lines = ["[all]", "dtparam=i2c_arm=on", "dtoverlay=w1-gpio,gpiopin=4", "enable_uart=1", "dtoverlay=disable-bt"]
    assert block(custom) == lines
    assert 'CONSOLES="tty0"' in (root / "etc/default/raspi-firmware").read_text().splitlines()
    # The generator ran, for the installed kernel: its config.txt carries the block, its cmdline.txt no serial console.
    config = (boot / "config.txt").read_text()
    assert "# generated for 6.1.0-28-arm64" in config and block(config) == lines
    assert (boot / "cmdline.txt").read_text().split()[0:2] == ["console=tty0", "root=LABEL=rootfs"]
    rules = (root / "etc/udev/rules.d/60-fieldstation-pi.rules").read_text()
    assert 'SUBSYSTEM=="i2c-dev", GROUP="i2c"' in rules
    assert not (root / "etc/systemd/system/hciuart.service").exists()  # no hciuart on Debian
    assert run(root, workdir, every).assert_ok().changed_tasks == []
