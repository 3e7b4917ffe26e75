"""The `fieldstation` command: once, sensors, status, demo, and one-line errors for bad settings."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fieldstation import cli
from fieldstation.simulators import DEFAULT_PORTS
from harness.agent import fieldstation_cmd, start_agent_process, wait_for

CONFIG = """\
from fieldstation.sensors.simulated import Simulated
sensors = {
    "Room": [Simulated(name="temp", unit="K", signal="constant", value=4.2)],
    "Bad": [Simulated(name="broken", fault="raise")],
}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fieldstation_cmd(*args), capture_output=True, text=True, timeout=120)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.py"
    path.write_text(CONFIG)
    return path


def test_once_prints_readings_errors_and_a_timing_table(config: Path) -> None:
    result = run("once", "-n", "3", "--timing", str(config))
    assert result.returncode == 1  # a sensor failed on every pass
    out = result.stdout
    assert out.count("temp               value=4.2 K") == 3
    # Each failure once (the scheduler's log line would repeat it), with where config.py defines the sensor.
    assert out.count(f"broken             ERROR {config}:4: SensorError: simulated failure") == 3
    assert "simulated failure" not in result.stderr
    table = out[out.index("sensor ") :].splitlines()
    assert table[0].split() == ["sensor", "driver", "reads", "errors", "min", "ms", "mean", "ms", "max", "ms"]
    assert table[1].split()[:4] == ["temp", "simulated", "3", "0"]
    assert table[2].split()[:4] == ["broken", "simulated", "3", "3"]
    assert "Traceback" not in result.stdout + result.stderr


def test_once_verbose_shows_the_traceback(config: Path) -> None:
    result = run("once", "--verbose", str(config))
    assert "Traceback" in result.stderr and "simulated.py" in result.stderr


def test_once_succeeds_when_every_sensor_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.py"
    path.write_text("from fieldstation.sensors.simulated import Simulated\nsensors = [Simulated(name='a')]\n")
    assert run("once", str(path)).returncode == 0


def test_sensors_lists_every_sensor_even_when_the_agent_is_not_running(config: Path, tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(f'config = "{config}"\nstate_file = "{tmp_path / "state.json"}"\n')
    result = run("sensors", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["temp", "broken"]
    assert all("not running" in r for r in rows)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("spool = 3\n", "spool: Input should be a valid dictionary"),
        ("colour = 'red'\n", "colour: unknown option"),
        ("[[sinks]]\nname = 'x'\nurl = 'ftp://host'\n", "sinks.0.url: must start with http:// or https://"),
        ("[spool\n", "Expected ']'"),
    ],
)
def test_bad_settings_give_one_line(tmp_path: Path, toml: str, message: str) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(toml)
    result = run("run", "--settings", str(settings))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"fieldstation: {settings}: ") and message in result.stderr


def test_status_without_a_spool_says_so(tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(f'[spool]\npath = "{tmp_path / "none.db"}"\n')
    result = run("status", "--settings", str(settings))
    assert result.returncode == 2
    assert "no spool yet" in result.stderr


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the simulators do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_demo_runs_the_example_against_a_local_influxdb(tmp_path: Path) -> None:
    simulators_can_start = all(port_is_free(DEFAULT_PORTS[name]) for name in ("arduino", "http"))
    (tmp_path / "tmp").mkdir()
    result = subprocess.run(
        fieldstation_cmd("demo", "--duration", "4"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    # The throwaway InfluxDB, the demo's settings, spool and state: all gone (the lock stays for the next demo).
    assert [p.name for p in (tmp_path / "state" / "fieldstation").iterdir()] == ["demo.lock"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert result.returncode == 0, result.stderr
    assert "cryo_temp" in result.stdout and "mains" in result.stdout and "  pi " in result.stdout
    if simulators_can_start:  # the example's Arduino and HTTP entries read the demo's simulators
        assert "  due " in result.stdout and "  roof " in result.stdout, result.stdout
    else:  # something else holds the example's fixed ports: the demo says so and runs the rest
        assert "simulators not started" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("stopped: ") and "InfluxDB holds" in last
    held = int(last.split("InfluxDB holds ")[1].split()[0])
    assert held > 10


def test_run_with_an_unusable_spool_gives_one_line(config: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    settings = tmp_path / "agent.toml"
    settings.write_text(f'config = "{config}"\n[spool]\npath = "{tmp_path / "not-a-dir" / "spool.db"}"\n')
    result = run("run", "--settings", str(settings))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"fieldstation: {tmp_path / 'not-a-dir' / 'spool.db'}: cannot open the spool: [Errno ")


def test_once_with_timing_runs_against_the_simulators_of_fieldstation_simulate(tmp_path: Path) -> None:
    sim_dir = tmp_path / "sim"
    log = tmp_path / "simulate.log"
    with log.open("w") as out:
        sim = subprocess.Popen(
            fieldstation_cmd("simulate", "--dir", str(sim_dir), "--free-ports", "--duration", "100"),
            stdout=out,
            stderr=out,
        )
    try:
        wait_for(lambda: (sim_dir / "config.py").exists() or sim.poll() is not None, 30, "simulate to write config.py")
        assert sim.poll() is None, log.read_text()
        result = run("once", "-n", "3", "--timing", str(sim_dir / "config.py"))
    finally:
        sim.terminate()
        sim.wait(15)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("sensor ", 1)[1]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert set(rows) == {"we515", "sdm630", "rtu_we515", "rtu_sdm120", "due", "roof", "pi"}
    for name, row in rows.items():
        assert row[2:4] == ["3", "0"], f"{name}: {row}"  # 3 reads, 0 errors
    assert "active_energy=" in result.stdout and "pressure=" in result.stdout and "temp=" in result.stdout
    assert sim.returncode == 0, log.read_text()


def test_record_appends_a_point_the_agent_forwards(tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(f'[spool]\npath = "{tmp_path / "spool.db"}"\n[[sinks]]\nname = "local"\n')
    result = run(
        "record",
        "fieldstation_backup",
        "--tag",
        "kind=backup",
        "--field",
        "ok=true",
        "--field",
        "bytes=12i",
        "--field",
        "duration_s=4.5",
        "--field",
        "share=//nas/backup",
        "--settings",
        str(settings),
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith('fieldstation_backup,kind=backup ok=true,bytes=12i,duration_s=4.5,share="//nas/backup" ')
    from fieldstation.spool import Spool

    spool = Spool(tmp_path / "spool.db", sinks=["local"])
    try:
        assert spool.backlog("local").depth == 1
    finally:
        spool.close()
    bad = run("record", "x", "--field", "oops", "--settings", str(settings))
    assert bad.returncode == 2 and bad.stderr.strip() == "fieldstation: --field 'oops': expected key=value"


def test_once_fails_when_any_read_failed_not_only_when_every_pass_did(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        "from fieldstation.sensors.simulated import Simulated\n"
        "sensors = [Simulated(name='flaky', fault='raise', fault_after=1)]\n"
    )
    result = run("once", "-n", "2", str(path))
    assert result.returncode == 1
    assert result.stdout.count("ERROR") == 1


USER_ERROR = """\
from fieldstation import Sensor


def parse(text):
    return float(text)


class Probe(Sensor):
    def read(self) -> float:
        return parse("n/a")


sensors = [Probe(name="probe")]
"""


def test_once_prints_each_error_once_with_the_line_of_config_py(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(USER_ERROR)
    result = run("once", str(path))
    assert result.returncode == 1
    both = result.stdout + result.stderr
    assert both.count("could not convert string to float") == 1, both
    assert f"probe              ERROR {path}:5: ValueError: could not convert string to float: 'n/a'" in result.stdout


def test_once_verbose_shows_the_frames_of_config_py_first(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(USER_ERROR)
    result = run("once", "--verbose", str(path))
    frames = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("File ")]
    assert frames[:2] == [f'File "{path}", line 10, in read', f'File "{path}", line 5, in parse'], result.stderr
    assert "fieldstation frames above config.py trimmed" in result.stderr


def test_once_warns_when_a_read_returns_fields_the_sensor_does_not_declare(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(
        "from typing import ClassVar\n"
        "from fieldstation import Sensor\n"
        "class Hygro(Sensor):\n"
        "    fields: ClassVar[tuple[str, ...]] = ('t',)\n"
        "    def read(self) -> dict[str, float]:\n"
        "        return {'t': 21.0, 'rh': 40.0}\n"
        "sensors = [Hygro(name='h')]\n"
    )
    result = run("once", "-n", "2", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert warnings == [
        f"pass 1  h                  WARNING {path}:7: read() returned fields it does not declare: rh (declared: t)"
    ]


def _agent_toml(tmp_path: Path, config: Path) -> Path:
    settings = tmp_path / "agent.toml"
    with socket.socket() as s:  # a sink nobody listens on: the readings stay in the spool
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.write_text(
        f'config = "{config}"\nstate_file = "{tmp_path / "state.json"}"\n'
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
        f'[[sinks]]\nname = "down"\nurl = "http://127.0.0.1:{port}"\ntimeout = 1\n'
    )
    return settings


def test_run_stops_on_sigterm_although_config_py_started_a_thread(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text(
        "import threading, time\n"
        "from fieldstation.sensors.simulated import Simulated\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()\n"
        "sensors = [Simulated(name='t', interval=0.2)]\n"
    )
    proc = start_agent_process(_agent_toml(tmp_path, config), tmp_path / "agent.log")
    try:
        wait_for((tmp_path / "state.json").exists, 30, "the agent's state file")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "agent.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_run_refuses_a_config_that_loops_at_import_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text(
        "from fieldstation.sensors.simulated import Simulated\nsensors = [Simulated(name='t')]\nwhile True:\n    pass\n"
    )
    result = subprocess.run(
        fieldstation_cmd("run", "--settings", str(_agent_toml(tmp_path, config))),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"fieldstation: {config}:") and "still running after 20 s while being loaded" in line


#: What `fieldstation --help` must not import: it runs no command, so it needs no model, event loop, HTTP or SQLite
#: (issue 19: startup is felt on a Pi 3; bench/startup_bench.py prints the CPU it costs).
HEAVY_FOR_HELP = ("pydantic", "fieldstation.sensor", "fieldstation.settings", "asyncio", "sqlite3", "urllib.request")


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["once", "--help"], ["backup", "--help"]])
def test_help_imports_no_pydantic_or_other_heavy_module(argv: list[str]) -> None:
    probe = (
        "import sys\nfrom fieldstation.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'fieldstation', 'asyncio',"
        " 'sqlite3', 'urllib'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.splitlines()[-1].split())
    assert "fieldstation.cli" in loaded  # the probe ran the real CLI
    assert not {m for m in loaded if m in HEAVY_FOR_HELP or m.startswith("pydantic.")}


def test_a_config_error_from_a_lazily_imported_module_is_still_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text("from fieldstation.sensors.simulated import Simulated\nsensors = [Simulated(name='t', bogus=1)]\n")
    result = run("check", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"fieldstation: {config}:2:")


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_own_commands_are_exactly_those_the_cli_defines_without_its_feature_modules() -> None:
    own = _commands(cli.build_parser(features=False))
    assert own == cli.OWN_COMMANDS
    assert _commands(cli.build_parser()) - own >= {"doctor", "backup", "firstboot"}


def test_check_parses_without_the_feature_modules_and_help_lists_them(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text(CONFIG)
    probe = (
        "import sys\nfrom fieldstation.cli import main\nrc = main(sys.argv[1:])\n"
        "print('firstboot' in ' '.join(sys.modules), rc)"
    )
    for argv, features in ((["--log-level", "warning", "check", str(config)], "False 0"), (["once", "-n", "x"], None)):
        result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
        if features is None:  # a usage error of an own command still names it
            assert result.returncode == 2 and "fieldstation once: error: argument -n: invalid int value" in result.stderr
        else:
            assert result.stdout.splitlines()[-1] == features, result.stderr
    assert "doctor" in run("--help").stdout
