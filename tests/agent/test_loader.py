"""config.py loading: every user mistake is one line naming file, line and problem (through the CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fieldstation.loader import ConfigError, load_sensors

HEAD = "from fieldstation.sensors.simulated import Simulated\n"

BAD = {
    "syntax_error": ("sensors = [\n    Simulated(name='a'),\n", 1, "syntax error: '[' was never closed"),
    "unknown_option": (
        HEAD + "sensors = [\n    Simulated(name='a', intervall=5),\n]\n",
        3,
        "unknown option 'intervall' for Simulated",
    ),
    "wrong_type": (
        HEAD + "sensors = [Simulated(name='a', interval='fast')]\n",
        2,
        "option 'interval': Input should be a valid number",
    ),
    "duplicate_name": (
        HEAD + "a = Simulated(name='t1')\nb = Simulated(name='t1')\nsensors = [a, b]\n",
        3,
        "duplicate sensor name 't1' (first defined at",
    ),
    "interval_zero": (
        HEAD + "sensors = [Simulated(name='a', interval=0)]\n",
        2,
        "interval must be at least 0.1 s (got 0)",
    ),
    "interval_negative": (
        HEAD + "sensors = [Simulated(name='a', interval=-1)]\n",
        2,
        "interval must be at least 0.1 s (got -1)",
    ),
    "missing_extra": (
        "from fieldstation import Sensor\n"
        "class Meter(Sensor):\n    driver = 'modbus'\n    requires = ('pymodbus_not_installed',)\n"
        "sensors = [Meter(name='m')]\n",
        5,
        "the 'modbus' driver needs the Python module 'pymodbus_not_installed': install the extra with pip install 'fieldstation[modbus]'",
    ),
    "no_sensors": ("sensors = []\n", None, "no sensors defined"),
    "nothing_at_all": ("# empty\n", None, "no sensors defined"),
    "not_a_sensor": ("sensors = ['t1']\n", None, "sensors entry 1 is a str, not a Sensor"),
    "runtime_error": (HEAD + "x = 1 / 0\n", 2, "ZeroDivisionError: division by zero"),
    "missing_name": (HEAD + "sensors = [Simulated(unit='K')]\n", 2, "Simulated needs the option 'name'"),
}


def fieldstation(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fieldstation.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_reports_one_line_naming_file_and_line(case: str, tmp_path: Path) -> None:
    source, line, message = BAD[case]
    path = tmp_path / "config.py"
    path.write_text(source)
    result = fieldstation("check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert len(err) == 1, result.stderr
    where = f"{path}:{line}: " if line else f"{path}: "
    assert err[0].startswith(f"fieldstation: {where}"), err[0]
    assert message in err[0]
    assert "Traceback" not in result.stderr


def test_check_accepts_the_example_config() -> None:
    example = Path(__file__).parents[2] / "agent/src/fieldstation/example_config.py"
    result = fieldstation("check", str(example))
    assert result.returncode == 0, result.stderr
    assert "OK, " in result.stdout


def test_missing_file(tmp_path: Path) -> None:
    result = fieldstation("check", str(tmp_path / "nope.py"))
    assert (result.returncode, result.stderr.strip()) == (2, f"fieldstation: {tmp_path / 'nope.py'}: no such file")


def test_groups_come_from_a_dict_and_order_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        HEAD
        + "sensors = {'Room': [Simulated(name='b'), Simulated(name='a')], 'Cryo': [Simulated(name='c', group='X')]}\n"
    )
    sensors = load_sensors(path)
    assert [(s.name, s.group) for s in sensors] == [("b", "Room"), ("a", "Room"), ("c", "X")]


def test_module_level_sensors_are_collected_without_a_list(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(HEAD + "one = Simulated(name='one')\ntwo = Simulated(name='two')\n")
    assert [s.name for s in load_sensors(path)] == ["one", "two"]


def test_a_user_subclass_in_config_py_just_works(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        "from fieldstation import Sensor\n"
        "class Doubler(Sensor):\n"
        "    factor: float = 2.0\n"
        "    def read(self) -> float:\n"
        "        return 21.0 * self.factor\n"
        "sensors = [Doubler(name='d', unit='K', factor=3)]\n"
    )
    result = fieldstation("once", "-n", "2", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("d ") == 2 and "value=63 K" in result.stdout


def test_error_from_the_loader_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text("sensors = 5\n")
    with pytest.raises(ConfigError, match="must be a list or a dict"):
        load_sensors(path)
