"""fieldstation.fleet: the station tag added on the way to a central sink, and vmauth's credential refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldstation.errors import ConfigError
from fieldstation.fleet import auth_refused, tagger
from fieldstation.settings import AgentSettings, load_toml
from fieldstation.sink import classify


def test_no_tags_means_no_tagger() -> None:
    assert tagger({}) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("t,sensor=a value=1 5", "t,sensor=a,station=st-1 value=1 5"),
        ("t value=1 5", "t,station=st-1 value=1 5"),
        # a string field with spaces and commas: only the series key changes
        ('log,sensor=a msg="x y, z=1" 5', 'log,sensor=a,station=st-1 msg="x y, z=1" 5'),
        # escaped space and comma in the measurement and a tag value
        (r"my\ room,sensor=a\,b value=1 5", r"my\ room,sensor=a\,b,station=st-1 value=1 5"),
        # a point with its own station tag keeps it
        ("t,station=other value=1 5", "t,station=other value=1 5"),
        ("not a point", "not,station=st-1 a point"),
        ("nospace", "nospace"),
    ],
)
def test_the_station_tag_goes_into_the_series_key(line: str, expected: str) -> None:
    tag = tagger({"station": "st-1"})
    assert tag is not None
    assert tag([line]) == [expected]


def test_several_tags_are_added_sorted_and_only_the_missing_ones() -> None:
    tag = tagger({"station": "s", "site": "lab"})
    assert tag is not None
    assert tag(["t,sensor=a v=1 1", "t,site=x v=1 1"]) == [
        "t,sensor=a,site=lab,station=s v=1 1",
        "t,site=x,station=s v=1 1",
    ]


def test_vmauths_400_for_an_unknown_credential_is_not_a_refusal_of_the_data() -> None:
    body = 'cannot find the provided auth token "Basic c3Q6eA==" in config'
    assert auth_refused(400, body)
    assert not auth_refused(400, "error parsing line protocol")
    assert not auth_refused(401, body)
    assert classify(400) == (True, False)  # the data's fault otherwise: split and dropped point by point


def test_sink_tags_are_validated_at_load(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[sinks]]\nname = "central"\nurl = "https://c:8427"\ntags = {station = "station-1"}\n')
    assert load_toml(good, AgentSettings).sinks[0].tags == {"station": "station-1"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sinks]]\nname = "central"\ntags = {station = "a b"}\n')
    with pytest.raises(ConfigError, match=r"bad.toml: sinks.0.tags.station: String should match pattern"):
        load_toml(bad, AgentSettings)
