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


#: (what read() returned, the problem counted, the fields kept): a bad field is dropped and the rest kept; a read
#: over a whole-read limit (fields, text) is refused whole (issue 16).
BAD_RETURNS = [
    pytest.param({1: 2.0}, "field name 1 is int, not a string", {}, id="non-string-name"),
    pytest.param(10**400, "beyond a float", {}, id="overflow"),
    pytest.param({}, "read() returned no fields", {}, id="no-fields"),
    pytest.param([], "read() returned no fields", {}, id="no-readings"),
    pytest.param({"": 1.0, "ok": 2.0}, "field name '' is empty", {"ok": 2.0}, id="empty-name"),
    pytest.param({"time": 1.0}, "field name 'time' is reserved by InfluxDB", {}, id="time"),
    pytest.param({"a\nb": 1.0}, "field name 'a\\nb' contains a backslash or a control character", {}, id="newline"),
    pytest.param({"a\\": 1.0}, "contains a backslash", {}, id="backslash"),
    pytest.param({"\ud800": 1.0}, "is not valid Unicode text", {}, id="surrogate"),
    pytest.param({"n" * 256: 1.0}, "is longer than 255 characters", {}, id="long-name"),
    pytest.param({"a": math.inf, "b": 1.0}, "field 'a' is inf", {"b": 1.0}, id="inf"),
    pytest.param({"a": [1]}, "field 'a' is list, not a number", {}, id="list-value"),
    pytest.param({"s": "x" * 65537}, "field 's' is a string of over 65536 bytes", {}, id="long-string"),
    pytest.param({"s": "é" * 40000}, "(80000 bytes)", {}, id="long-utf8-string"),
    pytest.param({"s": "x" * 26_000_000}, "field 's' is a string of over 65536 bytes", {}, id="26MB-string"),
    pytest.param({f"f{i}": 1.0 for i in range(100_000)}, "more than the limit of 1000", {}, id="100000-fields"),
    pytest.param({f"s{i}": "x" * 65536 for i in range(17)}, "over 1048576 bytes of text", {}, id="over-1MiB-text"),
]


@pytest.mark.parametrize(("raw", "problem", "kept"), BAD_RETURNS)
def test_what_cannot_be_stored_is_dropped_and_counted(raw: object, problem: str, kept: dict[str, float]) -> None:
    out = process(Thermo(name="t"), raw, T)
    assert out.invalid and problem in out.invalid[0], out.invalid
    assert [r.fields for r in out.readings] == ([kept] if kept else [])
    for r in out.readings:
        r.to_line()  # what is kept encodes


class Understated(dict[str, float]):
    def __len__(self) -> int:
        return 1


def test_a_mapping_understating_its_length_is_still_bounded() -> None:
    out = process(Thermo(name="t"), Understated({f"f{i}": 1.0 for i in range(5000)}), T)
    assert out.invalid == ["read() returned more than 1000 fields, the limit per read"] and not out.readings


def test_reads_at_the_limits_are_kept_whole() -> None:
    many = process(Thermo(name="t"), {f"f{i}": float(i) for i in range(1000)}, T)
    text = process(Thermo(name="t"), {f"s{i}": "x" * 65536 for i in range(16)}, T)
    assert not many.invalid and len(many.readings[0].fields) == 1000
    assert not text.invalid and len(text.readings[0].fields) == 16


def test_a_conversion_overflowing_drops_the_field() -> None:
    s = Thermo(name="t", conversion=PowerOfTen(b=1.0))
    assert process(s, {"p": 1e6, "q": 1.0}, T).invalid == ["field 'p' is 1000000.0, beyond a float"]


def test_drivers_own_readings_are_checked_like_any_other() -> None:
    s = Thermo(name="ups")
    out = process(
        s, [Reading("ups", {"a": math.nan, "b": 1 << 63, "ok": 1}, {}, T), Reading("ups", {"": 1.0}, {}, T)], T
    )
    assert [r.fields for r in out.readings] == [{"ok": 1}]
    assert out.invalid == [
        "field 'a' is nan",
        "field 'b' is 9223372036854775808, beyond a 64-bit integer",
        "field name '' is empty",
    ]
    assert out.summary() == "field 'a' is nan (and 2 more fields)"


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


# -- what `check` holds a sensor to --------------------------------------------------------------------


def test_interval_and_timeout_are_bounded() -> None:
    with pytest.raises(ValidationError, match=r"interval must be at most 86400 s, a day \(got inf\)"):
        Thermo(name="t", interval=math.inf)
    with pytest.raises(ValidationError, match=r"timeout must be above 0 and at most 3600 s \(got 1e\+300\)"):
        Thermo(name="t", timeout=1e300)
    with pytest.raises(ValidationError, match="timeout must be above 0"):
        Thermo(name="t", timeout=0)
    assert Thermo(name="t", interval=86_400, timeout=3_600).read_timeout == 3_600


def test_limits_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match=r"limits of 'value': low must be below high \(got 8, 2\)"):
        Thermo(name="t", limits={"value": (8, 2)})
    assert Thermo(name="t", limits={"value": (-math.inf, 8)}).limits == {"value": (-math.inf, 8)}


def test_read_must_exist_and_take_only_self() -> None:
    class NoRead(Sensor):
        pass

    class Channel(Sensor):
        def read(self, channel: int) -> float:
            return float(channel)

    class Retries(Sensor):
        def read(self, retries: int = 3) -> float:
            return float(retries)

    class Async(Sensor):
        async def read(self) -> float:
            return 1.0

    assert NoRead.read_problem() == "NoRead has no read() method: define def read(self) returning a number or fields"
    assert (
        Channel.read_problem()
        == "Channel.read(self, channel: 'int') -> 'float' must take only self: the scheduler calls read()"
    )
    assert [Retries.read_problem(), Async.read_problem(), Thermo.read_problem()] == [None, None, None]


def test_per_field_options_are_held_to_the_declared_fields() -> None:
    s = Simulated(name="s", fields=["t", "rh"], unit={"t": "K"}, limits={"rh": (0, 100), "hr": (0, 1)})
    assert s.field_problems() == [
        ("limits", "hr", "limits names the field 'hr', which is not among the fields Simulated produces (t, rh)")
    ]
    # Nothing declared and no unit mapping: nothing to check against.
    assert Thermo(name="t", limits={"anything": (0, 1)}).field_problems() == []


def test_the_drivers_declare_the_fields_they_produce() -> None:
    from fieldstation.sensors.arduino import Arduino
    from fieldstation.sensors.http_json import HttpJson
    from fieldstation.sensors.modbus import Modbus
    from fieldstation.sensors.pi import Pi

    assert Arduino(name="a", host="127.0.0.1", channels={0: "flow", 3: "level"}).declared_fields() == ["flow", "level"]
    assert HttpJson(name="h", url="http://127.0.0.1/", fields={"t": "a.t", "p": "a.p"}).declared_fields() == ["t", "p"]
    meter = Modbus(name="m", model="orno_we515", port="/dev/null")
    assert meter.declared_fields() == meter.dashboard_fields() and "active_power" in meter.declared_fields()
    assert set(meter.unit) <= set(meter.declared_fields())
    only = Modbus(name="m", model="orno_we515", port="/dev/null", fields=["active_power"])
    assert only.declared_fields() == ["active_power"]
    pi = Pi(name="pi", mounts=["/", "/data"])
    declared = pi.declared_fields()
    assert {"disk_used_percent_data", "disk_available_root", "under_voltage", "soc_temp"} <= set(declared)
    assert set(pi.unit) <= set(declared)  # the driver's own units never fail the check
    assert pi.field_problems() == []


def test_what_the_drivers_return_is_what_they_declare() -> None:
    from fieldstation.sensors.pi import Pi

    pi = Pi(name="pi")
    pi.read()
    assert set(pi.read()) <= set(pi.declared_fields())  # this machine's /proc and /sys
    sim = Simulated(name="s", fields=["a", "b"])
    assert set(process(sim, sim._sample("none", sim._run), T).readings[0].fields) == {"a", "b"}


def test_a_plan_kept_across_reads_still_checks_every_value() -> None:
    """The scheduler keeps one Plan per sensor (issue 19): names found valid are remembered, values never are."""
    from fieldstation.sensor import Plan

    s = Thermo(name="t", unit="V")
    plan = Plan(s)
    assert process(s, {"a": 1.0}, T, plan).readings[0].fields == {"a": 1.0}
    assert process(s, {"a": math.inf}, T, plan).invalid == ["field 'a' is inf"]
    assert "field 'a' is a string of over 65536 bytes" in process(s, {"a": "x" * 65537}, T, plan).invalid[0]
    assert process(s, {"time": 1.0}, T, plan).invalid == ["field name 'time' is reserved by InfluxDB"]
    assert process(s, {"a": 2}, T, plan).readings[0].fields == {"a": 2.0}  # an int, as a float like before
    assert plan.checked == {"a"}


def test_a_plan_remembers_a_bounded_number_of_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver inventing field names on every read does not grow the plan: beyond the bound, names are checked
    each time."""
    from fieldstation import sensor
    from fieldstation.sensor import Plan

    monkeypatch.setattr(sensor, "MAX_CHECKED_NAMES", 5)
    s = Thermo(name="t")
    plan = Plan(s)
    for i in range(20):
        assert process(s, {f"f{i}": 1.0}, T, plan).readings[0].fields == {f"f{i}": 1.0}
    assert len(plan.checked) == 5


def test_each_reading_has_tags_of_its_own() -> None:
    """A driver adding a tag to one reading (the mqtt driver's topic) does not add it to the next."""
    from fieldstation.sensor import Plan

    s = Thermo(name="t", unit="V", tags={"room": "lab"})
    plan = Plan(s)
    first = process(s, 1.0, T, plan).readings[0]
    first.tags["topic"] = "a/b"
    second = process(s, 2.0, T, plan).readings[0]
    assert second.tags == {"room": "lab", "sensor": "t", "unit": "V"}
    assert second.to_line() == f"thermo,room=lab,sensor=t,unit=V value=2.0 {T}"


def test_a_float_subclass_is_stored_as_a_float() -> None:
    class Celsius(float):
        def __repr__(self) -> str:
            return "np.float64(21.5)"

    (r,) = process(Thermo(name="t"), {"value": Celsius(21.5)}, T).readings
    assert type(r.fields["value"]) is float and r.to_line() == f"thermo,sensor=t value=21.5 {T}"


def test_private_attributes_are_read_past_pydantic_s_slow_path() -> None:
    s = Simulated(name="s")
    assert s._invalid is False and s._run.n == 0
    with pytest.raises(AttributeError, match="'Simulated' object has no attribute '_nope'"):
        _ = s._nope
    with pytest.raises(AttributeError, match="'Simulated' object has no attribute 'nope'"):
        _ = s.nope
