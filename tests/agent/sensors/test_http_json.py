"""The http_json driver against a real HTTP server: paths into documents, HTTP errors, bad JSON, slow servers."""

from __future__ import annotations

import socket
import threading

import pytest
from pydantic import ValidationError

from fieldstation.conversion import Linear
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors.http_json import MAX_BODY, HttpJson, PathError, decode, display_url, parse_path, pick
from fieldstation.simulators import HttpJsonSimulator
from harness.agent import wait_for

STATION = {
    "station": {
        "id": "lab2",
        "online": True,
        "sensors": [{"name": "t", "temp": 21.5}, {"name": "h", "hum": 40}],
        "meta": {"fw.version": "1.2.0", "uptime": 86400},
        "error": None,
    },
    "readings": [1.5, 2.5, 3.5],
}
T0 = 1_700_000_000_000_000_000


def sensor_for(url: str, fields: dict[str, str], **kw: object) -> HttpJson:
    return HttpJson(name="station", url=url, fields=fields, **kw)  # type: ignore[arg-type]


def test_nested_paths_and_list_indices_pick_numbers_bools_and_strings(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/api/v1/station", STATION)
    fields = {
        "temp": "station.sensors[0].temp",
        "humidity": "station.sensors[1].hum",
        "online": "station.online",
        "station_id": "station.id",
        "last": "readings[-1]",
        "firmware": 'station.meta["fw.version"]',
        "uptime": "station.meta.uptime",
    }
    assert sensor_for(url, fields).read() == {
        "temp": 21.5,
        "humidity": 40,
        "online": True,
        "station_id": "lab2",
        "last": 3.5,
        "firmware": "1.2.0",
        "uptime": 86400,
    }


def test_a_document_that_is_a_list_is_indexed_from_the_top(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/list", [{"v": 1.0}, {"v": 2.0}])
    assert sensor_for(url, {"first": "[0].v", "second": "[1].v"}).read() == {"first": 1.0, "second": 2.0}


def test_headers_and_query_are_sent(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/auth", {"x": 1})
    sensor_for(url + "?station=7", {"x": "x"}, headers={"Authorization": "Bearer t0ken", "X-Site": "lab"}).read()
    path, headers = http_server.requests[-1]
    assert path == "/auth?station=7"
    assert headers["Authorization"] == "Bearer t0ken" and headers["X-Site"] == "lab"
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "Not Found"), (500, "Internal Server Error"), (503, "Service Unavailable")]
)
def test_an_http_error_status_is_one_clear_line(http_server: HttpJsonSimulator, status: int, reason: str) -> None:
    url = http_server.route("/broken", {"error": "x"}, status=status)
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"x": "x"}).read()
    assert str(err.value) == f"GET {url}: HTTP {status} {reason}"


def test_an_unknown_path_is_a_404(http_server: HttpJsonSimulator) -> None:
    with pytest.raises(SensorError, match=r"^GET http://127\.0\.0\.1:\d+/nosuch: HTTP 404 Not Found$"):
        sensor_for(http_server.url("/nosuch"), {"x": "x"}).read()


def test_invalid_json_names_the_url_and_shows_the_start_of_the_answer(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/html", "<html><body>Login required</body></html>", content_type="text/html")
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"x": "x"}).read()
    assert str(err.value) == (
        f"GET {url}: invalid JSON (Expecting value: line 1 column 1 (char 0)), "
        "answer starts '<html><body>Login required</body></html>'"
    )


def test_an_empty_answer_is_invalid_json(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/empty", b"")
    with pytest.raises(SensorError, match=r": invalid JSON \(Expecting value"):
        sensor_for(url, {"x": "x"}).read()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("station.sensors[5].temp", "station.sensors[5].temp: index 5 out of range, station.sensors is a list of 2"),
        ("station.pressure", "station.pressure: no key 'pressure' in station (keys: error, id, meta, online, sensors)"),
        ("station.sensors.temp", "station.sensors.temp: station.sensors is a list of 2, not an object"),
        ("station.id[0]", "station.id[0]: station.id is the str 'lab2', not a list"),
        ("station.error.code", "station.error.code: station.error is null, not an object"),
    ],
)
def test_a_missing_path_names_the_step_that_failed(http_server: HttpJsonSimulator, path: str, message: str) -> None:
    url = http_server.route("/station", STATION)
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"temp": "station.sensors[0].temp", "x": path}).read()
    assert str(err.value) == f"GET {url}: {message}"


@pytest.mark.parametrize(
    ("path", "what"),
    [("station.meta", "an object"), ("readings", "a list of 3"), ("station.error", "null")],
)
def test_a_value_that_is_not_a_number_bool_or_string_fails_the_read(
    http_server: HttpJsonSimulator, path: str, what: str
) -> None:
    url = http_server.route("/station", STATION)
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"x": path}).read()
    assert str(err.value) == f"GET {url}: field 'x': {path} is {what}, not a number, bool or string"


def test_a_slow_server_times_out_below_the_read_timeout(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/slow", {"x": 1}, delay=10)
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"x": "x"}, timeout=0.5).read()
    assert str(err.value) == f"GET {url}: no answer within 0.4 s"


def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SensorError, match=rf"^GET http://127\.0\.0\.1:{port}/x: cannot connect: "):
        sensor_for(f"http://127.0.0.1:{port}/x", {"x": "x"}, timeout=1).read()


def test_an_oversized_answer_is_refused(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/big", b"[" + b"1," * (MAX_BODY // 2) + b"1]")
    with pytest.raises(SensorError, match=rf": answer larger than {MAX_BODY} bytes$"):
        sensor_for(url, {"x": "[0]"}).read()


def test_messages_never_show_credentials_or_the_query(http_server: HttpJsonSimulator) -> None:
    url = f"http://user:pw@127.0.0.1:{http_server.port}/nosuch?api_key=s3cret"
    with pytest.raises(SensorError) as err:
        sensor_for(url, {"x": "x"}).read()
    assert str(err.value) == f"GET http://127.0.0.1:{http_server.port}/nosuch?…: HTTP 404 Not Found"
    assert http_server.requests[-1][1]["Authorization"] == "Basic dXNlcjpwdw=="  # user:pw
    assert display_url("https://[::1]:8443/a?b=c") == "https://[::1]:8443/a?…"
    assert display_url("https://example.org/a") == "https://example.org/a"


def test_values_go_through_the_core_conversions_and_units(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/station", STATION)
    sensor = sensor_for(
        url,
        {"temp": "station.sensors[0].temp", "online": "station.online", "station_id": "station.id"},
        conversion={"temp": Linear(slope=1.8, offset=32.0)},
        unit={"temp": "°F"},
    )
    processed = process(sensor, sensor.read(), T0)
    assert not processed.invalid
    assert [r.to_line() for r in processed.readings] == [
        f"http_json,sensor=station,unit=°F temp=70.7 {T0}",
        f'http_json,sensor=station online=true,station_id="lab2" {T0}',
    ]


def test_the_scheduler_reads_it_and_recovers_from_a_server_error(http_server: HttpJsonSimulator) -> None:
    url = http_server.route("/live", {"t": 20.0})
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(batch: list[Reading]) -> None:
        with lock:
            readings.extend(batch)

    def temps() -> list[object]:
        with lock:
            return [r.fields["t"] for r in readings]

    sched = Scheduler([sensor_for(url, {"t": "t"}, interval=0.2)], emit, backoff_max=0.3)
    with sched.running():
        wait_for(lambda: 20.0 in temps(), 10, "a first reading")
        http_server.route("/live", {"message": "db down"}, status=500)
        wait_for(lambda: sched.states["station"].errors > 0, 10, "a failed read")
        assert sched.states["station"].last_error == f"SensorError: GET {url}: HTTP 500 Internal Server Error"
        http_server.route("/live", {"t": 21.0})
        wait_for(lambda: 21.0 in temps(), 10, "reads to resume")
    assert sched.states["station"].failures_in_row == 0


# -- the pure functions and validation -----------------------------------------------------------------


def test_parse_path() -> None:
    assert parse_path("data.sensors[0].temp") == ["data", "sensors", 0, "temp"]
    assert parse_path("[1].value") == [1, "value"]
    assert parse_path("readings[-1]") == ["readings", -1]
    assert parse_path("""meta["fw.version"]['a b']""") == ["meta", "fw.version", "a b"]
    assert parse_path("a b.c") == ["a b", "c"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "path is empty"),
        (".a", r"cannot parse '\.a' \(at character 1\)"),
        ("a.", r"cannot parse '\.' \(at character 2\)"),
        ("a..b", r"cannot parse '\.\.b'"),
        ("a[x]", r"cannot parse '\[x\]'"),
        ("a[0]b", "a dot or bracket must come before 'b'"),
        ('a["x]', "cannot parse"),
    ],
)
def test_a_malformed_path_is_refused(path: str, message: str) -> None:
    with pytest.raises(PathError, match=message):
        parse_path(path)
    with pytest.raises(ValidationError, match=message):
        HttpJson(name="x", url="http://example.org/", fields={"x": path})


def test_pick_and_decode_on_documents() -> None:
    assert pick(STATION, "station.sensors[1]") == {"name": "h", "hum": 40}
    assert pick([[1, 2], [3, 4]], "[1][0]") == 3
    assert pick({"a": {"b.c": 5}}, ["a", "b.c"]) == 5
    with pytest.raises(PathError, match=r"^\[2\]: index 2 out of range, the document is a list of 2$"):
        pick([1, 2], "[2]")
    with pytest.raises(PathError, match=r'^a\["b\.c"\]\.d: no key \'d\''):
        pick({"a": {"b.c": {}}}, 'a["b.c"].d')
    assert decode({"n": 1, "f": 2.5, "b": False, "s": "x"}, {"n": "n", "f": "f", "b": "b", "s": "s"}) == {
        "n": 1,
        "f": 2.5,
        "b": False,
        "s": "x",
    }


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.json", "http://", "example.org/x"])
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError, match="url must be http:// or https:// with a host"):
        HttpJson(name="x", url=url, fields={"x": "x"})


def test_at_least_one_field_is_required() -> None:
    with pytest.raises(ValidationError, match="fields"):
        HttpJson(name="x", url="http://example.org/", fields={})
