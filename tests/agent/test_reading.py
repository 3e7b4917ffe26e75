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
