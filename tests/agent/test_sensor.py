"""The Sensor contract and what the core makes of a raw read (process)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from fieldstation.conversion import Linear, PowerOfTen
from fieldstation.reading import Reading
from fieldstation.sensor import MissingExtra, Sensor, process
from fieldstation.sensors.simulated import Simulated

T = 1_700_000_000_000_000_000


class Thermo(Sensor):
    driver = "thermo"

    def read(self) -> float:
        return 21.5


def test_a_number_becomes_the_value_field_with_sensor_and_unit_tags() -> None:
    s = Thermo(name="t1", unit="°C", tags={"room": "lab"})
    (r,) = process(s, 21.5, T).readings
    assert r == Reading("thermo", {"value": 21.5}, {"room": "lab", "sensor": "t1", "unit": "°C"}, T)


def test_multi_value_readings_are_grouped_by_unit() -> None:
    s = Thermo(name="m", unit={"u": "V", "i": "A", "u2": "V"})
    readings = process(s, {"u": 230.0, "i": 1.5, "u2": 231.0}, T).readings
    assert {r.tags["unit"]: r.fields for r in readings} == {"V": {"u": 230.0, "u2": 231.0}, "A": {"i": 1.5}}


def test_conversion_then_precision() -> None:
    s = Thermo(name="t", conversion=Linear(slope=100.0, offset=-50.0), precision=1)
    assert process(s, 0.7123, T).readings[0].fields == {"value": 21.2}


def test_conversion_per_field() -> None:
    s = Thermo(name="t", conversion={"p": PowerOfTen(b=1.0)})
    assert process(s, {"p": 2.0, "q": 2.0}, T).readings[0].fields == {"p": 100.0, "q": 2.0}


def test_out_of_range_values_are_dropped_and_counted() -> None:
    s = Thermo(name="t", valid_range=(-50, 150))
    out = process(s, {"a": 20.0, "b": 999.0}, T)
    assert out.out_of_range == 1
    assert out.readings[0].fields == {"a": 20.0}


def test_out_of_range_values_can_be_stored_with_a_flag() -> None:
    s = Thermo(name="t", valid_range=(-50, 150), out_of_range="flag")
    out = process(s, 999.0, T)
    assert out.out_of_range == 1
    assert out.readings[0].fields == {"value": 999.0, "out_of_range": True}


def test_garbage_and_nan_are_invalid_not_stored() -> None:
    s = Thermo(name="t")
    assert process(s, {"a": math.nan}, T).invalid == ["field 'a' is nan"]
    assert process(s, "garbage", T).invalid
    assert not process(s, None, T).readings


def test_drivers_may_return_full_readings() -> None:
    s = Thermo(name="ups", unit={"charge": "%"})
    (r,) = process(s, [Reading("ups", {"charge": 80.0}, {}, T)], T).readings
    assert r.tags == {"sensor": "ups", "unit": "%"}


def test_interval_must_be_at_least_a_tenth_of_a_second() -> None:
    with pytest.raises(ValidationError, match=r"interval must be at least 0\.1 s"):
        Thermo(name="t", interval=0)
    assert Thermo(name="t", interval=0.1).interval == 0.1


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Thermo(name="t", intervall=3)


def test_valid_range_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="low must be below high"):
        Thermo(name="t", valid_range=(10, 0))


def test_a_missing_extra_names_the_pip_extra() -> None:
    class Needy(Sensor):
        driver = "needy"
        requires = ("no_such_module_here",)

    with pytest.raises(MissingExtra, match=r"pip install 'fieldstation\[needy\]'"):
        Needy(name="n")


def test_default_timeout_follows_the_interval() -> None:
    assert Thermo(name="t", interval=0.1).read_timeout == 1.0
    assert Thermo(name="t", interval=5).read_timeout == 5.0
    assert Thermo(name="t", interval=600).read_timeout == 30.0
    assert Thermo(name="t", interval=5, timeout=0.5).read_timeout == 0.5


@pytest.mark.parametrize(
    ("signal", "check"),
    [
        ("constant", lambda xs: set(xs) == {5.0}),
        ("sine", lambda xs: all(4.0 <= x <= 6.0 for x in xs)),
        ("ramp", lambda xs: all(5.0 <= x < 6.0 for x in xs)),
        ("step", lambda xs: set(xs) <= {5.0, 6.0}),
        ("random_walk", lambda xs: len(set(xs)) == len(xs)),
    ],
)
def test_simulated_signals(signal: str, check: object) -> None:
    import asyncio

    s = Simulated(name="s", signal=signal, value=5.0, amplitude=1.0, period=0.05, seed=3)
    xs = [asyncio.run(s.read())["value"] for _ in range(20)]
    assert callable(check) and check(xs), xs


def test_simulated_faults_start_after_and_repeat() -> None:
    import asyncio

    s = Simulated(name="s", fault="nan", fault_after=2, fault_every=2, signal="constant", value=1.0)
    xs = [asyncio.run(s.read())["value"] for _ in range(6)]
    assert [math.isnan(x) for x in xs] == [False, False, True, False, True, False]
