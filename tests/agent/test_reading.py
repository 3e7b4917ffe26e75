from __future__ import annotations

import math

import pytest

from fieldstation.reading import Reading, encode_line


def test_line_protocol_types_and_sorted_tags() -> None:
    r = Reading("m", {"f": 1.5, "i": 3, "b": True, "s": 'say "hi"'}, {"unit": "°C", "sensor": "t1"}, 123)
    assert r.to_line() == 'm,sensor=t1,unit=°C f=1.5,i=3i,b=true,s="say \\"hi\\"" 123'


def test_escaping_of_spaces_commas_and_equals() -> None:
    line = encode_line("my m,x", {"sensor": "a b", "k=v": "c,d"}, {"my field": 1.0}, 5)
    assert line == r"my\ m\,x,k\=v=c\,d,sensor=a\ b my\ field=1.0 5"


def test_empty_tag_values_are_left_out() -> None:
    assert encode_line("m", {"sensor": "s", "unit": ""}, {"value": 2.0}, 1) == "m,sensor=s value=2.0 1"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        encode_line("m", {}, {"value": bad}, 1)


def test_a_reading_needs_a_field() -> None:
    with pytest.raises(ValueError, match="no fields"):
        encode_line("m", {}, {}, 1)


def test_the_prefix_cache_follows_the_tags_not_the_dict() -> None:
    """Encoded prefixes are cached by content: a tags dict changed after a first encode (the mqtt driver adds a
    topic) encodes as it is now, and two orders of the same tags encode alike (sorted)."""
    tags = {"sensor": "s", "unit": "V"}
    assert encode_line("m", tags, {"value": 1.0}, 1) == "m,sensor=s,unit=V value=1.0 1"
    tags["topic"] = "a b"
    assert encode_line("m", tags, {"value": 1.0}, 1) == r"m,sensor=s,topic=a\ b,unit=V value=1.0 1"
    assert encode_line("m", {"unit": "V", "sensor": "s"}, {"value": 1.0}, 1) == "m,sensor=s,unit=V value=1.0 1"
    assert encode_line("n", tags, {"value": 1.0}, 1).startswith("n,")


def test_the_prefix_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tags from data (a dropped file's columns) cannot grow the cache without bound; beyond it lines still encode."""
    from fieldstation import reading

    monkeypatch.setattr(reading, "_PREFIXES", {})
    monkeypatch.setattr(reading, "MAX_PREFIXES", 10)
    lines = [encode_line("m", {"sensor": f"s{i}"}, {"v": float(i)}, i) for i in range(50)]
    assert len(reading._PREFIXES) == 10
    assert lines[42] == "m,sensor=s42 v=42.0 42"


def test_float_subclasses_and_ints_encode_by_their_value() -> None:
    class Celsius(float):  # numpy 2's float64 is one, its repr "np.float64(1.5)"
        def __repr__(self) -> str:
            return "not a number"

    class Count(int):
        def __repr__(self) -> str:
            return "many"

    assert encode_line("m", {}, {"a": Celsius(1.5), "b": Count(2), "c": -0.0}, 1) == "m a=1.5,b=2i,c=-0.0 1"
