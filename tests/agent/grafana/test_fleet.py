"""The fleet dashboard and the "station went silent" alert: rendered with grafana.toml's [fleet], valid for
Grafana's schema, and every query asked of a real VictoriaMetrics holding two stations' health readings, tagged as
their central sinks tag them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from agent.grafana.test_schema import validate, validator  # noqa: F401  (the schema check's fixture)
from fieldstation.energy import EnergySettings
from fieldstation.fleet import tagger
from fieldstation.grafana import fleet, render
from fieldstation.grafana.settings import Fleet, GrafanaSettings
from fieldstation.loader import load_sensors
from harness.victoria import VictoriaMetrics

FIELDSTATION = Path(sys.executable).parent / "fieldstation"
EXAMPLE_STATION = Path(__file__).parents[3] / "provisioning" / "example_station.py"


def rendered(tmp_path: Path, gs: GrafanaSettings) -> Path:
    render(tmp_path, load_sensors(EXAMPLE_STATION), gs, EnergySettings())
    return tmp_path


def test_without_fleet_nothing_of_it_is_rendered(tmp_path: Path) -> None:
    out = rendered(tmp_path, GrafanaSettings())
    assert not (out / f"dashboards/fieldstation/{fleet.DASHBOARD_UID}.json").exists()
    assert fleet.DATASOURCE_UID not in (out / "datasources/fieldstation.yaml").read_text()
    assert fleet.SILENT_RULE_UID not in (out / "alerting/fieldstation-rules.yaml").read_text()


def test_the_fleet_dashboard_validates_and_its_alert_resolves(
    tmp_path: Path,
    validator: Path,  # noqa: F811  (the imported fixture)
) -> None:
    out = rendered(tmp_path, GrafanaSettings(fleet=Fleet(url="http://127.0.0.1:8428", silent_after="5m")))
    board = out / f"dashboards/fieldstation/{fleet.DASHBOARD_UID}.json"
    result = validate(validator, [board])
    assert result.returncode == 0, result.stdout + result.stderr
    panels = json.loads(board.read_text())["panels"]
    assert all(p["datasource"]["uid"] == fleet.DATASOURCE_UID for p in panels if p["type"] != "row")
    datasources = yaml.safe_load((out / "datasources/fieldstation.yaml").read_text())["datasources"]
    vm = next(d for d in datasources if d["uid"] == fleet.DATASOURCE_UID)
    assert (vm["type"], vm["url"]) == ("prometheus", "http://127.0.0.1:8428")
    groups = yaml.safe_load((out / "alerting/fieldstation-rules.yaml").read_text())["groups"]
    (rule,) = next(g for g in groups if g["name"] == "fleet")["rules"]
    assert rule["data"][0]["datasourceUid"] == fleet.DATASOURCE_UID
    assert rule["data"][2]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [300]}
    assert rule["noDataState"] == "Alerting"  # a fleet of which nothing arrives at all is silent too


FLEET_ONLY_TOML = """
url = "https://fleet-central.local:3000"
fleet_only = true
[fleet]
url = "http://127.0.0.1:8428"
silent_after = "10m"
[alerts]
emails = ["lab-alerts@example.org"]
"""


def render_cli(tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    """`fieldstation grafana render` as the central server's grafana role runs it: no config.py, no agent.toml."""
    (tmp_path / "grafana.toml").write_text(toml)
    argv = [str(FIELDSTATION), "grafana", "render", str(tmp_path / "out"),
            "--config", str(tmp_path / "no-config.py"), "--grafana", str(tmp_path / "grafana.toml")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_fleet_only_renders_the_fleet_alone_without_config_py(
    tmp_path: Path,
    validator: Path,  # noqa: F811  (the imported fixture)
) -> None:
    result = render_cli(tmp_path, FLEET_ONLY_TOML)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "alerting/fieldstation-contact-points.yaml",
        "alerting/fieldstation-policies.yaml",
        "alerting/fieldstation-rules.yaml",
        "alerting/fieldstation-templates.yaml",
        "dashboards/fieldstation.yaml",
        f"dashboards/fieldstation/{fleet.DASHBOARD_UID}.json",
        "datasources/fieldstation.yaml",
    ]
    (vm,) = yaml.safe_load((out / "datasources/fieldstation.yaml").read_text())["datasources"]  # no InfluxDB
    assert (vm["uid"], vm["type"], vm["url"], vm["isDefault"]) == (
        fleet.DATASOURCE_UID, "prometheus", "http://127.0.0.1:8428", True)
    (group,) = yaml.safe_load((out / "alerting/fieldstation-rules.yaml").read_text())["groups"]
    (rule,) = group["rules"]
    assert rule["uid"] == fleet.SILENT_RULE_UID and rule["data"][0]["datasourceUid"] == fleet.DATASOURCE_UID
    assert rule["data"][2]["model"]["conditions"][0]["evaluator"]["params"] == [600]
    assert "https://fleet-central.local:3000/d/fieldstation-fleet" in rule["annotations"]["link"]
    (point,) = yaml.safe_load((out / "alerting/fieldstation-contact-points.yaml").read_text())["contactPoints"]
    assert point["receivers"][0]["settings"]["addresses"] == "lab-alerts@example.org"
    (provider,) = yaml.safe_load((out / "dashboards/fieldstation.yaml").read_text())["providers"]
    assert provider["options"]["path"] == f"{out.resolve()}/dashboards/fieldstation"
    result = validate(validator, [out / f"dashboards/fieldstation/{fleet.DASHBOARD_UID}.json"])
    assert result.returncode == 0, result.stdout + result.stderr
    # Without alert addresses: no mail files, and a warning that says so.
    result = render_cli(tmp_path, FLEET_ONLY_TOML.replace('"lab-alerts@example.org"', ""))
    assert result.returncode == 0, result.stderr
    assert "alerts.emails is empty" in result.stderr
    assert not list((out / "alerting").glob("fieldstation-contact-points.yaml"))


def test_fleet_only_without_a_fleet_section_is_refused_naming_both(tmp_path: Path) -> None:
    result = render_cli(tmp_path, "fleet_only = true\n")
    assert result.returncode != 0
    assert "fleet_only = true needs a [fleet] section" in result.stderr and "grafana.toml" in result.stderr
    assert "Traceback" not in result.stderr


def health_lines(now_ns: int, *, stale: bool, backup_ok: bool) -> list[str]:
    """What a station's agent, its pi sensor and its backup write, as line protocol."""
    return [
        f"fieldstation_spool,sensor=agent,sink=central,unit=count depth=42i {now_ns}",
        f"fieldstation_spool,sensor=agent,sink=central,unit=s oldest_unsent_age=12.5 {now_ns}",
        f"fieldstation_sensor,sensor=t1,unit=count reads=10i,errors=0i,stale={str(stale).lower()} {now_ns}",
        f"fieldstation_sensor,sensor=t2,unit=count reads=10i,errors=0i,stale=false {now_ns}",
        f"fieldstation_backup,kind=backup ok={str(backup_ok).lower()},bytes=1000i,duration_s=2.0 {now_ns}",
        f"fieldstation_backup,kind=restore_drill ok=true,duration_s=9.0 {now_ns}",
        f"pi,sensor=pi,unit=B sd_bytes_written=4096.0 {now_ns}",
        f"fieldstation_agent,sensor=agent,unit=B/d bytes_written_per_day=2000000.0 {now_ns}",
    ]


def write(vm: VictoriaMetrics, station: str, lines: list[str]) -> None:
    tag = tagger({"station": station})
    assert tag is not None
    body = "\n".join(tag(lines)).encode()
    req = urllib.request.Request(f"{vm.url}/write?db=fieldstation&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def by_station(vm: VictoriaMetrics, key: str, at: float | None = None) -> dict[str, float]:
    expr = fleet.QUERIES[key][1].replace("$station", ".*")
    return {"/".join(v for k, v in sorted(r["metric"].items())): float(r["value"][1]) for r in vm.query(expr, at)}


def test_every_panel_and_the_alert_query_answer_per_station_from_real_victoriametrics(
    victoria: VictoriaMetrics,
) -> None:
    now = time.time_ns()
    then = now - 600 * 10**9
    write(victoria, "plant-a", health_lines(now, stale=True, backup_ok=False))
    write(victoria, "plant-b", health_lines(then, stale=False, backup_ok=True))  # silent for 10 min
    victoria.flush()
    # New series are searchable within a second or so: poll the first query until both stations answer.
    deadline = time.monotonic() + 30
    while len(by_station(victoria, "silence")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # The stat panels: instant queries now, over windows that reach a silent station's last readings.
    silence = by_station(victoria, "silence")
    assert silence["plant-a"] < 300 < silence["plant-b"]
    assert by_station(victoria, "stale") == {"plant-a": 1, "plant-b": 0}
    assert by_station(victoria, "failed") == {
        "backup/plant-a": 1,
        "restore_drill/plant-a": 0,
        "backup/plant-b": 0,
        "restore_drill/plant-b": 0,
    }
    # The time series: each station as of its own readings (a silent one's line stops there).
    for station, at in (("plant-a", now / 1e9 + 1), ("plant-b", then / 1e9 + 1)):
        assert by_station(victoria, "backlog", at)[station] == 42
        assert by_station(victoria, "oldest", at)[station] == 12.5
        assert by_station(victoria, "sd_writes", at)[station] == 4096
        assert by_station(victoria, "agent_writes", at)[station] == 2e6
    # The alert's query is the silence panel's over every station.
    gs = GrafanaSettings(fleet=Fleet())
    expr = fleet.silent_rule(gs)["data"][0]["model"]["expr"]
    silent = {r["metric"]["station"] for r in victoria.query(expr) if float(r["value"][1]) > 300}
    assert silent == {"plant-b"}
