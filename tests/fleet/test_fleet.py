"""A fleet against the real engine: three `fieldstation run` processes, each with its own spool and credential,
forwarding over HTTPS through a real vmauth to a real VictoriaMetrics on loopback. The central server goes away
for a while and comes back; one station's credential is revoked and given back; then every station's readings are
counted through VictoriaMetrics' export and query APIs against what that station acknowledged: nothing lost,
nothing doubled.

What a station acknowledged is read from its spool: a second sink that never answers keeps every acknowledged
point there (the spool deletes only what every sink confirmed), so the spool is the station's own record.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.influxd import free_port
from harness.agent import key_of_line, start_agent_process, wait_for
from harness.victoria import VictoriaMetrics, VMAuth

pytestmark = pytest.mark.slow

STATIONS = ("st-1", "st-2", "st-3")
REVOKED = "st-3"


class Station:
    """One agent process with its own spool, config.py and central credential."""

    def __init__(self, root: Path, name: str, central: str) -> None:
        self.name = name
        self.root = root / name
        self.root.mkdir(parents=True)
        self.password = secrets.token_urlsafe(16)
        self.spool = self.root / "spool.db"
        self.log = self.root / "agent.log"
        (self.root / "config.py").write_text(
            "from fieldstation.sensors.simulated import Simulated\n"
            "sensors = [Simulated(name=f't{i}', interval=0.2, unit='K') for i in range(3)]\n"
        )
        settings = self.root / "agent.toml"
        settings.write_text(
            f'config = "{self.root / "config.py"}"\n'
            f'state_file = "{self.root / "state.json"}"\n'
            f'energy_file = "{self.root / "energy.json"}"\n'
            "health_interval = 1\n"
            f'[spool]\npath = "{self.spool}"\n'
            f'[[sinks]]\nname = "central"\nurl = "{central}"\ndatabase = "fleet"\ntimeout = 2\n'
            f'username = "{name}"\npassword = "{self.password}"\ntags = {{station = "{name}"}}\n'
            # never answers: keeps every acknowledged point in the spool, the station's record of them
            f'[[sinks]]\nname = "record"\nurl = "http://127.0.0.1:{free_port()}"\ntimeout = 1\n'
        )
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cert: Path) -> None:
        # The central server's self-signed certificate, trusted as the agent role makes a station trust it (there
        # through the system's store, here through OpenSSL's SSL_CERT_FILE).
        self.proc = start_agent_process(self.settings, self.log, env={"SSL_CERT_FILE": str(cert)})

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.spool}?mode=ro", uri=True, timeout=10)

    def backlog(self) -> int:
        """Points acknowledged but not yet confirmed by the central server."""
        if not self.spool.exists():
            return 0
        with contextlib.closing(self._db()) as db:
            row = db.execute("SELECT last_id FROM cursors WHERE sink = 'central'").fetchone()
            last = row[0] if row else 0
            (n,) = db.execute("SELECT count(*) FROM points WHERE id > ?", (last,)).fetchone()
        return int(n)

    def acknowledged(self) -> list[tuple[str, int]]:
        """(sensor, timestamp ms) of every reading of the simulated sensors this station acknowledged."""
        with contextlib.closing(self._db()) as db:
            lines = [line for (line,) in db.execute("SELECT line FROM points ORDER BY id")]
        return sorted((s, t // 10**6) for m, s, t in map(key_of_line, lines) if m == "simulated")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(60) == 0, self.log.read_text()[-3000:]
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[VictoriaMetrics, VMAuth, dict[str, Station]]]:
    vm = VictoriaMetrics(tmp_path / "victoria-metrics")
    vm.start()
    auth: VMAuth | None = None
    stations: dict[str, Station] = {}
    try:
        # Passwords are the stations' own: create them first, then vmauth with one user per station.
        auth = VMAuth(tmp_path / "vmauth", vm.url, {}, tls=True)
        for name in STATIONS:
            stations[name] = Station(tmp_path, name, auth.url)
            auth.users[name] = stations[name].password
        auth.reload()
        auth.start()
        for station in stations.values():
            station.start(auth.cert)
        yield vm, auth, stations
    finally:
        for station in stations.values():
            station.kill()
        if auth is not None:
            auth.stop()
        vm.stop()


def stored(vm: VictoriaMetrics, station: str) -> list[tuple[str, int]]:
    return [(sensor, t) for _, sensor, t in vm.samples(f'{{__name__="simulated_value",station="{station}"}}')]


def newest(vm: VictoriaMetrics, station: str) -> int:
    """The newest stored reading's timestamp (ms) of a station, 0 when none."""
    return max((t for _, t in stored(vm, station)), default=0)


def test_three_stations_through_an_outage_and_a_revoked_credential_lose_nothing_and_double_nothing(
    fleet: tuple[VictoriaMetrics, VMAuth, dict[str, Station]],
) -> None:
    vm, auth, stations = fleet
    for name in STATIONS:
        wait_for(lambda n=name: len(stored(vm, n)) >= 20, 60, f"{name}'s first readings in VictoriaMetrics")

    # The central server goes away: every station keeps acknowledging readings, into its spool.
    vm.stop()
    backlog_at_stop = {name: s.backlog() for name, s in stations.items()}
    for name, s in stations.items():
        wait_for(lambda s=s, b=backlog_at_stop[name]: s.backlog() >= b + 150, 90, f"{name} to spool 150 readings")
    vm.start()

    # One station's credential is revoked (a stolen Pi): its writes are refused, the others' go on.
    auth.revoke(REVOKED)
    wait_for(lambda: auth.accepts(REVOKED, stations[REVOKED].password) == 400, 30, "vmauth to refuse the credential")
    refused_ms = int(time.time() * 1000)  # every reading taken after this was sent to a vmauth refusing it
    assert auth.accepts("st-1", stations["st-1"].password) == 204
    refused_at = stations[REVOKED].backlog()
    for name in STATIONS:
        if name != REVOKED:
            wait_for(lambda n=name: newest(vm, n) > refused_ms, 90, f"{name} to deliver after the revocation")
    wait_for(lambda: stations[REVOKED].backlog() >= refused_at + 30, 60, f"{REVOKED} to spool while refused")
    assert "cannot find the provided auth token" in stations[REVOKED].log.read_text()
    assert newest(vm, REVOKED) < refused_ms  # nothing taken after the refusal got in

    # Given back (a new Pi with the station's vault): its backlog arrives.
    auth.users[REVOKED] = stations[REVOKED].password
    auth.reload()
    for name, s in stations.items():
        wait_for(lambda s=s: s.backlog() < 50, 120, f"{name} to catch up")
    for s in stations.values():
        s.stop()  # SIGTERM: the last window goes to the central server too
    assert {name: s.backlog() for name, s in stations.items()} == dict.fromkeys(STATIONS, 0)

    for name, s in stations.items():
        acknowledged = s.acknowledged()
        # Confirmed writes become searchable within a second or so: poll until they are, then compare.
        wait_for(lambda a=acknowledged, n=name: set(a) <= set(stored(vm, n)), 30, f"{name}'s readings to be searchable")
        assert len(set(acknowledged)) == len(acknowledged), f"{name}: a reading spooled twice"
        in_central = stored(vm, name)
        lost = sorted(set(acknowledged) - set(in_central))
        doubled = len(in_central) - len(set(in_central))
        assert (len(lost), doubled) == (0, 0), (
            f"{name}: lost {lost[:5]}…, {doubled} doubled; acknowledged {acknowledged[0][1]}..{acknowledged[-1][1]}"
            f" {len(acknowledged)}, stored {len(in_central)} up to {max(t for _, t in in_central)}"
        )
        assert set(in_central) == set(acknowledged), f"{name}: readings the station never acknowledged"
        assert "Traceback" not in s.log.read_text()
    # The same count through the query API, per station, as a dashboard would ask it.
    counts = {
        r["metric"]["station"]: int(r["value"][1])
        for r in vm.query('sum by (station) (count_over_time(simulated_value{db="fleet"}[1d]))', at=time.time() + 60)
    }
    assert counts == {name: len(s.acknowledged()) for name, s in stations.items()}
    # The stations' health readings arrived tagged too: what the fleet dashboard reads.
    depth = vm.query('max by (station) (last_over_time(fieldstation_spool_depth{sink="central"}[1d]))')
    assert {r["metric"]["station"] for r in depth} == set(STATIONS)
