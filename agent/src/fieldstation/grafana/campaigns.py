"""A dashboard per logger campaign, in a Grafana folder per client: dropped MV2 files appear without a click.

The campaigns are the folders ``archive/<source>/<client>/<campaign>/`` of the sources whose format is ``mv2``
(agent.toml's ``[ingest]``). The inbox touches :data:`CAMPAIGNS_STAMP` when it archives a file into a new
campaign; ``fieldstation-grafana.path`` watches it and re-renders. The file provider for these dashboards uses
``foldersFromFilesStructure``, so ``<client>/<campaign>.json`` lands in the client's folder.

A client listed in grafana.toml's ``[[clients]]`` (the inventory's ``influxdb_clients``) has its files in a database
of its own: its dashboards read it through the client's datasource. With ``organizations = true`` the client's
dashboards move to ``fieldstation-clients/<client>/`` and a provider of their own in the client's Grafana
organization (:mod:`fieldstation.grafana.orgs` creates it and records its id), so the main organization never
holds them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fieldstation.grafana import queries as q
from fieldstation.grafana.panels import DATASOURCE, Grid, dashboard, table, target, timeseries
from fieldstation.grafana.settings import GrafanaSettings
from fieldstation.ingest.inbox import IngestSettings

#: Touched by the inbox when a new campaign appears (the agent's StateDirectory).
CAMPAIGNS_STAMP = Path("/var/lib/fieldstation/campaigns.stamp")
FOLDER = "fieldstation-campaigns"
#: Dashboards of clients with an organization of their own, one folder per client.
CLIENTS_FOLDER = "fieldstation-clients"


def campaigns(ingest: IngestSettings | None) -> list[tuple[str, str, str]]:
    """(source, client, campaign) for every campaign folder in the archive, sorted."""
    if ingest is None:
        return []
    out = []
    for source in (s for s in ingest.sources if s.format == "mv2"):
        base = ingest.archive / source.name
        if not base.is_dir():
            continue
        for client in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for campaign in sorted(p for p in client.iterdir() if p.is_dir() and not p.name.startswith(".")):
                out.append((source.name, client.name, campaign.name))
    return out


def _where(client: str, campaign: str, unit: str) -> str:
    return (
        f'"client" = {q.literal(client)} AND "campaign" = {q.literal(campaign)} AND "unit" = {q.literal(unit)} '
        "AND $timeFilter"
    )


def _use_datasource(node: Any, uid: str) -> Any:
    """The dashboard with every reference to the station's datasource pointed at ``uid``."""
    if isinstance(node, dict):
        if node == DATASOURCE:
            return {**DATASOURCE, "uid": uid}
        return {k: _use_datasource(v, uid) for k, v in node.items()}
    if isinstance(node, list):
        return [_use_datasource(v, uid) for v in node]
    return node


def campaign_dashboard(client: str, campaign: str, policy: str | None, gs: GrafanaSettings) -> dict[str, Any]:
    src = f'"{policy}"."mv2"' if policy else '"mv2"'
    grid = Grid()
    grid.row(f"{client} / {campaign}")
    for unit, title in (("W", "Power per channel"), ("V", "Voltage per phase")):
        query = (
            f'SELECT mean("value") FROM {src} WHERE {_where(client, campaign, unit)} '  # noqa: S608 -- literals quoted
            'GROUP BY time($__interval), "device", "channel" fill(none)'
        )
        grid.add(timeseries(title, [target("A", query, alias="$tag_device $tag_channel")], unit), 24, 9)
    last = (
        f'SELECT last("value") FROM {src} WHERE "client" = {q.literal(client)} '  # noqa: S608
        f'AND "campaign" = {q.literal(campaign)} AND $timeFilter GROUP BY "device", "channel", "unit"'
    )
    grid.add(table("Last value per channel", [target("A", last, table=True)], ""), 24, 8)
    uid = "fs-camp-" + hashlib.sha256(f"{client}/{campaign}".encode()).hexdigest()[:16]
    board = dashboard(
        uid,
        f"{client} · {campaign}",
        grid.done(),
        description=f"MV2 logger campaign {campaign} of {client}, from dropped files.",
        timezone=gs.timezone,
        time_from="now-30d",
    )
    own = gs.client(client)
    return board if own is None else _use_datasource(board, own.datasource_uid)


def dashboard_path(client: str, campaign: str, gs: GrafanaSettings) -> str:
    """Where the campaign's dashboard goes under the provisioning directory."""
    own_org = gs.organizations and gs.client(client) is not None
    return f"dashboards/{CLIENTS_FOLDER if own_org else FOLDER}/{client}/{campaign}.json"


def client_provider(gs: GrafanaSettings, client: str, org_id: int) -> dict[str, Any]:
    """The provider of one client's dashboards, in the client's own organization."""
    return {
        "name": f"{CLIENTS_FOLDER}-{client}",
        "orgId": org_id,
        "folder": client,
        "type": "file",
        "disableDeletion": True,
        "allowUiUpdates": False,
        "updateIntervalSeconds": 30,
        "options": {"path": f"{gs.provisioning_path.rstrip('/')}/dashboards/{CLIENTS_FOLDER}/{client}"},
    }


def provider(gs: GrafanaSettings) -> dict[str, Any]:
    return {
        "name": FOLDER,
        "orgId": 1,
        "folder": "",
        "type": "file",
        "disableDeletion": True,
        "allowUiUpdates": False,
        "updateIntervalSeconds": 30,
        "options": {
            "path": f"{gs.provisioning_path.rstrip('/')}/dashboards/{FOLDER}",
            "foldersFromFilesStructure": True,
        },
    }
