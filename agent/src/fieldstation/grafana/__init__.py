"""``fieldstation grafana render OUTDIR``: Grafana file provisioning generated from config.py and the inventory.

OUTDIR mirrors Grafana's provisioning tree (``/etc/grafana/provisioning``)::

    datasources/fieldstation.yaml          InfluxDB, uid fieldstation-influxdb, credentials from the environment
    dashboards/fieldstation.yaml           the provider: allowUiUpdates false, files are the truth
    dashboards/fieldstation/*.json         overview, UPS, energy, Raspberry Pi, agent
    dashboards/fieldstation-campaigns/<client>/<campaign>.json   a dashboard per logger campaign (dropped files)
    dashboards/fieldstation-clients/<client>/<campaign>.json     … of a client with its own organization
    alerting/fieldstation-rules.yaml       limits, stale sensors, UPS, backups
    alerting/fieldstation-contact-points.yaml, -policies.yaml, -templates.yaml

With a ``[fleet]`` section (a fleet's central server) also the VictoriaMetrics datasource (uid
fieldstation-victoriametrics), dashboards/fieldstation/fieldstation-fleet.json and the "station went silent" rule
(fieldstation.grafana.fleet). With ``fleet_only = true`` as well (the central server, which is no station) only
those, the provider and the mail files: no InfluxDB datasource, no station dashboard or rule, no config.py read.

The same inputs give the same bytes (sorted keys, fixed uids, no timestamps), so Ansible reports a change only
when something changed. Files of ours that a new config no longer needs (a UPS dashboard after the last UPS is
gone) are removed.

Without alert addresses (no grafana.toml, or ``alerts.emails`` empty) the dashboards, datasource and rules are
rendered and mail is skipped with a warning: no contact point, policy or templates. The dashboard provider's path
is ``provisioning_path`` when grafana.toml sets it (Ansible does), else OUTDIR: Grafana finds the dashboards where
they were written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from fieldstation.energy import EnergySettings
from fieldstation.grafana import alerting, dashboards, fleet
from fieldstation.grafana import campaigns as campaigns_mod
from fieldstation.grafana.panels import DATASOURCE_UID
from fieldstation.grafana.settings import DEFAULT_GRAFANA_SETTINGS, Client, GrafanaSettings
from fieldstation.ingest.inbox import IngestSettings
from fieldstation.sensor import Sensor

PREFIX = "fieldstation"


def _client_datasource(gs: GrafanaSettings, client: Client, org_id: int) -> dict[str, Any]:
    """The client's database through its read-only InfluxDB user, in its organization (or the main one)."""
    return {
        "name": f"{client.name} InfluxDB",
        "uid": client.datasource_uid,
        "orgId": org_id,
        "type": "influxdb",
        "access": "proxy",
        "url": gs.datasource.url,
        "isDefault": gs.organizations,  # the only datasource of its organization
        "editable": False,
        "user": f"${client.env_prefix}_USER",
        "jsonData": {"dbName": client.db, "httpMode": "POST", "timeInterval": "10s"},
        "secureJsonData": {"password": f"${client.env_prefix}_PASSWORD"},
    }


def client_orgs(gs: GrafanaSettings, org_ids: dict[str, int]) -> dict[str, int]:
    """Client → the organization its datasource and dashboards go to: its own (when organizations are on and
    ``fieldstation grafana orgs`` has created it), else the main one (1). Clients still waiting for their
    organization are left out, so nothing of theirs lands in the main organization meanwhile."""
    if not gs.organizations:
        return {c.name: 1 for c in gs.clients}
    return {c.name: org_ids[c.name] for c in gs.clients if c.name in org_ids}


def datasource_file(gs: GrafanaSettings, orgs: dict[str, int] | None = None) -> dict[str, Any]:
    ds = gs.datasource
    orgs = orgs or {}
    clients = [_client_datasource(gs, c, orgs[c.name]) for c in gs.clients if c.name in orgs]
    return {
        "apiVersion": 1,
        "deleteDatasources": [],
        "datasources": [
            {
                "name": "Fieldstation InfluxDB",
                "uid": DATASOURCE_UID,
                "orgId": 1,
                "type": "influxdb",
                "access": "proxy",
                "url": ds.url,
                "isDefault": True,
                "editable": False,
                # Grafana expands $VAR in provisioning files: the secrets stay in grafana-server's environment.
                "user": f"${ds.user_env}",
                "jsonData": {"dbName": ds.database, "httpMode": "POST", "timeInterval": "10s"},
                "secureJsonData": {"password": f"${ds.password_env}"},
            },
            *clients,
        ],
    }


def provider_file(
    gs: GrafanaSettings, with_campaigns: bool = False, orgs: dict[str, int] | None = None
) -> dict[str, Any]:
    extra = [campaigns_mod.provider(gs)] if with_campaigns else []
    if with_campaigns and gs.organizations:
        extra += [campaigns_mod.client_provider(gs, name, org_id) for name, org_id in sorted((orgs or {}).items())]
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": PREFIX,
                "orgId": 1,
                "folder": gs.alerts.folder,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{gs.provisioning_path.rstrip('/')}/dashboards/{PREFIX}"},
            },
            *extra,
        ],
    }


def _kind(sensors: list[Sensor], driver: str) -> list[Sensor]:
    return [s for s in sensors if type(s).driver == driver]


def render_files(
    sensors: list[Sensor],
    gs: GrafanaSettings,
    es: EnergySettings,
    ingest: IngestSettings | None = None,
    org_ids: dict[str, int] | None = None,
) -> dict[str, str]:
    """Relative path → file content, for every file of ours. ``org_ids``: what ``fieldstation grafana orgs``
    recorded (client → organization id)."""
    if gs.fleet_only:
        return fleet_files(gs)
    orgs = client_orgs(gs, org_ids or {})
    nuts = _kind(sensors, "nut")
    boards = [
        dashboards.overview(sensors, gs),
        dashboards.ups(nuts, gs),
        dashboards.energy(_kind(sensors, "modbus"), gs, es),
        dashboards.pi(_kind(sensors, "pi"), gs),
        dashboards.agent(gs),
    ]
    datasources, rules = datasource_file(gs, orgs), alerting.rules_file(sensors, nuts, gs)
    if gs.fleet is not None:  # a fleet's central server: VictoriaMetrics, the fleet dashboard and its alert
        datasources["datasources"].append(fleet.datasource(gs))
        rules["groups"].append(fleet.rules_group(gs))
        boards.append(fleet.dashboard(gs))
    out = {
        f"datasources/{PREFIX}.yaml": yaml_text(datasources),
        f"dashboards/{PREFIX}.yaml": yaml_text(provider_file(gs, with_campaigns=ingest is not None, orgs=orgs)),
        f"alerting/{PREFIX}-rules.yaml": yaml_text(rules),
    }
    if gs.alerts.emails:
        out |= {
            f"alerting/{PREFIX}-contact-points.yaml": yaml_text(alerting.contact_points_file(gs)),
            f"alerting/{PREFIX}-policies.yaml": yaml_text(alerting.policies_file(sensors, nuts, gs)),
            f"alerting/{PREFIX}-templates.yaml": yaml_text(alerting.templates_file()),
        }
    for board in boards:
        if board is not None:
            out[f"dashboards/{PREFIX}/{board['uid']}.json"] = json.dumps(board, indent=2, sort_keys=True) + "\n"
    policy = ingest.retention_policy if ingest is not None else None
    for _source, client, campaign in campaigns_mod.campaigns(ingest):
        if gs.client(client) is not None and client not in orgs:
            continue  # its organization does not exist yet: `fieldstation grafana orgs` first
        board = campaigns_mod.campaign_dashboard(client, campaign, policy, gs)
        out[campaigns_mod.dashboard_path(client, campaign, gs)] = json.dumps(board, indent=2, sort_keys=True) + "\n"
    return out


def fleet_files(gs: GrafanaSettings) -> dict[str, str]:
    """A fleet's central server: VictoriaMetrics (its default datasource), the fleet dashboard, the silent-station
    rule, and mail when alerts.emails is set."""
    vm = fleet.datasource(gs) | {"isDefault": True}
    datasources = {"apiVersion": 1, "deleteDatasources": [], "datasources": [vm]}
    rules = {"apiVersion": 1, "groups": [fleet.rules_group(gs)]}
    board = fleet.dashboard(gs)
    out = {
        f"datasources/{PREFIX}.yaml": yaml_text(datasources),
        f"dashboards/{PREFIX}.yaml": yaml_text(provider_file(gs)),
        f"alerting/{PREFIX}-rules.yaml": yaml_text(rules),
        f"dashboards/{PREFIX}/{board['uid']}.json": json.dumps(board, indent=2, sort_keys=True) + "\n",
    }
    if gs.alerts.emails:
        out |= {
            f"alerting/{PREFIX}-contact-points.yaml": yaml_text(alerting.contact_points_file(gs)),
            f"alerting/{PREFIX}-policies.yaml": yaml_text(alerting.policies_file([], [], gs)),
            f"alerting/{PREFIX}-templates.yaml": yaml_text(alerting.templates_file()),
        }
    return out


HEADER = "# Generated by `fieldstation grafana render` from config.py and the inventory. Do not edit: re-render.\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated values are written out, never as &anchors a reader must follow


def yaml_text(data: dict[str, Any]) -> str:
    """A provisioning file as render writes it (header, sorted keys, no anchors): rename-series re-writes with it."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=120, default_flow_style=False)
    return HEADER + body


def render(
    outdir: Path, sensors: list[Sensor], gs: GrafanaSettings, es: EnergySettings, ingest: IngestSettings | None = None
) -> list[str]:
    """Write the files (atomically, only those that changed) and remove stale ones of ours; returns what changed."""
    from fieldstation.grafana.orgs import load_state

    org_ids = load_state(gs.orgs_state) if gs.organizations else {}
    if "provisioning_path" not in gs.model_fields_set:
        gs = gs.model_copy(update={"provisioning_path": str(outdir.resolve())})
    files = render_files(sensors, gs, es, ingest, org_ids)
    if not gs.alerts.emails:
        print(
            f"warning: alerts.emails is empty (set it in {DEFAULT_GRAFANA_SETTINGS} or the file given with "
            "--grafana): no alert mails; dashboards, datasource and alert rules rendered, no contact point or policy",
            file=sys.stderr,
            flush=True,
        )
    changed = []
    for rel, content in sorted(files.items()):
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
        changed.append(rel)
    ours = [*(outdir / "dashboards").glob(f"{PREFIX}*/**/*.json"), *(outdir / "alerting").glob(f"{PREFIX}-*.yaml")]
    for stale in sorted(ours):
        rel = stale.relative_to(outdir).as_posix()
        if rel not in files:
            stale.unlink()
            changed.append(f"{rel} (removed)")
    return changed
