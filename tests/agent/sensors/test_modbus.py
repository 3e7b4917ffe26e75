"""The modbus driver: register maps, request planning, decoding, and reads from pymodbus's server acting as the
meters, in RTU frames over socat pty pairs and over TCP."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from fieldstation import modbus_client
from fieldstation.scheduler import Scheduler
from fieldstation.sensor import SensorError
from fieldstation.sensors.modbus import Modbus, Register, builtin_maps, decode_register, encode_register, load_map, plan
from fieldstation.simulators import MeterSimulator
from harness.agent import Recorder
from harness.modbus import NoisyLine, PtyPair

WE515 = load_map("orno_we515")
SDM120 = load_map("eastron_sdm120")
LIVE = {"frequency": 49.98, "voltage": 231.07, "current": 12.345, "active_power": 2850, "power_factor": 0.987}
COUNTERS = {"active_energy": 123456.78, "active_energy_t1": 100000.01, "reactive_energy": 655.36}



# -- register maps -----------------------------------------------------------------------------------


def test_every_shipped_map_loads_and_plans_within_the_protocol_limit() -> None:
    assert {"orno_we515", "eastron_sdm120", "eastron_sdm630"} <= set(builtin_maps())
    for name in builtin_maps():
        regmap = load_map(name)
        for req in plan(regmap.registers, regmap.protocol.max_registers, regmap.protocol.max_gap):
            assert 1 <= req.count <= 125


@pytest.mark.parametrize(
    ("field", "address", "type_", "scale"),
    [
        ("frequency", 0x130, "uint16", 0.01),
        ("voltage", 0x131, "uint16", 0.01),
        ("current", 0x139, "uint32", 0.001),
        ("active_power", 0x140, "int32", 1.0),
        ("reactive_power", 0x148, "int32", 1.0),
        ("apparent_power", 0x150, "int32", 1.0),
        ("power_factor", 0x158, "int16", 0.001),
        ("active_energy", 0xA000, "uint32", 0.01),
        ("active_energy_t1", 0xA002, "uint32", 0.01),
        ("active_energy_t4", 0xA008, "uint32", 0.01),
        ("reactive_energy", 0xA01E, "uint32", 0.01),
    ],
)
def test_the_orno_we515_map_holds_the_manuals_registers(field: str, address: int, type_: str, scale: float) -> None:
    r = next(r for r in WE515.registers if r.field == field)
    assert (r.function, r.address, r.type, r.scale) == ("holding", address, type_, scale)
    assert (WE515.serial.baudrate, WE515.serial.parity) == (9600, "E")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "x"\n[[register]]\nfield = "a"\naddress = 1\ntype = "int24"\n', r"bad\.toml: register #1 type: Input should be 'int16', "),
        ('model = "x"\n[[register]]\nfield = "a"\naddress = 1\ntype = "uint32"\n[[register]]\nfield = "b"\naddress = 2\n', r"'b' overlaps 'a' at holding register 0x0002"),
        ('model = "x"\n[[register]]\nfield = "a"\naddress = 70000\n', r"register #1 address: Input should be less than or equal to 65535"),
        ('model = "x"\n[[register]\n', r"register map .*bad\.toml: "),
        ('model = "x"\n', r"bad\.toml: register: Field required"),
    ],
)
def test_a_bad_map_file_is_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        load_map(str(path))
    assert "\n" not in str(exc.value)


def test_an_unknown_model_names_the_shipped_maps() -> None:
    with pytest.raises(ValueError, match=r"unknown meter model 'orno_we999'; shipped maps: eastron_sdm120, "):
        load_map("orno_we999")


def test_sensor_options_are_checked_at_load() -> None:
    with pytest.raises(ValueError, match="give either port"):
        Modbus(name="m", model="orno_we515", port="/dev/ttyUSB0", host="10.0.0.5")
    with pytest.raises(ValueError, match=r"fields \['watts'\] are not in the orno_we515 map"):
        Modbus(name="m", model="orno_we515", port="/dev/ttyUSB0", fields=["watts"])


# -- planning and decoding ---------------------------------------------------------------------------


def reg(address: int, type_: str = "uint16", function: str = "holding") -> Register:
    return Register(field=f"f{address}_{function}", address=address, type=type_, function=function)  # type: ignore[arg-type]


def test_contiguous_registers_share_a_request_and_requests_stay_within_125() -> None:
    regs = [reg(0, "uint32"), reg(2), reg(3, "float64"), reg(10), reg(5, function="input")]
    assert [(q.function, q.address, q.count) for q in plan(regs)] == [("holding", 0, 7), ("holding", 10, 1), ("input", 5, 1)]
    assert [(q.address, q.count) for q in plan(regs, max_gap=3)][:1] == [(0, 11)]
    many = [reg(2 * i, "uint32") for i in range(100)]  # 200 contiguous registers
    assert [(q.address, q.count) for q in plan(many)] == [(0, 124), (124, 76)]  # never splits a 32-bit value


def test_the_we515_plan_reads_each_contiguous_block_once() -> None:
    meter = Modbus(name="m", model="orno_we515", port="/dev/null")
    assert [(q.address, q.count) for q in meter.requests] == [
        (0x130, 2), (0x139, 2), (0x140, 2), (0x148, 2), (0x150, 2), (0x158, 1), (0xA000, 10), (0xA01E, 2),
    ]
    wide = Modbus(name="m", model="orno_we515", port="/dev/null", max_gap=20)
    assert [(q.address, q.count) for q in wide.requests] == [(0x130, 41), (0xA000, 32)]


def test_32_bit_energy_is_read_whole_past_655_35_kwh() -> None:
    energy = next(r for r in WE515.registers if r.field == "active_energy")
    # High word 1, low word 2: the script we replace kept only the low word and reported 0.02 kWh.
    assert decode_register(energy, [0x0001, 0x0002]) == 655.38


@pytest.mark.parametrize(
    ("type_", "word", "byte", "words", "value"),
    [
        ("int16", "big", "big", [0xFFFE], -2.0),
        ("uint16", "big", "little", [0x3412], 0x1234),
        ("int32", "little", "big", [0x0000, 0xFFFF], float(-65536)),
        ("float32", "big", "big", [0x4348, 0x0000], 200.0),
        ("float32", "little", "little", [0x0000, 0x4843], 200.0),
        ("float64", "big", "big", [0x4059, 0x0000, 0x0000, 0x0000], 100.0),
    ],
)
def test_decoding_honours_type_word_and_byte_order(type_: str, word: str, byte: str, words: list[int], value: float) -> None:
    r = Register(field="x", address=0, type=type_, word_order=word, byte_order=byte)  # type: ignore[arg-type]
    assert decode_register(r, words) == value
    assert encode_register(r, value) == words


def test_pymodbus_gets_the_device_keyword_its_version_takes() -> None:
    assert modbus_client.DEVICE_KEYWORD == "device_id"  # pymodbus >= 3.10; 3.8 (Debian trixie) says slave=


# -- RTU over a pty pair -----------------------------------------------------------------------------


def rtu_meter(line: PtyPair | NoisyLine, device_id: int, model: str = "orno_we515", **kw: object) -> Modbus:
    # socat's ptys reject parity, so 8N1 here; the meters' 8E1 factory default is the same option.
    return Modbus(name=f"meter{device_id}", model=model, port=line.client, parity="N", device_id=device_id, **kw)  # type: ignore[arg-type]


def test_rtu_meters_on_one_port_are_read_exactly_with_one_request_per_block(rtu_line: PtyPair) -> None:
    meters = {1: (WE515, {**LIVE, **COUNTERS}), 2: (SDM120, {"voltage": 229.5, "active_energy": 4321.5})}
    with MeterSimulator(meters, serial_port=rtu_line.server) as sim:
        we, sdm = rtu_meter(rtu_line, 1), rtu_meter(rtu_line, 2, "eastron_sdm120", baudrate=9600)
        try:
            we_fields = we.read()
            sdm_fields = sdm.read()
            assert sim.requests == {1: len(we.requests), 2: len(sdm.requests)}
            assert sim.requests == {1: 8, 2: 9}
            we.read()
            assert sim.requests[1] == 16  # every poll: one request per contiguous block, no retries
        finally:
            we.close()
            sdm.close()
    assert {k: we_fields[k] for k in LIVE} == LIVE
    assert {k: we_fields[k] for k in COUNTERS} == COUNTERS
    assert sdm_fields["voltage"] == 229.5 and sdm_fields["active_energy"] == 4321.5


def test_a_dead_meter_costs_only_its_own_timeout_on_a_shared_bus(rtu_line: PtyPair) -> None:
    meters = {1: (WE515, LIVE), 2: (WE515, LIVE)}
    rec = Recorder()
    with MeterSimulator(meters, serial_port=rtu_line.server) as sim:
        sim.silent.add(2)
        live = rtu_meter(rtu_line, 1, interval=0.5)
        dead = rtu_meter(rtu_line, 2, interval=0.5, request_timeout=0.2)
        sched = Scheduler([live, dead], rec, backoff_max=0.5)
        with sched.running():
            time.sleep(4)
        errors = sched.states["meter2"].errors
        last_error = sched.states["meter2"].last_error or ""
    polls = {r.time_ns for r in rec.of("meter1")}
    # 4 s at 0.5 s: about 8 polls; a dead meter on the bus may delay one by its 0.2 s timeout, never skip it.
    assert len(polls) >= 7
    gaps = [(b - a) / 1e9 for a, b in zip(sorted(polls), sorted(polls)[1:], strict=False)]
    assert max(gaps) < 0.5 + 0.2 + 0.25
    assert not rec.of("meter2") and errors >= 2
    assert re.fullmatch(r"SensorError: holding registers 0x0130\+2 of device 2 on .*: no valid answer within 0\.2 s", last_error)


def test_a_slow_meter_times_out_and_its_late_answer_does_not_reach_the_next(rtu_line: PtyPair) -> None:
    meters = {1: (WE515, LIVE), 2: (WE515, {**LIVE, "voltage": 199.99})}
    with MeterSimulator(meters, serial_port=rtu_line.server) as sim:
        sim.delay[2] = 0.6
        slow, fast = rtu_meter(rtu_line, 2, request_timeout=0.3), rtu_meter(rtu_line, 1)
        try:
            t0 = time.monotonic()
            with pytest.raises(SensorError, match=r"no valid answer within 0\.3 s"):
                slow.read()
            assert time.monotonic() - t0 < 0.6
            time.sleep(0.5)  # the late answer arrives now, while nobody waits
            assert fast.read()["voltage"] == LIVE["voltage"]
        finally:
            slow.close()
            fast.close()


def test_answers_with_a_bad_crc_are_rejected_then_reads_recover(noisy_line: NoisyLine) -> None:
    with MeterSimulator({1: (WE515, LIVE)}, serial_port=noisy_line.server):
        meter = rtu_meter(noisy_line, 1, request_timeout=0.3)
        try:
            assert meter.read()["voltage"] == LIVE["voltage"]
            noisy_line.corrupt.set()
            with pytest.raises(SensorError, match=r"no valid answer within 0\.3 s"):
                meter.read()
            assert noisy_line.corrupted >= 1
            noisy_line.corrupt.clear()
            time.sleep(0.1)
            assert meter.read()["frequency"] == LIVE["frequency"]
        finally:
            meter.close()


def test_rs485_direction_control_on_a_port_without_it_is_a_clear_error(rtu_line: PtyPair) -> None:
    meter = rtu_meter(rtu_line, 1, rs485={"rts_level_for_tx": True, "delay_before_rx": 0.001})
    try:
        with pytest.raises(SensorError, match=rf"^{re.escape(rtu_line.client)}: the port has no RS-485 mode for RTS"):
            meter.read()
    finally:
        meter.close()


def test_a_missing_serial_port_is_a_clear_error(tmp_path: Path) -> None:
    meter = Modbus(name="m", model="orno_we515", port=str(tmp_path / "ttyUSB9"))
    try:
        with pytest.raises(SensorError, match=r"cannot open .*ttyUSB9$"):
            meter.read()
    finally:
        meter.close()


def test_meters_on_one_port_must_agree_on_its_settings(rtu_line: PtyPair) -> None:
    a = rtu_meter(rtu_line, 1)
    b = rtu_meter(rtu_line, 2, baudrate=19200)
    try:
        a.open()
        with pytest.raises(SensorError, match=r"used with different settings by two meters \(9600 8N1 and 19200 8N1\)"):
            b.open()
    finally:
        a.close()
        b.close()


# -- TCP ---------------------------------------------------------------------------------------------


def test_a_tcp_meter_is_read_and_its_values_follow_the_device() -> None:
    with MeterSimulator({7: (WE515, LIVE)}) as sim:
        meter = Modbus(name="m", model="orno_we515", host="127.0.0.1", tcp_port=sim.port, device_id=7)
        try:
            assert meter.read()["active_power"] == 2850
            sim.values[7]["active_power"] = -120  # exporting: a signed 32-bit value
            assert meter.read()["active_power"] == -120
            assert sim.requests[7] == 16
        finally:
            meter.close()


def test_a_tcp_meter_that_is_not_there_is_a_clear_error() -> None:
    with MeterSimulator({1: (WE515, LIVE)}) as sim:
        port = sim.port
    meter = Modbus(name="m", model="orno_we515", host="127.0.0.1", tcp_port=port)
    try:
        with pytest.raises(SensorError, match=rf"^cannot open tcp://127\.0\.0\.1:{port}$"):
            meter.read()
    finally:
        meter.close()


def test_a_device_id_the_gateway_does_not_know_is_reported_with_its_exception_code() -> None:
    with MeterSimulator({1: (WE515, LIVE)}) as sim:
        meter = Modbus(name="m", model="orno_we515", host="127.0.0.1", tcp_port=sim.port, device_id=9)
        try:
            with pytest.raises(SensorError, match=r"device 9 on tcp://127\.0\.0\.1:\d+: exception \d+ \("):
                meter.read()
        finally:
            meter.close()
