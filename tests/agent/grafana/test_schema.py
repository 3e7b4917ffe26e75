"""Rendered provisioning against Grafana's published formats.

- Dashboards: every rendered dashboard (the example station, a station with every driver, a campaign) against
  @grafana/schema 11.6.9's Dashboard type and each panel plugin's Options and field config (``schema/validate.mjs``,
  npm packages pinned in ``schema/package-lock.json``; node and npm are Debian's).
- Alerting: what Grafana's file provisioning resolves by name or uid: every rule's condition and expressions name
  refIds it has, datasource uids exist, uids are unique, durations parse, the policy's receiver and the templates
  the contact point uses exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.grafana.test_units import EVERY_DRIVER
from fieldstation.energy import EnergySettings
from fieldstation.grafana import render
from fieldstation.grafana.settings import Fleet, GrafanaSettings, Ups
from fieldstation.loader import load_sensors

SCHEMA = Path(__file__).parent / "schema"
EXAMPLE_STATION = Path(__file__).parents[3] / "provisioning" / "example_station.py"
SETTINGS = GrafanaSettings(
    alerts={"emails": ["lab@example.org"]},  # type: ignore[arg-type]
    ups=[Ups(sensor="ups", rated_power_w=900)],
    backups=True,
)
DURATION = re.compile(r"^\d+[smhd]$")


@pytest.fixture(scope="module")
def validator() -> Path:
    """The pinned packages, installed once from the lock file (the npm registry is the only thing fetched)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm (Debian's nodejs, npm) are needed: tests/run installs them"
    if not (SCHEMA / "node_modules" / "@grafana" / "schema").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SCHEMA, check=True, timeout=600,
                       capture_output=True)
    return SCHEMA / "validate.mjs"


def validate(validator: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node
    return subprocess.run([node, str(validator), *map(str, files)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Provisioning trees: the example station and every driver (with a campaign dashboard), a central server's."""
    from fieldstation.ingest.inbox import IngestSettings, SourceSettings

    root = tmp_path_factory.mktemp("schema")
    config = root / "config.py"
    config.write_text(EVERY_DRIVER)
    ingest = IngestSettings(root=root / "data", sources=[SourceSettings(name="mv2", format="mv2")])
    (ingest.archive / "mv2/acme/winter").mkdir(parents=True)
    trees = []
    for name, path in (("example", EXAMPLE_STATION), ("every-driver", config)):
        out = root / name
        render(out, load_sensors(path), SETTINGS, EnergySettings(), ingest)
        trees.append(out)
    out = root / "fleet-only"  # a fleet's central server: the fleet's dashboard, rule and mail only
    render(out, [], SETTINGS.model_copy(update={"fleet_only": True, "fleet": Fleet()}), EnergySettings())
    return [*trees, out]


def test_every_rendered_dashboard_validates_against_grafana_schema(validator: Path, rendered: list[Path]) -> None:
    files = sorted(p for tree in rendered for p in (tree / "dashboards").rglob("*.json"))
    assert len(files) == 13  # 5 + 5 dashboards, a campaign in each tree, the fleet's
    result = validate(validator, files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("panels valid")


def test_the_schema_check_catches_a_wrong_key_and_a_wrong_type(validator: Path, rendered: list[Path],
                                                               tmp_path: Path) -> None:
    board = json.loads((rendered[0] / "dashboards/fieldstation/fieldstation-overview.json").read_text())
    gauge = next(p for p in board["panels"] if p["type"] == "gauge")
    gauge["options"]["showTresholdMarkers"] = True  # misspelt: Grafana would ignore it
    board["panels"][0]["gridPos"]["w"] = "24"  # a string
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(board))
    result = validate(validator, [bad])
    assert result.returncode == 1
    assert "showTresholdMarkers" in result.stdout and "/panels/0/gridPos/w: must be number" in result.stdout


def _refs(expression: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Z])\b", expression)) or {expression}


def test_alerting_files_resolve_in_grafanas_file_provisioning(rendered: list[Path]) -> None:
    for tree in rendered:
        datasources = yaml.safe_load((tree / "datasources/fieldstation.yaml").read_text())["datasources"]
        known = {d["uid"] for d in datasources} | {"__expr__"}
        groups = yaml.safe_load((tree / "alerting/fieldstation-rules.yaml").read_text())["groups"]
        uids: list[str] = []
        for g in groups:
            assert DURATION.match(g["interval"]), g["name"]
            titles = [r["title"] for r in g["rules"]]
            assert len(titles) == len(set(titles)), g["name"]  # Grafana refuses two rules of one title in a folder
            for r in g["rules"]:
                uids.append(r["uid"])
                assert DURATION.match(r["for"]), r["title"]
                refs: dict[str, dict[str, Any]] = {d["refId"]: d for d in r["data"]}
                assert r["condition"] in refs, r["title"]
                for ref, d in refs.items():
                    assert d["model"]["refId"] == ref and d["datasourceUid"] in known, (r["title"], ref)
                    if d["datasourceUid"] == "__expr__":
                        assert _refs(d["model"]["expression"]) <= set(refs) - {ref}, (r["title"], ref)
                    else:
                        assert d["relativeTimeRange"]["from"] > 0, (r["title"], ref)
        assert len(uids) == len(set(uids))
        points = yaml.safe_load((tree / "alerting/fieldstation-contact-points.yaml").read_text())["contactPoints"]
        (policy,) = yaml.safe_load((tree / "alerting/fieldstation-policies.yaml").read_text())["policies"]
        assert policy["receiver"] in {p["name"] for p in points}
        assert all(DURATION.match(policy[k]) for k in ("group_wait", "group_interval", "repeat_interval"))
        templates = yaml.safe_load((tree / "alerting/fieldstation-templates.yaml").read_text())["templates"]
        defined = {m for t in templates for m in re.findall(r'\{\{ define "([^"]+)" \}\}', t["template"])}
        used = {m for p in points for rcv in p["receivers"] for v in rcv["settings"].values() if isinstance(v, str)
                for m in re.findall(r'\{\{ template "([^"]+)"', v)}
        assert used and used <= defined
