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
        "    def read(self) -> float:\n        return 1.0\n"
        "sensors = [Meter(name='m')]\n",
        7,
        "the 'modbus' driver needs the Python module 'pymodbus_not_installed': install the extra with pip install 'fieldstation[modbus]'",
    ),
    "no_sensors": ("sensors = []\n", None, "no sensors defined"),
    "nothing_at_all": ("# empty\n", None, "no sensors defined"),
    "not_a_sensor": ("sensors = ['t1']\n", None, "sensors entry 1 is a str, not a Sensor"),
    "runtime_error": (HEAD + "x = 1 / 0\n", 2, "ZeroDivisionError: division by zero"),
    "missing_name": (HEAD + "sensors = [Simulated(unit='K')]\n", 2, "Simulated needs the option 'name'"),
    # The line of the keyword at fault, not of the call; a near miss gets a suggestion.
    "keyword_line": (
        HEAD + "sensors = [\n    Simulated(\n        name='a',\n        intervall=5,\n    ),\n]\n",
        5,
        "unknown option 'intervall' for Simulated (did you mean 'interval'?)",
    ),
    # Per-field options name fields the driver produces (Simulated: its `fields` option).
    "limits_unknown_field": (
        HEAD + "sensors = [Simulated(name='a',\n    limits={'valeu': (2, 8)})]\n",
        3,
        "limits names the field 'valeu', which is not among the fields Simulated produces (value)"
        " (did you mean 'value'?)",
    ),
    "unit_unknown_field": (
        HEAD + "sensors = [Simulated(name='a', fields=['t', 'rh'], unit={'t': 'K', 'rhh': '%'})]\n",
        2,
        "unit names the field 'rhh', which is not among the fields Simulated produces (t, rh) (did you mean 'rh'?)",
    ),
    "valid_range_unknown_field": (
        HEAD + "sensors = [Simulated(name='a', valid_range={'temp': (0, 50)})]\n",
        2,
        "valid_range names the field 'temp', which is not among the fields Simulated produces (value)",
    ),
    "conversion_unknown_field": (
        HEAD + "from fieldstation import Linear\n"
        "sensors = [Simulated(name='a', conversion={'vlaue': Linear(slope=2)})]\n",
        3,
        "conversion names the field 'vlaue', which is not among the fields Simulated produces (value)"
        " (did you mean 'value'?)",
    ),
    "limits_low_above_high": (
        HEAD + "sensors = [Simulated(name='a', limits={'value': (8, 2)})]\n",
        2,
        "limits of 'value': low must be below high (got 8, 2)",
    ),
    "no_read": (
        "from fieldstation import Sensor\nclass Probe(Sensor):\n    unit: str = 'K'\nsensors = [Probe(name='p')]\n",
        2,
        "Probe has no read() method",
    ),
    "read_takes_an_argument": (
        "from fieldstation import Sensor\nclass Probe(Sensor):\n    def read(self, channel):\n        return 1.0\n"
        "sensors = [Probe(name='p')]\n",
        3,
        "Probe.read(self, channel) must take only self",
    ),
    "interval_inf": (
        HEAD + "sensors = [Simulated(name='a', interval=float('inf'))]\n",
        2,
        "interval must be at most 86400 s, a day (got inf)",
    ),
    "timeout_huge": (
        HEAD + "sensors = [Simulated(name='a', timeout=1e300)]\n",
        2,
        "timeout must be above 0 and at most 3600 s (got 1e+300)",
    ),
    "union_wrong_item": (
        HEAD + "sensors = [Simulated(name='a', valid_range=(1, 'x'))]\n",
        2,
        "Simulated option 'valid_range', item 2: Input should be a valid number (got 'x')",
    ),
    "union_wrong_shape": (
        HEAD + "sensors = [Simulated(name='a', valid_range='abc')]\n",
        2,
        "Simulated option 'valid_range' should be (low, high), {field: (low, high)} or None (got 'abc')",
    ),
    "union_tagged_member": (
        HEAD + "sensors = [Simulated(name='a', conversion={'kind': 'linear',\n    'slope': 'a'})]\n",
        3,
        "Simulated option 'conversion', entry 'slope': Input should be a valid number (got 'a')",
    ),
    "union_mapping_of_tagged": (
        HEAD + "sensors = [Simulated(name='a', conversion={'value': {'kind': 'linear', 'slop': 2}})]\n",
        2,
        "Simulated option 'conversion', entry 'value', entry 'slop': Extra inputs are not permitted (got 2)",
    ),
    # What config.py does while being loaded.
    "sys_exit": (HEAD + "import sys\nsys.exit(3)\n", 3, "config.py called sys.exit(3) while being loaded"),
    "keyboard_interrupt": (HEAD + "raise KeyboardInterrupt\n", 2, "KeyboardInterrupt raised while config.py was"),
    "nul_byte": (HEAD + "x = 1\ny = '\0'\n", 3, "a NUL byte: config.py must be a text file"),
    "not_utf8_without_coding_line": (HEAD + "d = '\xe9t\xe9'\n", 2, "syntax error: (unicode error) 'utf-8' codec"),
}


def fieldstation(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fieldstation.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_reports_one_line_naming_file_and_line(case: str, tmp_path: Path) -> None:
    source, line, message = BAD[case]
    path = tmp_path / "config.py"
    path.write_bytes(source.encode("latin-1" if case == "not_utf8_without_coding_line" else "utf-8"))
    result = fieldstation("check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert len(err) == 1, result.stderr
    where = f"{path}:{line}: " if line else f"{path}: "
    assert err[0].startswith(f"fieldstation: {where}"), err[0]
    assert message in err[0]
    assert "Traceback" not in result.stderr
    assert "tuple[float" not in err[0] and "tagged-union" not in err[0]  # no pydantic internals


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


def test_check_reports_every_mistake_in_one_run_each_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        HEAD  # 1
        + "from fieldstation import Sensor\n"
        + "class NoRead(Sensor):\n"  # 3
        + "    pass\n"
        + "sensors = [\n"
        + "    Simulated(\n"
        + "        name='a',\n"
        + "        intervall=5,\n"  # 8
        + "        limits={'valeu': (2, 8)},\n"  # 9
        + "    ),\n"
        + "    Simulated(name='b', valid_range=(1, 'x')),\n"  # 11
        + "    Simulated(name='c', limits={'value': (8, 2)}),\n"  # 12
        + "    Simulated(name='d', interval=float('inf'),\n"  # 13
        + "              timeout=1e300),\n"  # 14
        + "    NoRead(name='e'),\n"
        + "    Simulated(name='e'),\n"  # 16
        + "]\n"
    )
    result = fieldstation("check", str(path))
    assert result.returncode == 2 and result.stdout == ""
    lines = [line.removeprefix(f"fieldstation: {path}:") for line in result.stderr.splitlines()]
    assert lines == [
        "3: NoRead has no read() method: define def read(self) returning a number or fields",
        "8: unknown option 'intervall' for Simulated (did you mean 'interval'?)",
        "9: limits names the field 'valeu', which is not among the fields Simulated produces (value)"
        " (did you mean 'value'?)",
        "11: Simulated option 'valid_range', item 2: Input should be a valid number (got 'x')",
        "12: Simulated option 'limits': limits of 'value': low must be below high (got 8, 2)",
        "13: Simulated option 'interval': interval must be at most 86400 s, a day (got inf)",
        "14: Simulated option 'timeout': timeout must be above 0 and at most 3600 s (got 1e+300)",
        f"16: duplicate sensor name 'e' (first defined at {path}:15)",
    ], result.stderr


def test_a_sensor_class_declares_its_fields_and_check_holds_the_options_to_them(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        "from typing import ClassVar\n"
        "from fieldstation import Sensor\n"
        "class Hygro(Sensor):\n"
        "    fields: ClassVar[tuple[str, ...]] = ('temperature', 'humidity')\n"
        "    def read(self) -> dict[str, float]:\n"
        "        return {'temperature': 21.0, 'humidity': 40.0}\n"
        "sensors = [Hygro(name='h', unit={'temperature': '°C', 'humidity': '%'}, limits={'humidty': (20, 60)})]\n"
    )
    result = fieldstation("check", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"fieldstation: {path}:7: limits names the field 'humidty', which is not among the fields Hygro produces"
        " (temperature, humidity) (did you mean 'humidity'?)"
    )
    path.write_text(path.read_text().replace("humidty", "humidity"))
    assert [s.declared_fields() for s in load_sensors(path)] == [["temperature", "humidity"]]


def test_without_declared_fields_the_limits_must_name_a_field_unit_names(tmp_path: Path) -> None:
    # The dashboards show the fields `unit` names: a limit on another one would have no panel.
    path = tmp_path / "config.py"
    path.write_text(
        "from fieldstation import Sensor\n"
        "class Hygro(Sensor):\n"
        "    def read(self) -> dict[str, float]:\n"
        "        return {'t': 21.0, 'rh': 40.0}\n"
        "sensors = [Hygro(name='h', unit={'t': '°C', 'rh': '%'}, limits={'r': (20, 60)})]\n"
    )
    result = fieldstation("check", str(path))
    assert result.stderr.strip() == (
        f"fieldstation: {path}:5: limits names the field 'r', which is not among the fields `unit` names (t, rh)"
        " (did you mean 'rh'?)"
    )


def test_a_config_looping_at_import_is_reported_after_the_time_limit(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(HEAD + "sensors = [Simulated(name='a')]\nwhile True:\n    pass\n")
    result = fieldstation("check", str(path))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith((f"fieldstation: {path}:3: ", f"fieldstation: {path}:4: "))  # in the loop
    assert line.endswith(
        ": still running after 20 s while being loaded (an endless loop, or a call that waits?);"
        " config.py should only define sensors"
    )


def test_a_thread_started_at_import_does_not_keep_check_from_exiting(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        HEAD + "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), name='poller', daemon=False).start()\n"
        "sensors = [Simulated(name='a')]\n"
    )
    result = fieldstation("check", str(path))  # times out after 60 s if the thread keeps it alive
    assert result.returncode == 0
    assert result.stdout.startswith(f"{path}: OK, 1 sensors")
    assert result.stderr.strip() == f"fieldstation: {path}: warning: it starts a thread (poller) that keeps running"


def test_a_pep_263_coding_line_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_bytes(
        b"# -*- coding: latin-1 -*-\n" + HEAD.encode() + b"sensors = [Simulated(name='a', description='\xe9t\xe9')]\n"
    )
    result = fieldstation("check", str(path))
    assert result.returncode == 0, result.stderr
    assert [s.description for s in load_sensors(path)] == ["été"]
