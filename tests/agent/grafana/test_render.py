"""`fieldstation grafana render`: the provisioning tree, its schemas, determinism, layout, and one-line errors."""

from __future__ import annotations

import json
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from agent.grafana.provisioning_schema import SCHEMAS
from fieldstation.energy import EnergySettings
from fieldstation.grafana import render, render_files
from fieldstation.grafana.settings import GrafanaSettings, Ups
from fieldstation.loader import load_sensors
from fieldstation.sensors.simulated import Simulated
from harness.agent import fieldstation_cmd
from harness.grafana import load_rendered, panels

EXAMPLE = Path(__file__).parents[3] / "agent" / "src" / "fieldstation" / "example_config.py"
SETTINGS = GrafanaSettings(alerts={"emails": ["lab@example.org"]}, ups=[Ups(sensor="ups", rated_power_w=900)])  # type: ignore[arg-type]
NUT_CONFIG = """\
from fieldstation.sensors.nut import Nut
from fieldstation.sensors.modbus import Modbus
from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated
sensors = {
    "Power": [Nut(name="ups", ups="eaton", description="Server-room UPS", interval=60),
              Modbus(name="mains_meter", model="orno_we515", port="/dev/ttyUSB0", description="Mains")],
    "Host": [Pi(name="pi")],
    "Lab": [Simulated(name="t", unit="°C", limits={"value": (15, 25)})],
}
"""


@pytest.fixture
def station_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.py"
    path.write_text(NUT_CONFIG)
    return path


def render_to(outdir: Path, config: Path, settings: GrafanaSettings = SETTINGS) -> list[str]:
    return render(outdir, load_sensors(config), settings, EnergySettings(timezone="Europe/Paris", default_price=0.2))


def test_every_file_is_written_and_validates_against_our_schema(tmp_path: Path, station_config: Path) -> None:
    changed = render_to(tmp_path, station_config)
    assert sorted(changed) == sorted([
        *SCHEMAS,
        "dashboards/fieldstation/fieldstation-overview.json",
        "dashboards/fieldstation/fieldstation-ups.json",
        "dashboards/fieldstation/fieldstation-energy.json",
        "dashboards/fieldstation/fieldstation-pi.json",
        "dashboards/fieldstation/fieldstation-agent.json",
    ])
    for rel, schema in SCHEMAS.items():
        schema.model_validate(yaml.safe_load((tmp_path / rel).read_text()))
    provider = yaml.safe_load((tmp_path / "dashboards/fieldstation.yaml").read_text())["providers"][0]
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == f"{tmp_path.resolve()}/dashboards/fieldstation"  # where they were written


def test_a_key_grafana_does_not_know_fails_our_schema(tmp_path: Path, station_config: Path) -> None:
    render_to(tmp_path, station_config)
    doc = yaml.safe_load((tmp_path / "dashboards/fieldstation.yaml").read_text())
    doc["providers"][0]["allowUiUpdate"] = True  # a typo: Grafana would ignore it silently
    with pytest.raises(ValueError, match="allowUiUpdate"):
        SCHEMAS["dashboards/fieldstation.yaml"].model_validate(doc)


def test_credentials_come_from_the_environment_and_dashboards_carry_none(tmp_path: Path, station_config: Path) -> None:
    render_to(tmp_path, station_config)
    ds = yaml.safe_load((tmp_path / "datasources/fieldstation.yaml").read_text())["datasources"][0]
    assert ds["uid"] == "fieldstation-influxdb"
    assert ds["user"] == "$FIELDSTATION_INFLUX_USER"
    assert ds["secureJsonData"] == {"password": "$FIELDSTATION_INFLUX_PASSWORD"}
    for path in (tmp_path / "dashboards/fieldstation").glob("*.json"):
        text = path.read_text()
        assert "password" not in text.lower() and "secureJsonData" not in text
        for p in panels(json.loads(text)):
            assert p["datasource"] == {"type": "influxdb", "uid": "fieldstation-influxdb"}


def _subset(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where ``ours`` has something ``theirs`` lacks or holds differently."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{where}: not an object in Grafana's model"]
        return [m for k, v in ours.items() for m in
                (_subset(v, theirs[k], f"{where}.{k}") if k in theirs else [f"{where}.{k}: unknown to Grafana's model"])]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [f"{where}: list differs"]
        return [m for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for m in _subset(a, b, f"{where}[{i}]")]
    return [] if ours == theirs else [f"{where}: {ours!r} became {theirs!r}"]


def test_dashboards_validate_against_grafanas_models(tmp_path: Path, station_config: Path) -> None:
    """Round trip through grafana-foundation-sdk's Dashboard model (Grafana 11.6, pinned): every key we write must be
    one the model knows, with the same value."""
    render_to(tmp_path, station_config)
    register_default_plugins()
    boards, _ = load_rendered(tmp_path)
    assert len(boards) == 5
    for uid, board in boards.items():
        model = Dashboard.from_json(board)
        back = json.loads(json.dumps(model, cls=JSONEncoder))
        assert _subset(board, back, uid) == []


def test_the_model_check_catches_a_misspelt_key() -> None:
    register_default_plugins()
    board = {"uid": "x", "title": "t", "panels": [{"type": "stat", "id": 1, "title": "s", "fieldConfig":
             {"defaults": {"unti": "percent"}, "overrides": []}}]}
    back = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    assert _subset(board, back) == [".panels[0].fieldConfig.defaults.unti: unknown to Grafana's model"]


def test_the_same_input_gives_the_same_bytes_and_stale_files_go(tmp_path: Path, station_config: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    settings = SETTINGS.model_copy(update={"provisioning_path": "/etc/grafana/provisioning"})
    settings.model_fields_set.add("provisioning_path")  # as grafana.toml sets it: the same for both trees
    render_to(first, station_config, settings)
    render_to(second, station_config, settings)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert render_to(first, station_config, settings) == []  # nothing changed, nothing written
    station_config.write_text(NUT_CONFIG.replace('Nut(name="ups", ups="eaton", description="Server-room UPS", interval=60),', ""))
    changed = render_to(first, station_config, settings)
    assert "dashboards/fieldstation/fieldstation-ups.json (removed)" in changed
    assert not (first / "dashboards/fieldstation/fieldstation-ups.json").exists()


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def test_fifty_sensors_in_six_groups_make_a_readable_overview() -> None:
    units = ["°C", "%", "V", "W", "mbar", "K", "", "µS/cm"]
    sensors = []
    for i in range(50):
        s = Simulated(name=f"s{i:02d}", unit=units[i % len(units)], description=f"Sensor {i}")
        s.group = f"Group {i % 6}"
        sensors.append(s)
    files = render_files(sensors, SETTINGS, EnergySettings())
    board = json.loads(files["dashboards/fieldstation/fieldstation-overview.json"])
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == [f"Group {g}" for g in range(6)]
    every = board["panels"]
    for a, b in ((a, b) for i, a in enumerate(every) for b in every[i + 1:]):
        assert not _overlaps(a["gridPos"], b["gridPos"]), (a["title"], b["title"])
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in every)
    shown = panels(board)
    assert len(shown) == 100  # a gauge and a time series per sensor
    assert all(p["fieldConfig"]["defaults"].get("unit") for p in shown)
    assert {p["fieldConfig"]["defaults"]["unit"] for p in shown} >= {"celsius", "percent", "volt", "watt", "none", "suffix:µS/cm"}
    # Each group's panels sit below its row and above the next row.
    tops = [r["gridPos"]["y"] for r in rows] + [10**6]
    for (top, bottom), name in zip(pairwise(tops), (r["title"] for r in rows), strict=True):
        members = [p for p in shown if top < p["gridPos"]["y"] < bottom]
        assert len(members) in (16, 18), name  # 8 or 9 sensors, two panels each
        assert {p["title"] for p in members if p["type"] == "gauge"} <= {s.description for s in sensors if s.group == name}


def test_the_overview_has_a_gauge_per_field_with_its_unit_and_limits(tmp_path: Path, station_config: Path) -> None:
    from fieldstation.grafana.units import grafana_unit

    render_to(tmp_path, station_config)
    boards, _ = load_rendered(tmp_path)
    shown = panels(boards["fieldstation-overview"])
    sensors = {s.name: s for s in load_sensors(station_config)}
    for s in sensors.values():
        gauges = [p for p in shown if p["type"] == "gauge" and f"'{s.name}'" in p["targets"][0]["query"]]
        fields = s.dashboard_fields()
        assert len(gauges) == len(fields), s.name
        for g, f in zip(gauges, fields, strict=True):
            (t,) = g["targets"]
            assert f'last("{f}")' in t["query"]
            assert g["fieldConfig"]["defaults"]["unit"] == grafana_unit(s.unit_of(f)), (s.name, f)
            steps = [x["value"] for x in g["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            assert steps == ([None, *s.limits[f]] if f in s.limits else [None]), (s.name, f)
    assert len({g["fieldConfig"]["defaults"]["unit"] for g in shown if "'pi'" in g["targets"][0]["query"]}) >= 4
    # Every overview panel says which sensor it shows, by its description.
    for p in shown:
        (name,) = {n for n in sensors if f"'{n}'" in p["targets"][0]["query"]}
        about = sensors[name].description or name
        assert about in p["title"] and about in p["description"], p["title"]


def test_every_dashboard_panel_has_a_unit(tmp_path: Path, station_config: Path) -> None:
    render_to(tmp_path, station_config)
    boards, _ = load_rendered(tmp_path)
    for uid, board in boards.items():
        for p in panels(board):
            assert p["fieldConfig"]["defaults"].get("unit"), f"{uid}: {p['title']}"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fieldstation_cmd(*args), capture_output=True, text=True, timeout=60)


def test_the_command_renders_the_example_config(tmp_path: Path) -> None:
    grafana = tmp_path / "grafana.toml"
    grafana.write_text('[alerts]\nemails = ["lab@example.org"]\n')
    result = run("grafana", "render", str(tmp_path / "out"), "--config", str(EXAMPLE), "--grafana", str(grafana))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("9 files changed")
    again = run("grafana", "render", str(tmp_path / "out"), "--config", str(EXAMPLE), "--grafana", str(grafana))
    assert again.stdout.strip() == "0 files changed"


def test_without_grafana_toml_dashboards_render_and_mail_is_skipped_with_a_warning(
    tmp_path: Path, station_config: Path
) -> None:
    out = tmp_path / "out"
    assert not Path("/etc/fieldstation/grafana.toml").exists()  # the default the command would read
    result = run("grafana", "render", str(out), "--config", str(station_config))
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("warning: alerts.emails is empty") and "/etc/fieldstation/grafana.toml" in line
    assert "--grafana" in line
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "datasources/fieldstation.yaml" in written and "alerting/fieldstation-rules.yaml" in written
    assert "dashboards/fieldstation/fieldstation-overview.json" in written
    assert not [w for w in written if "contact-points" in w or "policies" in w or "templates" in w]
    provider = yaml.safe_load((out / "dashboards/fieldstation.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == f"{out.resolve()}/dashboards/fieldstation"
    for rel in written:
        if rel in SCHEMAS:
            SCHEMAS[rel].model_validate(yaml.safe_load((out / rel).read_text()))


def test_the_provider_path_is_grafana_tomls_when_set_and_mail_files_go_with_the_addresses(
    tmp_path: Path, station_config: Path
) -> None:
    out = tmp_path / "out"
    grafana = tmp_path / "grafana.toml"
    grafana.write_text('provisioning_path = "/srv/grafana/provisioning"\n[alerts]\nemails = ["lab@example.org"]\n')
    result = run("grafana", "render", str(out), "--config", str(station_config), "--grafana", str(grafana))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    provider = yaml.safe_load((out / "dashboards/fieldstation.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/srv/grafana/provisioning/dashboards/fieldstation"
    assert (out / "alerting/fieldstation-policies.yaml").exists()
    grafana.write_text("[alerts]\nemails = []\n")
    result = run("grafana", "render", str(out), "--config", str(station_config), "--grafana", str(grafana))
    assert result.returncode == 0, result.stderr
    assert f"{out / 'alerting/fieldstation-policies.yaml'}: written" not in result.stdout
    assert not (out / "alerting/fieldstation-policies.yaml").exists()  # no mail to route: removed
    assert not (out / "alerting/fieldstation-contact-points.yaml").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[alerts]\nemails = ["lab@example.org"]\ngroup_by = ["sensor"]\n',
         "alerts: grouping by ['sensor'] every 10m can send"),
        ('[alerts]\nemails = ["not-an-address"]\n', "alerts.emails.0: String should match pattern"),
        ('[alerts]\nemails = ["a@b.c"]\ngroup_interval = "10 minutes"\n', "alerts.group_interval: must be a whole number of s, m, h or d"),
        ('url = "fieldstation.local:3000"\n', "url: String should match pattern"),
    ],
)
def test_bad_grafana_settings_are_one_line(tmp_path: Path, toml: str, message: str) -> None:
    grafana = tmp_path / "grafana.toml"
    grafana.write_text(toml)
    result = run("grafana", "render", str(tmp_path / "out"), "--config", str(EXAMPLE), "--grafana", str(grafana))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert not (tmp_path / "out" / "alerting").exists() or not any((tmp_path / "out" / "alerting").iterdir())


def test_a_new_campaign_folder_gets_its_dashboard(tmp_path: Path, station_config: Path) -> None:
    from fieldstation.ingest.inbox import IngestSettings, SourceSettings

    ingest = IngestSettings(root=tmp_path / "data", sources=[SourceSettings(name="mv2", format="mv2")])
    out = tmp_path / "out"
    sensors = load_sensors(station_config)
    render(out, sensors, SETTINGS, EnergySettings(), ingest)
    assert not (out / "dashboards/fieldstation-campaigns").exists()
    (ingest.archive / "mv2/acme/winter/02001311").mkdir(parents=True)
    changed = render(out, sensors, SETTINGS, EnergySettings(), ingest)
    assert changed == ["dashboards/fieldstation-campaigns/acme/winter.json"]
    board = json.loads((out / "dashboards/fieldstation-campaigns/acme/winter.json").read_text())
    assert board["title"] == "acme · winter"
    queries = [t["query"] for p in panels(board) for t in p["targets"]]
    assert all('FROM "files"."mv2"' in q and "\"client\" = 'acme' AND \"campaign\" = 'winter'" in q for q in queries)
    providers = yaml.safe_load((out / "dashboards/fieldstation.yaml").read_text())["providers"]
    assert providers[1]["options"]["foldersFromFilesStructure"] is True
    SCHEMAS["dashboards/fieldstation.yaml"].model_validate(yaml.safe_load((out / "dashboards/fieldstation.yaml").read_text()))
    register_default_plugins()
    back = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    assert _subset(board, back) == []
