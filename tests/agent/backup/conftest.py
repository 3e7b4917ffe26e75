"""A station to back up: a real InfluxDB with the setup's policies and points, Grafana's SQLite, config folders,
and backup.toml/agent.toml pointing at a real smbd."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from fieldstation.cli import main
from fieldstation.influx_setup import Credentials, InfluxSetup, setup
from fieldstation.influxd import LocalInfluxd
from fieldstation.influxql import Influx
from harness.samba import Samba

DB = "fieldstation"
HOUR_NS = 3600 * 10**9


@dataclass
class Station:
    root: Path
    influxd: LocalInfluxd
    samba: Samba
    settings: Path
    agent: Path

    def write_settings(self, **over: object) -> Path:
        values: dict[str, object] = {
            "share": self.samba.url(),
            "port": self.samba.port,
            "credentials": str(self.samba.credentials_file(self.root / "backup.credentials")),
            "timeout": 5.0,
            "keep_last": 2,
            "keep_days": 0,
            "influx_setup": str(self.root / "absent-influx-setup.toml"),
            "influx_url": self.influxd.url,
            "influx_rpc": f"127.0.0.1:{self.influxd.rpc_port}",
            "grafana_db": str(self.root / "grafana" / "grafana.db"),
            "work_dir": str(self.root / "work"),
        }
        values.update(over)
        lines = [f"{k} = {v!r}".replace("'", '"') if not isinstance(v, float | int) else f"{k} = {v}"
                 for k, v in values.items() if v is not None]
        configs = {"fieldstation": self.root / "etc/fieldstation", "nut": self.root / "etc/nut"}
        text = "\n".join(lines) + "\n[configs]\n" + "".join(f'{k} = "{v}"\n' for k, v in configs.items())
        self.settings.write_text(text)
        return self.settings

    def cli(self, *args: str) -> int:
        return main([*args, "--settings", str(self.settings)])

    def readings(self) -> list[str]:
        """What the agent's spool holds once the agent took the results the jobs queued for it."""
        from fieldstation.spool import Spool

        spool = Spool(self.root / "spool.db", sinks=["local"])
        try:
            spool.take_queued()
            return [line for _, line in spool.fetch("local", 1000)]
        finally:
            spool.close()


def seed(influxd: LocalInfluxd, hours: int = 6, start_ns: int | None = None) -> None:
    """The database as `influx setup` makes it, with points in raw, a rollup and the files policy."""
    setup(InfluxSetup(url=influxd.url, database=DB, admin=Credentials(username="admin", password=SecretStr("x"))),
          say=lambda _: None)
    t0 = start_ns or (time.time_ns() // HOUR_NS - hours) * HOUR_NS
    raw = [f"temperature,sensor=t{k % 3},unit=°C value={20 + k / 7:.3f},ok=true {t0 + k * 60 * 10**9}"
           for k in range(hours * 60)]
    raw += [f"energy,sensor=meter kwh={k * 0.01:.2f},count={k}i {t0 + k * 300 * 10**9}" for k in range(hours * 12)]
    client = Influx(influxd.url)
    client.write(raw, DB, "raw")
    client.write([f"temperature,sensor=t0 mean_value={20 + k}.5 {t0 + k * HOUR_NS}" for k in range(hours)], DB,
                 "rollup_1h")
    client.write([f'mv2,client=acme,serial=42 temp=1{k}.0,label="x{k}" {t0 - 90 * 24 * HOUR_NS + k * 10**9}'
                  for k in range(50)], DB, "files")


@pytest.fixture
def station(tmp_path: Path, influxd: LocalInfluxd, samba: Samba) -> Station:
    seed(influxd)
    (tmp_path / "etc/fieldstation").mkdir(parents=True)
    (tmp_path / "etc/fieldstation/agent.toml").write_text("health_interval = 10\n")
    (tmp_path / "etc/nut").mkdir(parents=True)
    (tmp_path / "etc/nut/ups.conf").write_text("[ups]\n  driver = dummy-ups\n")
    (tmp_path / "grafana").mkdir()
    con = sqlite3.connect(tmp_path / "grafana/grafana.db")
    with con:
        con.execute("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, title TEXT)")
        con.execute("INSERT INTO dashboard (title) VALUES ('Agent'), ('UPS')")
    con.close()
    agent = tmp_path / "agent.toml"
    agent.write_text(f'[spool]\npath = "{tmp_path / "spool.db"}"\n[[sinks]]\nname = "local"\n')
    (tmp_path / "incoming").mkdir()  # the agent's queue folder, as the agent makes it at start
    st = Station(tmp_path, influxd, samba, tmp_path / "backup.toml", agent)
    st.write_settings()
    return st
