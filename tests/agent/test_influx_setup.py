"""`fieldstation influx setup` against a real InfluxDB with auth on: idempotent, grants enforced."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fieldstation.influx_setup import RP_VARIABLE_QUERY, Rollup, continuous_query, summed_query
from fieldstation.influxql import Influx, InfluxError
from fieldstation.settings import SinkSettings
from fieldstation.sink import InfluxWriter
from harness.agent import fieldstation_cmd
from harness.influx import start_influxd

SETUP = """\
url = "{url}"
database = "lab"
[admin]
username = "admin"
password = "{admin_pw}"
[[users]]
name = "agent"
password = "{agent_pw}"
privilege = "WRITE"
[[users]]
name = "grafana"
password = "gr'pw"
privilege = "READ"
[retention]
raw = "30d"
rollups = [{{ every = "1m", keep = "365d" }}, {{ every = "1h", keep = "INF" }}]
"""


def run_setup(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fieldstation_cmd("influx", "setup", "--file", str(path), *extra), capture_output=True,
                          text=True)


def as_user(url: str, name: str, password: str) -> Influx:
    return Influx(url, (name, password))


def test_setup_creates_everything_once_and_grants_are_enforced(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "influxd", auth=True, db=None)
    try:
        path = tmp_path / "influx-setup.toml"
        path.write_text(SETUP.format(url=server.url, admin_pw="adm1n", agent_pw="ag3nt"))
        first = run_setup(path)
        assert first.returncode == 0, first.stderr
        assert "admin user admin: created" in first.stdout and "database lab: created" in first.stdout
        second = run_setup(path)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip().endswith("0 changes")

        admin = as_user(server.url, "admin", "adm1n")
        rps = {r["name"]: (r["duration"], r["default"]) for r in admin.rows('SHOW RETENTION POLICIES ON "lab"')}
        assert rps["raw"] == ("720h0m0s", True)
        assert rps["rollup_1m"] == ("8760h0m0s", False)
        assert rps["rollup_1h"] == ("0s", False)
        cqs = [
            v
            for res in admin.query("SHOW CONTINUOUS QUERIES")
            for s in res.get("series", [])
            if s["name"] == "lab"
            for v in s["values"]
        ]
        assert sorted(name for name, _ in cqs) == [
            "cq_energy_rollup_1h", "cq_energy_rollup_1m", "cq_rollup_1h", "cq_rollup_1m",
        ]
        assert rps["fieldstation_meta"] == ("0s", False) and rps["files"] == ("0s", False)
        # The dashboards' $rp variable, with ${__range_ms} as Grafana substitutes it for the span shown.
        for span_ms, policy in [(3_600_000, "raw"), (172_800_000, "raw"), (172_800_001, "rollup_1m"),
                                (30 * 86_400_000, "rollup_1m"), (90 * 86_400_000, "rollup_1h"),
                                (3650 * 86_400_000, "rollup_1h")]:
            query = RP_VARIABLE_QUERY.replace("${__range_ms}", str(span_ms))
            assert [r["rp"] for r in admin.rows(query, "lab")] == [policy], span_ms

        agent = as_user(server.url, "agent", "ag3nt")
        grafana = as_user(server.url, "grafana", "gr'pw")
        # The agent writes (through the default policy, raw) but cannot read; Grafana reads but cannot write.
        with pytest.raises(InfluxError, match="not authorized"):
            agent.query('SELECT * FROM "m"', "lab")
        t = time.time_ns()
        write = SinkSettings(name="x", url=server.url, database="lab", username="agent", password="ag3nt")  # type: ignore[arg-type]
        with InfluxWriter(write) as writer:
            writer.write(f"m,sensor=a value=1.5 {t}".encode())
        assert [r["value"] for r in grafana.rows('SELECT "value" FROM "lab"."raw"."m"', "lab")] == [1.5]
        with pytest.raises(InfluxError, match="not authorized"):
            grafana.query('CREATE DATABASE "other"')

        # A password rotated in the vault is applied; the old one stops working.
        path.write_text(SETUP.format(url=server.url, admin_pw="adm1n", agent_pw="n3w"))
        assert run_setup(path).returncode == 0
        with pytest.raises(InfluxError, match="401"):
            as_user(server.url, "agent", "ag3nt").query("SHOW DATABASES")
    finally:
        server.stop()


def test_the_rollup_query_computes_means(tmp_path: Path) -> None:
    """The continuous query's SELECT … INTO, run by hand over seeded data, writes the per-minute means."""
    server = start_influxd(tmp_path / "influxd", db=None)
    try:
        db = Influx(server.url)
        db.query('CREATE DATABASE "lab"')
        db.query('CREATE RETENTION POLICY "raw" ON "lab" DURATION 30d REPLICATION 1 DEFAULT')
        db.query('CREATE RETENTION POLICY "rollup_1m" ON "lab" DURATION 365d REPLICATION 1')
        t0 = (time.time_ns() // 60_000_000_000 - 10) * 60_000_000_000  # a whole minute, ten minutes ago
        lines = "\n".join(
            f"temp,sensor=t1,unit=K value={v} {t0 + i * 10_000_000_000}"
            for i, v in enumerate([1, 2, 3, 4, 5, 6, 10, 20])
        )
        with InfluxWriter(SinkSettings(name="x", url=server.url, database="lab")) as writer:
            writer.write(lines.encode())
        _, statement = continuous_query("lab", "raw", Rollup(every="1m", keep="365d"))
        select = statement.split(" BEGIN ")[1].removesuffix(" END")
        db.query(
            f"{select.replace(' GROUP BY', f' WHERE time >= {t0} AND time < {t0 + 120_000_000_000} GROUP BY')}", "lab"
        )
        rows = db.rows('SELECT "mean_value" FROM "lab"."rollup_1m"."temp" GROUP BY "sensor"', "lab")
        assert [r["mean_value"] for r in rows] == [3.5, 15.0]
    finally:
        server.stop()


def test_the_energy_rollup_sums_amounts(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "influxd", db=None)
    try:
        db = Influx(server.url)
        db.query('CREATE DATABASE "lab"')
        db.query('CREATE RETENTION POLICY "raw" ON "lab" DURATION 30d REPLICATION 1 DEFAULT')
        db.query('CREATE RETENTION POLICY "rollup_1h" ON "lab" DURATION INF REPLICATION 1')
        t0 = (time.time_ns() // 3_600_000_000_000 - 3) * 3_600_000_000_000  # a whole hour, three hours ago
        db.write(
            [f"energy,sensor=m,counter=active_energy,tariff=peak kwh=0.25,cost=0.05 {t0 + i * 600_000_000_000}"
             for i in range(12)],  # every 10 min for two hours
            "lab",
        )
        _, statement = summed_query("lab", "raw", Rollup(every="1h", keep="INF"), "energy", ("kwh", "cost"))
        select = statement.split(" BEGIN ")[1].removesuffix(" END")
        db.query(select.replace(" GROUP BY", f" WHERE time >= {t0} AND time < {t0 + 7_200_000_000_000} GROUP BY"), "lab")
        rows = db.rows('SELECT "kwh", "cost" FROM "lab"."rollup_1h"."energy"', "lab")
        assert [(r["kwh"], round(r["cost"], 9)) for r in rows] == [(1.5, 0.3), (1.5, 0.3)]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ('raw_max_range = "90d"', "raw_max_range and each rollup's max_range must grow"),
        ('rollups = [{ every = "1m", keep = "365d", max_range = "1d" }, { every = "1h", keep = "INF" }]', "must grow"),
    ],
)
def test_retention_spans_must_grow(tmp_path: Path, retention: str, message: str) -> None:
    path = tmp_path / "influx-setup.toml"
    path.write_text(f'[admin]\nusername = "admin"\npassword = "x"\n[retention]\n{retention}\n')
    result = run_setup(path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_bad_setup_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "influx-setup.toml"
    path.write_text('[admin]\nusername = "admin"\npassword = "x"\n[retention]\nraw = "30 days"\n')
    result = run_setup(path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"fieldstation: {path}: retention.raw: must be a whole number of m, h, d or w (e.g. 30d), or INF"
    )


def test_a_wrong_admin_password_is_one_line(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "influxd", auth=True, db=None)
    try:
        path = tmp_path / "influx-setup.toml"
        path.write_text(SETUP.format(url=server.url, admin_pw="right", agent_pw="a"))
        assert run_setup(path).returncode == 0
        path.write_text(SETUP.format(url=server.url, admin_pw="wrong", agent_pw="a"))
        result = run_setup(path)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"fieldstation influx: {server.url}: 401")
    finally:
        server.stop()


def test_a_new_admin_password_is_handed_over_from_the_one_in_force(tmp_path: Path) -> None:
    """The image's path: first boot sets a random admin password, then the playbook writes the vault's into the
    setup file. With --state the vault's becomes the one in force; the old one is refused afterwards."""
    server = start_influxd(tmp_path / "influxd", auth=True, db=None)
    try:
        path, state = tmp_path / "influx-setup.toml", tmp_path / "state" / "admin.json"
        path.write_text(SETUP.format(url=server.url, admin_pw="f1rstboot-random", agent_pw="a1"))
        assert run_setup(path, "--state", str(state)).returncode == 0
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        path.write_text(SETUP.format(url=server.url, admin_pw="the-vault's", agent_pw="a2"))
        handed = run_setup(path, "--state", str(state))
        assert handed.returncode == 0, handed.stderr
        assert f"admin user admin: password set to the setup file's (it was the one in {state})" in handed.stdout
        assert "the-vault's" not in handed.stdout + handed.stderr
        as_user(server.url, "admin", "the-vault's").query("SHOW USERS")
        with pytest.raises(InfluxError, match="401"):
            as_user(server.url, "admin", "f1rstboot-random").query("SHOW USERS")
        as_user(server.url, "agent", "a2").write(["m v=1"], "lab")
        again = run_setup(path, "--state", str(state))
        assert again.returncode == 0 and again.stdout.strip().endswith("0 changes"), again.stdout
    finally:
        server.stop()


def test_a_refused_admin_password_with_no_login_in_force_left_is_one_line(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "influxd", auth=True, db=None)
    try:
        path, state = tmp_path / "influx-setup.toml", tmp_path / "admin.json"
        path.write_text(SETUP.format(url=server.url, admin_pw="right", agent_pw="a"))
        assert run_setup(path, "--state", str(state)).returncode == 0
        as_user(server.url, "admin", "right").query("SET PASSWORD FOR \"admin\" = 'changed by hand'")
        path.write_text(SETUP.format(url=server.url, admin_pw="vault", agent_pw="a"))
        result = run_setup(path, "--state", str(state))
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"fieldstation influx: {server.url}: 401") and f"({state}) is refused too" in line
        state.write_text("{not json")
        result = run_setup(path, "--state", str(state))
        assert result.returncode == 1
        assert result.stderr.strip() == f"fieldstation influx: {state}: not a state file of influx setup " \
            "(JSONDecodeError): delete it"
    finally:
        server.stop()


def test_each_client_gets_its_own_database_and_a_user_that_reads_only_it(tmp_path: Path) -> None:
    server = start_influxd(tmp_path / "influxd", auth=True, db=None)
    try:
        path = tmp_path / "influx-setup.toml"
        text = SETUP.format(url=server.url, admin_pw="adm1n", agent_pw="ag3nt") + (
            '[[clients]]\nname = "acme"\npassword = "acme-pw"\n[[clients]]\nname = "globex"\npassword = "globex-pw"\n'
        )
        path.write_text(text)
        first = run_setup(path)
        assert first.returncode == 0, first.stderr
        assert "client acme: database client_acme created" in first.stdout
        again = run_setup(path)
        assert again.stdout.strip().endswith("0 changes"), again.stdout
        t = time.time_ns()
        agent = SinkSettings(name="x", url=server.url, database="lab", username="agent", password="ag3nt")  # type: ignore[arg-type]
        with InfluxWriter(agent) as writer:  # the agent writes a client's points into the client's database
            writer.write(f"mv2,client=acme value=1.5 {t}".encode(), "files", "client_acme")
            writer.write(f"mv2,client=globex value=7 {t}".encode(), "files", "client_globex")
            writer.write(f"m,sensor=a value=3 {t}".encode())
        acme = as_user(server.url, "acme", "acme-pw")
        assert [r["value"] for r in acme.rows('SELECT "value" FROM "files"."mv2"', "client_acme")] == [1.5]
        for other in ("client_globex", "lab"):  # another client's data and the station's own stay out of reach
            with pytest.raises(InfluxError, match="not authorized"):
                acme.query('SELECT * FROM "files"."mv2"', other)
        globex = as_user(server.url, "globex", "globex-pw")
        assert [r["value"] for r in globex.rows('SELECT "value" FROM "files"."mv2"', "client_globex")] == [7.0]
    finally:
        server.stop()
