"""``fieldstation grafana orgs``: one Grafana organization per client, through Grafana's HTTP API (grafana-client).

Grafana OSS has no datasource permissions: a team or a folder hides nothing from a login that can query the
organization's datasources. What isolates a client is an organization of its own that holds only its datasource
(its InfluxDB database, read through its read-only InfluxDB user) and its campaign dashboards, with the client's
logins members of that organization and of no other.

The split of work:

* this command, through the API (what file provisioning cannot do): the organization, the client's logins (Viewers),
  a team per client holding them, the logins removed from every other organization (the main one included, where
  Grafana puts new users by default);
* ``fieldstation grafana render``, through file provisioning as for everything else: the client's datasource and
  dashboard provider, with the ``orgId`` this command recorded in :attr:`GrafanaSettings.orgs_state`.

Idempotent: a second run changes nothing and says so. A login's password is set when the login is created, and
again only with ``--reset-passwords`` (Ansible passes it when the vault's passwords change): setting it on every run
would log the client out each time.

Input: ``/etc/fieldstation/grafana-orgs.toml`` (0600: the admin password and the logins' passwords, from the vault),
plus grafana.toml for the clients themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fieldstation.grafana.settings import GrafanaSettings

DEFAULT_ORGS_FILE = Path("/etc/fieldstation/grafana-orgs.toml")
#: The role a client's login has in its organization: it reads dashboards, edits nothing.
CLIENT_ROLE = "Viewer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(_Strict):
    client: str = Field(description="The client (grafana.toml [[clients]] name) this login belongs to.")
    login: str = Field(pattern=r"^[A-Za-z0-9._@-]+$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = ""
    password: SecretStr = Field(min_length=8)


class OrgsSettings(_Strict):
    url: str = Field("http://127.0.0.1:3000", pattern=r"^https?://", description="Grafana, from this host.")
    admin_user: str = "admin"
    admin_password: SecretStr = Field(min_length=1)
    timeout: float = Field(10, gt=0, description="Seconds per API request.")
    logins: list[Login] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> OrgsSettings:
        names = [u.login for u in self.logins]
        if len(set(names)) != len(names):
            raise ValueError("logins: each login may appear once")
        if self.admin_user in names:
            raise ValueError(f"logins: {self.admin_user!r} is the admin, not a client login")
        return self


class OrgsError(Exception):
    """Grafana unreachable, refused the admin's credentials, or answered something we cannot use: one line."""


def load_state(path: Path) -> dict[str, int]:
    """Client → organization id; empty when the command never ran. A damaged file is an error, not an empty map."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OrgsError(f"{path}: not a state file of `fieldstation grafana orgs` ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int for k, v in data.items()):
        raise OrgsError(f"{path}: expected a JSON object of client name to organization id")
    return data


def _save_state(path: Path, state: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Api:
    """The few calls we make, on grafana-client, each turned into :class:`OrgsError` with what was being done."""

    def __init__(self, settings: OrgsSettings) -> None:
        from grafana_client.api import GrafanaApi

        self.settings = settings
        self.api = GrafanaApi.from_url(
            settings.url,
            credential=(settings.admin_user, settings.admin_password.get_secret_value()),
            timeout=settings.timeout,
        )

    def _error(self, doing: str, exc: Exception) -> OrgsError:
        from grafana_client.client import GrafanaException, GrafanaUnauthorizedError

        if isinstance(exc, GrafanaUnauthorizedError):
            return OrgsError(
                f"Grafana at {self.settings.url} refused the admin login {self.settings.admin_user!r} "
                f"while {doing} (check grafana_admin_password in the vault)"
            )
        if isinstance(exc, GrafanaException):
            reason = exc.message if exc.status_code else f"no answer ({exc.message})"
            return OrgsError(f"Grafana at {self.settings.url}: {doing}: {reason}")
        # niquests' connection errors, a reply that is not JSON or lacks a key we need
        return OrgsError(f"Grafana at {self.settings.url}: {doing}: {type(exc).__name__}: {exc}")

    def call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._error(doing, exc) from exc

    def missing(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any | None:
        """``fn(*args)``, or None when Grafana answers 404."""
        from grafana_client.client import GrafanaClientError

        try:
            return fn(*args)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise self._error(doing, exc) from exc
        except Exception as exc:
            raise self._error(doing, exc) from exc

    def close(self) -> None:
        self.api.client.s.close()

    def in_org(self, org_id: int) -> dict[str, str]:
        return {"X-Grafana-Org-Id": str(org_id)}


def sync(
    gs: GrafanaSettings, settings: OrgsSettings, *, reset_passwords: bool = False, say: Callable[[str], None] = print
) -> int:
    """Bring Grafana's organizations, logins and teams in line with the inventory. Returns the number of changes."""
    clients = {c.name for c in gs.clients}
    for login in settings.logins:
        if login.client not in clients:
            known = ", ".join(sorted(clients)) or "none"
            raise OrgsError(f"login {login.login!r}: client {login.client!r} is not a client (clients: {known})")
    api = _Api(settings)
    try:
        return _sync(api, gs, settings=settings, clients=clients, reset_passwords=reset_passwords, say=say)
    finally:
        api.close()


def _sync(
    api: _Api,
    gs: GrafanaSettings,
    *,
    settings: OrgsSettings,
    clients: set[str],
    reset_passwords: bool,
    say: Callable[[str], None],
) -> int:
    g = api.api
    api.call("checking its health", g.client.GET, "/health")
    changes = 0
    state: dict[str, int] = {}

    for client in sorted(clients):
        org = api.missing(f"looking up organization {client!r}", g.organization.find_organization, client)
        if org is None:
            created = api.call(
                f"creating organization {client!r}", g.organization.create_organization, {"name": client}
            )
            org_id = int(created["orgId"])
            changes += 1
            say(f"organization {client}: created (id {org_id})")
        else:
            org_id = int(org["id"])
        state[client] = org_id
        listed = api.call(f"listing {client!r}'s members", g.organizations.organization_user_list, org_id)
        members = {m["login"]: m for m in listed}
        if settings.admin_user not in members:  # the admin works in the org through X-Grafana-Org-Id
            api.call(
                f"adding the admin to {client!r}",
                g.organizations.organization_user_add,
                org_id,
                {"loginOrEmail": settings.admin_user, "role": "Admin"},
            )
            changes += 1
        team_id = _ensure_team(api, client, org_id, say)
        changes += team_id[1]
        wanted = [u for u in settings.logins if u.client == client]
        for login in wanted:
            changes += _ensure_login(
                api,
                login,
                org_id=org_id,
                member=members.get(login.login),
                team_id=team_id[0],
                reset_password=reset_passwords,
                say=say,
            )
        # Logins of ours that the inventory no longer lists for this client lose their access to it.
        keep = {u.login for u in wanted} | {settings.admin_user}
        for login_name, member in sorted(members.items()):
            if login_name not in keep and member.get("role") == CLIENT_ROLE:
                api.call(
                    f"removing {login_name!r} from {client!r}",
                    g.organizations.organization_user_delete,
                    org_id,
                    member["userId"],
                )
                changes += 1
                say(f"organization {client}: {login_name} removed (no longer in the inventory)")

    previous = load_state(gs.orgs_state)
    for gone in sorted(set(previous) - set(state)):
        say(f"organization {gone} (id {previous[gone]}): no longer a client; left in Grafana with its dashboards")
    if previous != state:
        _save_state(gs.orgs_state, state)
        say(f"{gs.orgs_state}: written")
    return changes


def _ensure_team(api: _Api, client: str, org_id: int, say: Callable[[str], None]) -> tuple[int, int]:
    """The client's team in its organization: (team id, changes)."""
    c = api.api.client
    headers = api.in_org(org_id)
    found = api.call(f"looking up team {client!r}", c.GET, f"/teams/search?name={client}", headers=headers)
    for team in found.get("teams", []):
        if team.get("name") == client:
            return int(team["id"]), 0
    created = api.call(f"creating team {client!r}", c.POST, "/teams", json={"name": client}, headers=headers)
    say(f"organization {client}: team {client} created")
    return int(created["teamId"]), 1


def _ensure_login(
    api: _Api,
    login: Login,
    *,
    org_id: int,
    member: dict[str, Any] | None,
    team_id: int,
    reset_password: bool,
    say: Callable[[str], None],
) -> int:
    g = api.api
    c = g.client
    changes = 0
    where = f"organization {login.client}: {login.login}"
    user = api.missing(f"looking up login {login.login!r}", g.users.find_user, login.login)
    if user is None:
        created = api.call(
            f"creating login {login.login!r}",
            g.admin.create_user,
            {
                "login": login.login,
                "email": login.email,
                "name": login.name or login.login,
                "password": login.password.get_secret_value(),
                "OrgId": org_id,
            },
        )
        user_id = int(created["id"])
        # Created into the organization with Grafana's auto_assign_org_role: make sure it is ours.
        api.call(
            f"making {login.login!r} a {CLIENT_ROLE}",
            g.organizations.organization_user_update,
            org_id,
            user_id,
            CLIENT_ROLE,
        )
        member = {"role": CLIENT_ROLE}
        changes += 1
        say(f"{where}: login created ({CLIENT_ROLE})")
    else:
        user_id = int(user["id"])
        if reset_password:
            api.call(
                f"setting {login.login!r}'s password",
                g.admin.change_user_password,
                user_id,
                login.password.get_secret_value(),
            )
            changes += 1
            say(f"{where}: password set")
    if member is None:
        api.call(
            f"adding {login.login!r} to {login.client!r}",
            g.organizations.organization_user_add,
            org_id,
            {"loginOrEmail": login.login, "role": CLIENT_ROLE},
        )
        changes += 1
        say(f"{where}: added as {CLIENT_ROLE}")
    elif member is not None and member.get("role") != CLIENT_ROLE:
        api.call(
            f"making {login.login!r} a {CLIENT_ROLE}",
            g.organizations.organization_user_update,
            org_id,
            user_id,
            CLIENT_ROLE,
        )
        changes += 1
        say(f"{where}: role set to {CLIENT_ROLE}")
    # A client's login belongs to its organization and to no other (Grafana adds new users to the main one).
    for org in api.call(f"listing {login.login!r}'s organizations", c.GET, f"/users/{user_id}/orgs"):
        if int(org["orgId"]) != org_id:
            api.call(
                f"removing {login.login!r} from organization {org['name']!r}",
                g.organizations.organization_user_delete,
                org["orgId"],
                user_id,
            )
            changes += 1
            say(f"{where}: removed from organization {org['name']}")
    api.call(f"switching {login.login!r} to {login.client!r}", c.POST, f"/users/{user_id}/using/{org_id}")
    headers = api.in_org(org_id)
    team_members = api.call(f"listing team {login.client!r}", c.GET, f"/teams/{team_id}/members", headers=headers)
    if not any(int(m.get("userId", -1)) == user_id for m in team_members):
        api.call(
            f"adding {login.login!r} to team {login.client!r}",
            c.POST,
            f"/teams/{team_id}/members",
            json={"userId": user_id},
            headers=headers,
        )
        changes += 1
        say(f"{where}: added to team {login.client}")
    return changes


def reload_provisioning(settings: OrgsSettings) -> None:
    """Ask Grafana to re-read the datasources and dashboards files (new organizations' entries)."""
    api = _Api(settings)
    try:
        for what in ("datasources", "dashboards"):
            api.call(f"reloading {what} provisioning", api.api.client.POST, f"/admin/provisioning/{what}/reload")
    finally:
        api.close()
