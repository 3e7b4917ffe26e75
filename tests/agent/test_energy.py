"""Energy and cost by tariff period: the tariff clock, the accounting of counter increments, and the agent writing
the ``energy`` measurement to a real InfluxDB, across a restart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fieldstation.agent import Agent
from fieldstation.energy import EnergyAccounting, EnergySettings, Period
from fieldstation.influxd import LocalInfluxd
from fieldstation.reading import Reading
from fieldstation.sensor import Sensor
from fieldstation.settings import AgentSettings
from harness.agent import running_agent, settings_for, wait_for

PARIS = ZoneInfo("Europe/Paris")
TARIFF = EnergySettings(
    timezone="Europe/Paris",
    default_name="offpeak",
    default_price=0.15,
    periods=[
        Period(name="peak", start="07:00", end="22:00", days=["mon", "tue", "wed", "thu", "fri"], price=0.30),
        Period(name="weekend_night", start="23:00", end="06:00", days=["sat"], price=0.10),
    ],
)


def ns(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp() * 1e9)


@pytest.mark.parametrize(
    ("when", "tariff"),
    [
        (ns(2026, 11, 23, 6, 59), ("offpeak", 0.15)),  # Monday, before 07:00
        (ns(2026, 11, 23, 7, 0), ("peak", 0.30)),
        (ns(2026, 11, 23, 21, 59), ("peak", 0.30)),
        (ns(2026, 11, 23, 22, 0), ("offpeak", 0.15)),
        (ns(2026, 11, 28, 12, 0), ("offpeak", 0.15)),  # Saturday noon: no peak at weekends
        (ns(2026, 11, 28, 23, 30), ("weekend_night", 0.10)),  # Saturday night ...
        (ns(2026, 11, 29, 5, 59), ("weekend_night", 0.10)),  # ... running past midnight into Sunday
        (ns(2026, 11, 29, 6, 0), ("offpeak", 0.15)),
        (ns(2026, 7, 6, 7, 30), ("peak", 0.30)),  # summer time: local clock, not UTC
    ],
)
def test_the_tariff_follows_the_local_clock(when: int, tariff: tuple[str, float]) -> None:
    assert TARIFF.tariff_at(when) == tariff


def counter(value: float, t: int, sensor: str = "meter", unit: str = "kWh") -> Reading:
    return Reading("modbus", {"active_energy": value, "active_energy_t1": 1.0}, {"sensor": sensor, "unit": unit}, t)


def test_increments_are_counted_at_the_price_of_their_period() -> None:
    acc = EnergyAccounting(TARIFF)
    assert acc.readings([counter(1000.0, ns(2026, 11, 23, 6, 50))]) == []  # the first reading is the base
    (offpeak,) = acc.readings([counter(1000.5, ns(2026, 11, 23, 6, 55))])
    (peak,) = acc.readings([counter(1002.5, ns(2026, 11, 23, 7, 5))])
    assert offpeak.tags == {"sensor": "meter", "counter": "active_energy", "tariff": "offpeak", "unit": "kWh"}
    assert offpeak.fields == {"kwh": 0.5, "cost": 0.5 * 0.15}
    assert peak.tags["tariff"] == "peak" and peak.fields == {"kwh": 2.0, "cost": 2.0 * 0.30}
    assert peak.measurement == "energy" and peak.time_ns == ns(2026, 11, 23, 7, 5)
    # Only the configured counters, only in kWh; a meter that goes backwards is re-based, not counted.
    assert acc.readings([counter(5.0, ns(2026, 11, 23, 8), unit="Wh")]) == []
    assert acc.readings([counter(3.0, ns(2026, 11, 23, 8, 1))]) == []
    (after_reset,) = acc.readings([counter(4.0, ns(2026, 11, 23, 8, 2))])
    assert after_reset.fields["kwh"] == 1.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"periods": [{"name": "peak", "start": "7h", "end": "22:00", "price": 1}]}, "'7h' is not a time of day"),
        ({"periods": [{"name": "a", "start": "07:00", "end": "08:00", "price": 1}] * 2}, "must be unique"),
        ({"periods": [{"name": "a", "start": "07:00", "end": "08:00", "price": -1}]}, "greater than or equal to 0"),
    ],
)
def test_bad_tariff_tables_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnergySettings.model_validate(settings)


class Counter(Sensor):
    """A meter whose counter grows 0.25 kWh per read, from where it was (it survives restarts, like a meter)."""

    driver = "counter"
    start: float = 100.0
    reads: int = 0

    def read(self) -> dict[str, float]:
        self.reads += 1
        return {"active_energy": self.start + 0.25 * self.reads}


def test_the_agent_writes_energy_and_cost_and_counts_across_a_restart(influxd: LocalInfluxd, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"local": influxd.url}, energy=EnergySettings(default_price=0.2))
    first = Counter(name="meter", unit="kWh", interval=0.2)
    with running_agent(settings, [first]):
        wait_for(lambda: first.reads >= 5, 20, "five counter reads")
    # The agent stops; the meter goes on counting (1.0 kWh) while it is down; the agent restarts.
    second = Counter(name="meter", unit="kWh", interval=0.2, start=first.start + 0.25 * first.reads + 1.0)
    with running_agent(settings, [second]):
        wait_for(lambda: second.reads >= 3, 20, "three more reads")
    counters = [r["active_energy"] for r in influxd.rows('SELECT "active_energy" FROM "counter"', "fieldstation")]

    def total() -> tuple[float, float]:
        rows = influxd.rows('SELECT sum("kwh"), sum("cost") FROM "energy" WHERE "tariff" = \'standard\'', "fieldstation")
        return (round(rows[0]["sum"], 9), round(rows[0]["sum_1"], 9)) if rows else (0.0, 0.0)

    wait_for(lambda: total()[0] == round(max(counters) - min(counters), 9), 20, "energy equal to the counter's rise")
    kwh, cost = total()
    assert kwh == round(counters[-1] - counters[0], 9) and kwh >= 0.25 * 6 + 1.0
    assert cost == round(kwh * 0.2, 9)


def stopped_agent(settings: AgentSettings, counter_value: float) -> Agent:
    """An agent that read one counter value (the spool closed again): what a previous run leaves behind."""
    agent = Agent(settings, [])
    agent.energy.readings([counter(counter_value, ns(2026, 11, 23, 12))])
    agent.spool.close()
    return agent


def baseline(settings: AgentSettings) -> dict[str, float]:
    agent = Agent(settings, [])
    agent.spool.close()
    return agent.energy.last


def test_a_clean_stop_counts_on_after_a_reboot(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"local": "http://127.0.0.1:9"}, state_file=tmp_path / "run/state.json")
    agent = stopped_agent(settings, 1000.0)
    agent.write_state(settings.state_file)
    agent.save_energy(clean=True)  # what shutdown() does
    settings.state_file.unlink()  # a reboot empties /run
    assert baseline(settings) == {"meter/active_energy": 1000.0}


def test_a_power_cut_re_bases_instead_of_counting_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The energy file is written every energy_save_interval: after a power cut it is older than the energy
    already written, so counting from it would count that energy twice."""
    settings = settings_for(tmp_path, {"local": "http://127.0.0.1:9"}, state_file=tmp_path / "run/state.json")
    agent = stopped_agent(settings, 1000.0)
    agent.save_energy()  # the run's periodic save; then the power goes (no shutdown)
    assert baseline(settings) == {}
    assert f"{settings.energy_file}: left by an unclean stop (power cut?): energy counters re-based" in caplog.text


def test_a_restart_without_reboot_counts_from_the_live_state(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"local": "http://127.0.0.1:9"}, state_file=tmp_path / "run/state.json")
    agent = stopped_agent(settings, 1000.0)
    agent.save_energy()
    agent.energy.readings([counter(1001.5, ns(2026, 11, 23, 12, 5))])
    agent.write_state(settings.state_file)  # every health interval, in /run, which survives the agent's restart
    assert baseline(settings) == {"meter/active_energy": 1001.5}


def test_the_energy_file_is_written_only_when_the_counters_moved_and_the_interval_passed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"local": "http://127.0.0.1:9"}, energy_save_interval=3600)
    agent = stopped_agent(settings, 1000.0)
    agent.save_energy()
    written = settings.energy_file.stat().st_mtime_ns, settings.energy_file.stat().st_ino
    agent.save_energy()  # nothing moved
    agent.energy.readings([counter(1001.0, ns(2026, 11, 23, 12, 5))])
    agent.save_energy()  # moved, but within the interval
    assert (settings.energy_file.stat().st_mtime_ns, settings.energy_file.stat().st_ino) == written
    agent.save_energy(clean=True)  # a stop always writes
    saved = json.loads(settings.energy_file.read_text())
    assert saved["clean"] is True and saved["energy"] == {"meter/active_energy": 1001.0}
