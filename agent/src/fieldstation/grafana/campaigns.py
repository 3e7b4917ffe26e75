"""A dashboard per logger campaign, in a Grafana folder per client: dropped MV2 files appear without a click.

The campaigns are the folders ``archive/<source>/<client>/<campaign>/`` of the sources whose format is ``mv2``
(agent.toml's ``[ingest]``). The inbox touches :data:`CAMPAIGNS_STAMP` when it archives a file into a new
campaign; ``fieldstation-grafana.path`` watches it and re-renders. The file provider for these dashboards uses
``foldersFromFilesStructure``, so ``<client>/<campaign>.json`` lands in the client's folder.

Isolation between clients (a database, a read-only user and a Grafana organization per client) is not done here:
every campaign dashboard reads the station's one datasource.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fieldstation.grafana import queries as q
from fieldstation.grafana.panels import Grid, dashboard, table, target, timeseries
from fieldstation.grafana.settings import GrafanaSettings
from fieldstation.ingest.inbox import IngestSettings

#: Touched by the inbox when a new campaign appears (the agent's StateDirectory).
CAMPAIGNS_STAMP = Path("/var/lib/fieldstation/campaigns.stamp")
FOLDER = "fieldstation-campaigns"


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
    return dashboard(
        uid,
        f"{client} · {campaign}",
        grid.done(),
        description=f"MV2 logger campaign {campaign} of {client}, from dropped files.",
        timezone=gs.timezone,
        time_from="now-30d",
    )


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
