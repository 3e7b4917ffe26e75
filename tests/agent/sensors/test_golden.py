"""Golden cases, Telegraf style: captured input → expected line protocol, one folder per case.

``testcases/<driver>/<case>/`` holds the captured input and ``expected.lp``. The module
``golden/<driver>.py`` has ``run(case_dir) -> (sensor, raw)``: it builds the sensor from the case's
options and decodes the input with the driver's own pure decoder. The core's ``process`` then makes the
readings, timestamped at a fixed instant, and they must equal ``expected.lp`` line for line. A case with
``expected_error.txt`` instead must fail with exactly that one-line SensorError.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fieldstation.sensor import SensorError, process

HERE = Path(__file__).parent
CASES = sorted(p for p in (HERE / "testcases").glob("*/*") if p.is_dir())
T0 = 1_700_000_000_000_000_000


def test_there_are_golden_cases() -> None:
    assert CASES, "no golden cases found under testcases/"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_golden_case(case: Path) -> None:
    adapter = importlib.import_module(f"agent.sensors.golden.{case.parent.name}")
    error = case / "expected_error.txt"
    if error.exists():
        with pytest.raises(SensorError) as exc:
            adapter.run(case)
        assert str(exc.value) == error.read_text().strip()
        return
    sensor, raw = adapter.run(case)
    processed = process(sensor, raw, T0)
    assert not processed.invalid
    got = [r.to_line() for r in processed.readings]
    expected = (case / "expected.lp").read_text().splitlines()
    assert got == expected
