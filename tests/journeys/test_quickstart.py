"""The README's quick start, walked as a new user walks it, from a fresh clone.

The README's first command (taken from README.md, run as written by bash in the clone) starts the demo; while it
runs, the `fieldstation status`, `sensors` and `doctor` commands it prints (the ones the README lists) run from
"another terminal" and must each see the demo: its sink and spool, the example's sensors with live values, and
InfluxDB answering. Ctrl-C is what a terminal sends: SIGINT to the demo's whole process group; the demo must then
exit 0 with its summary and leave no InfluxDB or files behind. A second start must do no pip work.

Isolation only, no new paths: the venv goes to a temporary directory through $FIELDSTATION_VENV and the demo's
state through $XDG_STATE_HOME (both documented in the README), so the shared venv and the user's state stay
untouched. pip's indexes are this machine's own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.agent import wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
BANNER_END = "Ctrl-C stops the demo."
#: The README's spellings of the venv and the state home, which the demo prints as absolute paths.
README_VENV, README_STATE = ".venv-3.11", "~/.local/state"
#: Some of the example's sensors: simulated ones, and the host's own (driver pi).
SENSORS = ("cryo_temp", "mains", "room_temp", "pi")


def readme_blocks() -> list[list[str]]:
    """The README's ```sh blocks, as lines."""
    return [b.strip("\n").splitlines() for b in re.findall(r"^```sh\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)]


def command_part(line: str) -> str:
    return line.split("#", 1)[0].strip()


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # the terminal's SIGINT goes to the whole foreground group
        return self.wait()

    def wait(self) -> int:
        rc = self.proc.wait(60)
        self.reader.join(10)  # every line read, up to the summary
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    dest = tmp_path / "fieldstation"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=120)
    return dest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FIELDSTATION_VENV": str(tmp_path / "venv"), "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def start(clone: Path, env: dict[str, str]) -> Iterator[Callable[[float], Demo]]:
    first = command_part(readme_blocks()[0][0])
    assert first == "agent/demo", f"the README's first command changed: {first!r}"
    started: list[Demo] = []

    def run(banner_timeout: float) -> Demo:
        proc = subprocess.Popen(
            ["bash", "-c", first], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        demo = Demo(proc)
        started.append(demo)
        wait_for(lambda: BANNER_END in demo.lines or proc.poll() is not None, banner_timeout, "the demo's banner")
        assert BANNER_END in demo.lines, demo.out
        return demo

    yield run
    for demo in started:
        if demo.proc.poll() is None:  # a failed test: its demo stopped as Ctrl-C would
            os.killpg(demo.proc.pid, signal.SIGINT)
        if demo.proc.stdout is not None and not demo.proc.stdout.closed:
            demo.wait()


def shell(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A line pasted into another terminal."""
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def test_the_quick_start_from_a_fresh_clone(start: Callable[[float], Demo], env: dict[str, str], tmp_path: Path) -> None:
    venv, state = Path(env["FIELDSTATION_VENV"]), Path(env["XDG_STATE_HOME"])
    demo: Demo = start(400)  # the first start creates the venv: pip, once
    assert "== installing the agent and its core dependencies" in demo.out
    # The demo installs only what it runs: no test tools, no hardware extras.
    for module in ("pytest", "mypy", "pymodbus", "pyarrow", "smbclient"):
        found = subprocess.run([venv / "bin/python", "-c", f"import importlib.util as u; print(u.find_spec('{module}'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert found == "None", f"{module} installed by the demo: {found}"
    assert "Grafana is not part of the demo: on a Pi it is at http://<host>.local:3000" in demo.out

    influx_url = re.search(r"^InfluxDB (http://127\.0\.0\.1:\d+) ", demo.out, re.M)
    assert influx_url, demo.out
    printed = {cmd.split()[1]: line.strip() for line in demo.lines if (cmd := command_part(line)).startswith(str(venv))}
    assert set(printed) == {"status", "sensors", "doctor"}, demo.out
    # What the demo prints is what the README lists, up to where the venv and the state home are.
    readme = [command_part(line) for line in readme_blocks()[1]]
    as_readme = [command_part(printed[c]).replace(str(venv), README_VENV).replace(str(state), README_STATE)
                 for c in ("status", "sensors", "doctor")]
    assert as_readme == readme

    def status() -> subprocess.CompletedProcess[str]:
        return shell(printed["status"], env, tmp_path)

    wait_for(lambda: (r := status()).returncode == 0 and "never" not in r.stdout, 60, "the demo's first write")
    result = status()
    assert f"spool {state}/fieldstation/demo/spool.db" in result.stdout, result.stdout + result.stderr
    assert re.search(r"^demo +\d+ +[\d.]+s +0  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", result.stdout, re.M), result.stdout

    def sensors_live() -> bool:  # the example's own sensors, each with a value (the state is written every 5 s)
        result = shell(printed["sensors"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        return all(re.search(rf"^{s} +\S+ +[\d.]+s  ok +\S+=", result.stdout, re.M) for s in SENSORS)

    wait_for(sensors_live, 60, f"`sensors` to list {', '.join(SENSORS)} with values")

    result = shell(printed["doctor"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"^influxdb +OK +{re.escape(influx_url[1])} db fieldstation", result.stdout, re.M), result.stdout
    assert re.search(r"^agent +OK +state updated", result.stdout, re.M), result.stdout
    assert re.search(r"^spool +OK +demo \d+ points", result.stdout, re.M), result.stdout

    assert demo.ctrl_c() == 0, demo.out
    last = demo.lines[-1]
    assert last.startswith("stopped: ") and int(last.split("InfluxDB holds ")[1].split()[0]) > 0, demo.out
    assert not (state / "fieldstation" / "demo").exists()  # the demo's files are gone…
    assert processes_mentioning(str(state)) == []  # …and so is its InfluxDB

    # The second start: no pip work, since the lock did not change.
    demo = start(120)
    assert f"== {venv} is up to date with agent/requirements.lock: no pip work" in demo.lines, demo.out
    assert not any(line.startswith(("== installing", "== creating")) for line in demo.lines), demo.out
    assert demo.ctrl_c() == 0, demo.out
    assert demo.lines[-1].startswith("stopped: "), demo.out
