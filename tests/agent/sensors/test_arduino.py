"""The arduino driver against a fake board on a real TCP socket: whole, split, short, silent and corrupt frames."""

from __future__ import annotations

import re
import socket
import threading

import pytest
from pydantic import ValidationError

from fieldstation.conversion import Linear, Polynomial
from fieldstation.reading import Reading
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError, process
from fieldstation.sensors.arduino import FRAME_SIZE, Arduino, decode, decode_frame, to_volts
from fieldstation.simulators import ArduinoSimulator, frame_of
from harness.agent import wait_for

VALUES = [0, 4095, 2048, 1024, 1, 100, 200, 300, 400, 500, 600, 3000]
T0 = 1_700_000_000_000_000_000


def volts(raw: int) -> float:
    return raw / 4096 * 3.25


def sensor_for(board: ArduinoSimulator, **kw: object) -> Arduino:
    return Arduino(name="due", host=board.host, port=board.port, **kw)  # type: ignore[arg-type]


def test_a_frame_becomes_volts_per_channel(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    fields = sensor_for(arduino_board).read()
    assert list(fields) == [f"ain{i}" for i in range(12)]
    assert fields == {f"ain{i}": pytest.approx(volts(v)) for i, v in enumerate(VALUES)}
    assert fields["ain1"] == pytest.approx(3.2492065) and fields["ain2"] == 1.625
    assert arduino_board.requests == [1]


def test_only_the_mapped_channels_are_returned_under_their_names(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    sensor = sensor_for(arduino_board, channels={11: "tank_level", 2: "supply"}, request=0x42)
    assert sensor.read() == {"tank_level": pytest.approx(volts(3000)), "supply": 1.625}
    assert arduino_board.requests == [0x42]


def test_a_frame_split_into_one_byte_and_odd_sized_pieces_is_reassembled(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    arduino_board.mode = "chunked"
    sensor = sensor_for(arduino_board, timeout=5)
    for _ in range(3):
        assert sensor.read() == {f"ain{i}": pytest.approx(volts(v)) for i, v in enumerate(VALUES)}
    assert arduino_board.connections == 3  # a connection per read


def test_little_endian_boards_are_read_with_byte_order_little(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    arduino_board.byte_order = "little"
    assert sensor_for(arduino_board, byte_order="little").read()["ain3"] == volts(1024)
    # Read as big-endian, 1024 (00 04 on the wire) would be 4: a wrong byte order shows as nonsense or corruption.
    with pytest.raises(SensorError, match="corrupt frame"):
        sensor_for(arduino_board).read()


def test_a_short_frame_then_close_is_one_clear_error(arduino_board: ArduinoSimulator) -> None:
    arduino_board.mode = "short"
    arduino_board.short_bytes = 7
    with pytest.raises(SensorError) as err:
        sensor_for(arduino_board).read()
    assert str(err.value) == f"arduino 127.0.0.1:{arduino_board.port}: connection closed after 7 of 24 bytes"


def test_a_board_that_never_answers_times_out_below_the_read_timeout(arduino_board: ArduinoSimulator) -> None:
    arduino_board.mode = "silent"
    with pytest.raises(SensorError) as err:
        sensor_for(arduino_board, timeout=0.5).read()
    assert str(err.value) == f"arduino 127.0.0.1:{arduino_board.port}: no complete frame within 0.4 s (0 of 24 bytes)"


def test_a_frame_that_stalls_halfway_reports_how_much_arrived(arduino_board: ArduinoSimulator) -> None:
    arduino_board.mode = "chunked"
    arduino_board.chunk_delay = 0.3
    with pytest.raises(SensorError, match=r"no complete frame within 0\.4 s \((\d+) of 24 bytes\)") as err:
        sensor_for(arduino_board, timeout=0.5).read()
    m = re.search(r"\((\d+) of 24", str(err.value))
    assert m is not None and 0 < int(m.group(1)) < FRAME_SIZE


def test_a_value_above_4095_is_a_corrupt_frame(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = [*VALUES[:5], 5000, *VALUES[6:]]
    with pytest.raises(SensorError, match=r": corrupt frame: A5=5000 above the 12-bit maximum 4095 \("):
        sensor_for(arduino_board).read()


def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SensorError, match=rf"^arduino 127\.0\.0\.1:{port}: cannot connect: "):
        Arduino(name="due", host="127.0.0.1", port=port, timeout=1).read()


def test_conversions_apply_per_channel_through_the_core(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    sensor = sensor_for(
        arduino_board,
        channels={2: "pressure", 3: "temperature", 4: "raw"},
        conversion={
            "pressure": Linear(slope=4.0, offset=-1.0),
            "temperature": Polynomial(coefficients=[-10.0, 50.0, 2.0]),
        },
        unit={"pressure": "bar", "temperature": "°C"},
        precision=3,
    )
    processed = process(sensor, sensor.read(), T0)
    assert not processed.invalid
    by_unit = {r.tags["unit"]: r.fields for r in processed.readings}
    v3 = volts(1024)  # 0.8125 V
    assert by_unit == {
        "bar": {"pressure": 5.5},  # 4 · 1.625 − 1
        "°C": {"temperature": round(-10 + 50 * v3 + 2 * v3**2, 3)},
        "": {"raw": round(volts(1), 3)},
    }
    assert all(r.measurement == "arduino" and r.tags["sensor"] == "due" for r in processed.readings)


def test_two_sensors_on_one_board_share_a_bus_and_survive_a_bad_spell(arduino_board: ArduinoSimulator) -> None:
    arduino_board.values = VALUES
    readings: list[Reading] = []
    lock = threading.Lock()

    def emit(batch: list[Reading]) -> None:
        with lock:
            readings.extend(batch)

    def names() -> set[str]:
        with lock:
            return {r.tags["sensor"] for r in readings}

    a = Arduino(name="left", host=arduino_board.host, port=arduino_board.port, channels={0: "a0"}, interval=0.2)
    b = Arduino(name="right", host=arduino_board.host, port=arduino_board.port, channels={1: "a1"}, interval=0.2)
    assert a.bus == b.bus == f"tcp://127.0.0.1:{arduino_board.port}"
    sched = Scheduler([a, b], emit, backoff_max=0.3)
    with sched.running():
        wait_for(lambda: names() == {"left", "right"}, 10, "readings of both sensors")
        arduino_board.mode = "short"
        wait_for(lambda: sched.states["left"].errors > 0 and sched.states["right"].errors > 0, 10, "failed reads")
        assert (sched.states["left"].last_error or "").startswith("SensorError: arduino 127.0.0.1:")
        arduino_board.mode = "normal"
        with lock:
            before = len(readings)
        wait_for(lambda: len(readings) > before + 2, 10, "reads to resume")
    assert sched.states["left"].failures_in_row == 0
    with lock:
        values = {k: v for r in readings for k, v in r.fields.items()}
    assert values == {"a0": 0.0, "a1": pytest.approx(volts(4095))}


# -- the pure functions and validation -----------------------------------------------------------------


def test_decode_frame_reads_high_byte_first_by_default() -> None:
    frame = bytes([0x0F, 0xFF, 0x08, 0x00]) + bytes(20)
    assert decode_frame(frame)[:3] == [4095, 2048, 0]
    assert decode_frame(frame_of(VALUES, "little"), "little") == VALUES


@pytest.mark.parametrize("size", [0, 1, 23, 25])
def test_decode_frame_refuses_a_frame_of_the_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match=rf"frame of {size} bytes, expected 24"):
        decode_frame(bytes(size))


def test_decode_with_another_resolution_and_reference() -> None:
    frame = frame_of([1023] + [0] * 11)
    assert decode(frame, {0: "x"}, vref=5.0, bits=10) == {"x": to_volts(1023, 5.0, 10)}
    with pytest.raises(ValueError, match="above the 10-bit maximum 1023"):
        decode(frame_of([1024] + [0] * 11), {0: "x"}, bits=10)


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ({12: "x"}, r"channels must be 0 to 11 \(A0 to A11\), got \[12\]"),
        ({-1: "x", 0: "y"}, r"got \[-1\]"),
        ({0: "x", 1: "x"}, r"field names must be unique, \['x'\] used twice"),
        ({}, "at least one channel"),
    ],
)
def test_a_bad_channel_map_is_refused_at_load(channels: dict[int, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Arduino(name="due", host="10.0.0.2", channels=channels)


def test_defaults() -> None:
    s = Arduino(name="due", host="10.0.0.2")
    assert (s.port, s.request, s.byte_order, s.vref, s.bits, s.unit) == (5000, 1, "big", 3.25, 12, "V")
    assert s.channels == {i: f"ain{i}" for i in range(12)}
    assert s.measurement_name == "arduino"
