"""A stand-in for the part of Grafana's HTTP API that ``fieldstation grafana orgs`` uses, on a free loopback port.

Why a stand-in: no Grafana server can be installed on a build machine (no Debian package, no PyPI wheel; see
RECIPES.md §9), so this models Grafana 11's documented behaviour for exactly the endpoints we call, with Grafana's
status codes and messages: basic auth, Grafana admins vs. plain users, organizations and their members with roles,
``X-Grafana-Org-Id`` refused for an organization the caller is not a member of, teams per organization, new users
put into the organization named by ``OrgId`` (else the main one, ``auto_assign_org``), and the provisioning
reload reading our rendered files the way Grafana does: datasources and dashboard providers by ``orgId``,
dashboards from the provider's path (``foldersFromFilesStructure``). A client's view (``GET /api/datasources``,
``GET /api/search``) is then what Grafana's organization model would show that login.

    api = GrafanaStandIn(provisioning_dir).start()      # admin login "admin", password api.admin_password
    api.url, api.stop()
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml


@dataclass
class User:
    id: int
    login: str
    email: str
    name: str
    password: str
    admin: bool = False
    org_id: int = 1  # the current organization


@dataclass
class Team:
    id: int
    org_id: int
    name: str
    members: set[int] = field(default_factory=set)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GrafanaStandIn:
    def __init__(self, provisioning_dir: Path | None = None) -> None:
        self.provisioning_dir = provisioning_dir
        self.admin_password = secrets.token_urlsafe(12)
        self.users: dict[int, User] = {1: User(1, "admin", "admin@localhost", "admin", self.admin_password, True)}
        self.orgs: dict[int, str] = {1: "Main Org."}
        self.members: dict[tuple[int, int], str] = {(1, 1): "Admin"}  # (org, user) → role
        self.teams: dict[int, Team] = {}
        self.datasources: list[dict[str, Any]] = []
        self.dashboards: list[dict[str, Any]] = []  # {"orgId", "uid", "title", "folder"}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> GrafanaStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                status, answer = stand_in.handle_safe(method, self.path, dict(self.headers.items()), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    # -- the model ----------------------------------------------------------------------------------------------

    def user(self, login: str) -> User | None:
        return next((u for u in self.users.values() if login in (u.login, u.email)), None)

    def orgs_of(self, user_id: int) -> dict[int, str]:
        return {o: role for (o, u), role in self.members.items() if u == user_id}

    def _caller(self, headers: dict[str, str]) -> tuple[User, int]:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not auth.startswith("Basic "):
            raise Refused(401, "Unauthorized")
        login, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user = self.user(login)
        if user is None or not secrets.compare_digest(user.password, password):
            raise Refused(401, "Invalid username or password")
        org_header = next((v for k, v in headers.items() if k.lower() == "x-grafana-org-id"), None)
        org = int(org_header) if org_header else user.org_id
        if (org, user.id) not in self.members:
            raise Refused(401, "User does not belong to the organization")  # Grafana: ErrUserNotMemberOfOrg
        return user, org

    def _admin(self, user: User) -> None:
        if not user.admin:
            raise Refused(403, "Permission denied")

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path = [unquote(p) for p in parts.path.strip("/").split("/")]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append((method, parts.path))
            if path == ["api", "health"]:
                return 200, {"database": "ok", "version": "11.6.0"}
            caller, org = self._caller(headers)
            return self._route(method, path[1:], query, caller, org, body)

    def handle_safe(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
        """:meth:`handle` with refusals as (status, message): how a test asks as a given login."""
        try:
            return self.handle(method, path, headers, body)
        except Refused as exc:
            return exc.status, {"message": exc.message}

    def _route(  # noqa: PLR0911, PLR0912, PLR0917 -- one branch per endpoint, as the API reference lists them
        self, method: str, p: list[str], query: dict[str, str], caller: User, org: int, body: Any
    ) -> tuple[int, Any]:
        match method, p:
            case "GET", ["orgs", "name", name]:
                self._admin(caller)
                found = next((i for i, n in self.orgs.items() if n == name), None)
                if found is None:
                    raise Refused(404, "Organization not found")
                return 200, {"id": found, "name": name}
            case "GET", ["orgs"]:
                self._admin(caller)
                return 200, [{"id": i, "name": n} for i, n in sorted(self.orgs.items())]
            case "POST", ["orgs"]:
                if body["name"] in self.orgs.values():
                    raise Refused(409, "Organization name taken")
                new = max(self.orgs) + 1
                self.orgs[new] = body["name"]
                self.members[(new, caller.id)] = "Admin"
                return 200, {"orgId": new, "message": "Organization created"}
            case "GET", ["orgs", oid, "users"]:
                self._admin(caller)
                return 200, [
                    {"orgId": o, "userId": u, "login": self.users[u].login, "email": self.users[u].email, "role": r}
                    for (o, u), r in sorted(self.members.items())
                    if o == int(oid)
                ]
            case "POST", ["orgs", oid, "users"]:
                self._admin(caller)
                user = self.user(body["loginOrEmail"])
                if user is None:
                    raise Refused(404, "User not found")
                if (int(oid), user.id) in self.members:
                    raise Refused(409, "User is already member of this organization")
                self.members[(int(oid), user.id)] = body["role"]
                return 200, {"message": "User added to organization", "userId": user.id}
            case "PATCH", ["orgs", oid, "users", uid]:
                self._admin(caller)
                self._member(int(oid), int(uid))
                self.members[(int(oid), int(uid))] = body["role"]
                return 200, {"message": "Organization user updated"}
            case "DELETE", ["orgs", oid, "users", uid]:
                self._admin(caller)
                self._member(int(oid), int(uid))
                if self.members[(int(oid), int(uid))] == "Admin" and [
                    u for (o, u), r in self.members.items() if o == int(oid) and r == "Admin"
                ] == [int(uid)]:
                    raise Refused(400, "Cannot remove last admin")
                del self.members[(int(oid), int(uid))]
                if not self.orgs_of(int(uid)):  # this endpoint deletes a user left without an organization
                    del self.users[int(uid)]
                    return 200, {"message": "User deleted"}
                if self.users[int(uid)].org_id == int(oid):
                    self.users[int(uid)].org_id = min(self.orgs_of(int(uid)))
                return 200, {"message": "User removed from organization"}
            case "GET", ["users", "lookup"]:
                self._admin(caller)
                user = self.user(query.get("loginOrEmail", ""))
                if user is None:
                    raise Refused(404, "user not found")
                return 200, {"id": user.id, "login": user.login, "email": user.email, "name": user.name}
            case "GET", ["users", uid, "orgs"]:
                self._admin(caller)
                return 200, [
                    {"orgId": o, "name": self.orgs[o], "role": r} for o, r in sorted(self.orgs_of(int(uid)).items())
                ]
            case "POST", ["users", uid, "using", oid]:
                self._admin(caller)
                self._member(int(oid), int(uid))
                self.users[int(uid)].org_id = int(oid)
                return 200, {"message": "Active organization changed"}
            case "POST", ["admin", "users"]:
                self._admin(caller)
                if self.user(body["login"]) or self.user(body["email"]):
                    raise Refused(412, "User with same login or email already exists")
                new = max(self.users) + 1
                target = int(body.get("OrgId") or 1)
                self.users[new] = User(new, body["login"], body["email"], body["name"], body["password"], org_id=target)
                self.members[(target, new)] = "Viewer"  # auto_assign_org_role
                return 200, {"id": new, "message": "User created"}
            case "PUT", ["admin", "users", uid, "password"]:
                self._admin(caller)
                self.users[int(uid)].password = body["password"]
                return 200, {"message": "User password updated"}
            case "GET", ["teams", "search"]:
                self._org_admin(caller, org)
                teams = [t for t in self.teams.values() if t.org_id == org and t.name == query.get("name", t.name)]
                shown = [{"id": t.id, "orgId": t.org_id, "name": t.name, "memberCount": len(t.members)} for t in teams]
                return 200, {"totalCount": len(teams), "teams": shown, "page": 1, "perPage": 1000}
            case "POST", ["teams"]:
                self._org_admin(caller, org)
                if any(t.org_id == org and t.name == body["name"] for t in self.teams.values()):
                    raise Refused(409, "Team name taken")
                new = max(self.teams, default=0) + 1
                self.teams[new] = Team(new, org, body["name"])
                return 200, {"message": "Team created", "teamId": new}
            case "GET", ["teams", tid, "members"]:
                team = self._team(caller, org, int(tid))
                return 200, [{"teamId": team.id, "userId": u, "login": self.users[u].login} for u in sorted(team.members)]
            case "POST", ["teams", tid, "members"]:
                team = self._team(caller, org, int(tid))
                if body["userId"] in team.members:
                    raise Refused(400, "User is already added to this team")
                self._member(org, body["userId"])
                team.members.add(body["userId"])
                return 200, {"message": "Member added to Team"}
            case "POST", ["admin", "provisioning", what, "reload"]:
                self._admin(caller)
                self.load_provisioning(what)
                return 200, {"message": f"{what.capitalize()} config reloaded"}
            case "GET", ["datasources"]:
                return 200, [ds for ds in self.datasources if ds["orgId"] == org]
            case "GET", ["search"]:
                return 200, [{"type": "dash-db", **d} for d in self.dashboards if d["orgId"] == org]
        raise Refused(404, "Not found")

    def _member(self, org: int, user_id: int) -> None:
        if (org, user_id) not in self.members:
            raise Refused(404, "User not found")

    def _org_admin(self, caller: User, org: int) -> None:
        if self.members.get((org, caller.id)) != "Admin":
            raise Refused(403, "Permission denied")

    def _team(self, caller: User, org: int, team_id: int) -> Team:
        self._org_admin(caller, org)
        team = self.teams.get(team_id)
        if team is None or team.org_id != org:
            raise Refused(404, "Team not found")
        return team

    def load_provisioning(self, what: str) -> None:
        """Grafana's provisioning reload, on our files: an orgId that does not exist fails like Grafana's."""
        assert self.provisioning_dir is not None
        if what == "datasources":
            found = []
            for f in sorted((self.provisioning_dir / "datasources").glob("*.yaml")):
                for ds in yaml.safe_load(f.read_text())["datasources"]:
                    self._org_exists(ds.get("orgId", 1), f)
                    found.append({**ds, "orgId": ds.get("orgId", 1)})
            self.datasources = found
            return
        boards = []
        for f in sorted((self.provisioning_dir / "dashboards").glob("*.yaml")):
            for provider in yaml.safe_load(f.read_text())["providers"]:
                self._org_exists(provider["orgId"], f)
                root = Path(provider["options"]["path"])
                for board in sorted(root.rglob("*.json")):
                    data = json.loads(board.read_text())
                    from_tree = provider["options"].get("foldersFromFilesStructure")
                    folder = board.parent.relative_to(root).as_posix() if from_tree else provider["folder"]
                    boards.append({"orgId": provider["orgId"], "uid": data["uid"], "title": data["title"],
                                   "folderTitle": folder, "datasources": sorted(set(_datasource_uids(data)))})
        self.dashboards = boards

    def _org_exists(self, org: int, f: Path) -> None:
        if org not in self.orgs:
            raise Refused(500, f"{f.name}: organization {org} not found")


def _datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            yield ds["uid"]
        for v in node.values():
            yield from _datasource_uids(v)
    elif isinstance(node, list):
        for v in node:
            yield from _datasource_uids(v)


@pytest.fixture
def grafana_api(tmp_path: Path) -> Iterator[GrafanaStandIn]:
    """The stand-in, reading provisioning from ``tmp_path / "provisioning"``."""
    api = GrafanaStandIn(tmp_path / "provisioning").start()
    try:
        yield api
    finally:
        api.stop()
