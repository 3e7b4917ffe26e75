"""`fieldstation grafana orgs` + the render: each client in a Grafana organization of its own, against the API
stand-in (tests/harness/grafana_api.py: no Grafana server can run on a build machine)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml

from agent.grafana.provisioning_schema import SCHEMAS
from fieldstation.cli import main
from fieldstation.energy import EnergySettings
from fieldstation.grafana import render
from fieldstation.grafana.orgs import OrgsError, OrgsSettings, load_state, reload_provisioning, sync
from fieldstation.grafana.settings import Client, GrafanaSettings
from fieldstation.ingest.inbox import IngestSettings, SourceSettings
from fieldstation.sensors.simulated import Simulated
from harness.grafana_api import GrafanaStandIn

PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-22", "carol": "carol-Secret-3"}


def grafana_settings(tmp_path: Path, organizations: bool = True) -> GrafanaSettings:
    return GrafanaSettings(
        provisioning_path=str(tmp_path / "provisioning"),
        clients=[Client(name="acme"), Client(name="globex", database="globex_data")],
        organizations=organizations,
        orgs_state=tmp_path / "state" / "grafana-orgs.json",
        alerts={"emails": ["lab@example.org"]},  # type: ignore[arg-type]
    )


def orgs_settings(api: GrafanaStandIn, *logins: tuple[str, str], password: str | None = None) -> OrgsSettings:
    return OrgsSettings.model_validate(
        {
            "url": api.url,
            "admin_password": password or api.admin_password,
            "timeout": 5,
            "logins": [
                {"client": client, "login": login, "email": f"{login}@{client}.example", "password": PASSWORDS[login]}
                for login, client in logins
            ],
        }
    )


def as_login(api: GrafanaStandIn, login: str, path: str, org: int | None = None) -> tuple[int, object]:
    token = base64.b64encode(f"{login}:{PASSWORDS[login]}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"} | ({"X-Grafana-Org-Id": str(org)} if org else {})
    return api.handle_safe("GET", path, headers)


@pytest.fixture
def archive(tmp_path: Path) -> IngestSettings:
    ingest = IngestSettings(root=tmp_path / "data", sources=[SourceSettings(name="mv2", format="mv2")])
    for client, campaign in (("acme", "winter"), ("globex", "summer"), ("initech", "spring")):
        (ingest.archive / "mv2" / client / campaign / "02001311").mkdir(parents=True)
    return ingest


def render_all(gs: GrafanaSettings, ingest: IngestSettings) -> list[str]:
    sensors = [Simulated(name="t", unit="°C")]
    return render(Path(gs.provisioning_path), sensors, gs, EnergySettings(), ingest)


def test_each_client_sees_only_its_own_datasource_and_dashboards(
    tmp_path: Path, grafana_api: GrafanaStandIn, archive: IngestSettings
) -> None:
    gs = grafana_settings(tmp_path)
    out = Path(gs.provisioning_path)
    render_all(gs, archive)  # before the organizations exist: nothing of a client's lands in the main organization
    assert not (out / "dashboards/fieldstation-clients").exists()
    assert sorted(p.name for p in (out / "dashboards/fieldstation-campaigns").iterdir()) == ["initech"]

    settings = orgs_settings(grafana_api, ("alice", "acme"), ("bob", "acme"), ("carol", "globex"))
    said: list[str] = []
    assert sync(gs, settings, say=said.append) > 0
    assert "organization acme: alice: login created (Viewer)" in said
    state = load_state(gs.orgs_state)
    assert set(state) == {"acme", "globex"} and len(set(state.values())) == 2 and 1 not in state.values()
    again: list[str] = []
    assert sync(gs, settings, say=again.append) == 0, again  # idempotent

    changed = render_all(gs, archive)
    assert sorted(changed) == [
        "dashboards/fieldstation-clients/acme/winter.json",
        "dashboards/fieldstation-clients/globex/summer.json",
        "dashboards/fieldstation.yaml",
        "datasources/fieldstation.yaml",
    ]
    for rel in ("datasources/fieldstation.yaml", "dashboards/fieldstation.yaml"):
        SCHEMAS[rel].model_validate(yaml.safe_load((out / rel).read_text()))
    reload_provisioning(settings)

    for login, client, db in (("alice", "acme", "client_acme"), ("carol", "globex", "globex_data")):
        status, datasources = as_login(grafana_api, login, "/api/datasources")
        assert status == 200
        assert [(d["uid"], d["jsonData"]["dbName"], d["isDefault"]) for d in datasources] == [
            (f"fs-client-{client}", db, True)
        ]
        # its read-only InfluxDB user, by reference to grafana-server's environment, never a value in the file
        assert datasources[0]["user"] == f"$FIELDSTATION_CLIENT_{client.upper()}_USER"
        status, boards = as_login(grafana_api, login, "/api/search")
        assert [(b["folderTitle"], b["datasources"]) for b in boards] == [(client, [f"fs-client-{client}"])]
        for other in {1, *state.values()} - {state[client]}:  # the main organization and the other client's
            assert as_login(grafana_api, login, "/api/search", org=other)[0] == 401
        user = grafana_api.user(login)
        assert user is not None and grafana_api.orgs_of(user.id) == {state[client]: "Viewer"}
    team = next(t for t in grafana_api.teams.values() if t.name == "acme")
    assert team.org_id == state["acme"] and {grafana_api.users[u].login for u in team.members} == {"alice", "bob"}
    # The station's organization keeps its own dashboards and the campaign of a folder that is no client.
    main_boards = [d for d in grafana_api.dashboards if d["orgId"] == 1]
    assert {d["folderTitle"] for d in main_boards if d["uid"].startswith("fs-camp-")} == {"initech"}
    assert [d["uid"] for d in grafana_api.datasources if d["orgId"] == 1] == ["fieldstation-influxdb"]


def test_a_login_dropped_from_the_inventory_loses_its_organization(tmp_path: Path, grafana_api: GrafanaStandIn) -> None:
    gs = grafana_settings(tmp_path)
    sync(gs, orgs_settings(grafana_api, ("alice", "acme"), ("bob", "acme")), say=lambda _: None)
    said: list[str] = []
    sync(gs, orgs_settings(grafana_api, ("alice", "acme")), say=said.append)
    assert said == ["organization acme: bob removed (no longer in the inventory)"]
    # Grafana deletes a user that this leaves without any organization: bob can log in nowhere.
    assert grafana_api.user("bob") is None
    assert as_login(grafana_api, "bob", "/api/search")[0] == 401
    assert as_login(grafana_api, "alice", "/api/search")[0] == 200


def test_passwords_are_set_again_only_when_asked(tmp_path: Path, grafana_api: GrafanaStandIn) -> None:
    gs = grafana_settings(tmp_path)
    sync(gs, orgs_settings(grafana_api, ("alice", "acme")), say=lambda _: None)
    alice = grafana_api.user("alice")
    assert alice is not None
    alice.password = "changed-in-the-ui"
    sync(gs, orgs_settings(grafana_api, ("alice", "acme")), say=lambda _: None)
    assert alice.password == "changed-in-the-ui"
    sync(gs, orgs_settings(grafana_api, ("alice", "acme")), reset_passwords=True, say=lambda _: None)
    assert alice.password == PASSWORDS["alice"]


def test_without_organizations_the_clients_datasources_live_in_the_main_one(
    tmp_path: Path, archive: IngestSettings
) -> None:
    gs = grafana_settings(tmp_path, organizations=False)
    render_all(gs, archive)
    out = Path(gs.provisioning_path)
    datasources = yaml.safe_load((out / "datasources/fieldstation.yaml").read_text())["datasources"]
    assert [(d["uid"], d["orgId"], d["isDefault"]) for d in datasources] == [
        ("fieldstation-influxdb", 1, True), ("fs-client-acme", 1, False), ("fs-client-globex", 1, False)
    ]
    board = json.loads((out / "dashboards/fieldstation-campaigns/acme/winter.json").read_text())
    assert '"uid": "fs-client-acme"' in json.dumps(board) and "fieldstation-influxdb" not in json.dumps(board)


# -- one-line errors ----------------------------------------------------------------------------------------------


def write_files(tmp_path: Path, url: str, password: str, *, client: str = "acme", mode: int = 0o600) -> list[str]:
    grafana = tmp_path / "grafana.toml"
    grafana.write_text(
        f'organizations = true\norgs_state = "{tmp_path / "state.json"}"\n[[clients]]\nname = "acme"\n'
    )
    orgs = tmp_path / "grafana-orgs.toml"
    orgs.write_text(
        f'url = "{url}"\nadmin_password = "{password}"\ntimeout = 2\n'
        f'[[logins]]\nclient = "{client}"\nlogin = "alice"\nemail = "a@acme.example"\npassword = "{PASSWORDS["alice"]}"\n'
    )
    os.chmod(orgs, mode)
    return ["grafana", "orgs", "--grafana", str(grafana), "--file", str(orgs)]


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_command_syncs_and_a_second_run_changes_nothing(
    tmp_path: Path, grafana_api: GrafanaStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = write_files(tmp_path, grafana_api.url, grafana_api.admin_password)
    assert main([*argv, "--reload"]) == 0
    assert capsys.readouterr().out.endswith("4 changes\n")  # org, team, login, its team membership
    assert main(argv) == 0
    assert capsys.readouterr().out == "0 changes\n"


def test_unreachable_grafana_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stopped = GrafanaStandIn().start()
    url = stopped.url
    stopped.stop()  # nothing listens there any more
    err = one_line(capsys, write_files(tmp_path, url, "whatever"), 1)
    assert f"Grafana at {url}: checking its health" in err


def test_a_wrong_admin_password_is_one_line(
    tmp_path: Path, grafana_api: GrafanaStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line(capsys, write_files(tmp_path, grafana_api.url, "not-the-password"), 1)
    assert "refused the admin login 'admin'" in err and "grafana_admin_password" in err
    assert len(grafana_api.orgs) == 1  # nothing created


def test_a_login_of_an_unknown_client_is_refused(
    tmp_path: Path, grafana_api: GrafanaStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line(capsys, write_files(tmp_path, grafana_api.url, grafana_api.admin_password, client="acne"), 1)
    assert "login 'alice': client 'acne' is not a client (clients: acme)" in err
    assert grafana_api.requests == []


def test_a_secrets_file_others_can_read_is_refused(
    tmp_path: Path, grafana_api: GrafanaStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line(capsys, write_files(tmp_path, grafana_api.url, grafana_api.admin_password, mode=0o644), 2)
    assert "readable by others (mode 644)" in err


def test_a_damaged_state_file_is_an_error_not_an_empty_map(tmp_path: Path) -> None:
    state = tmp_path / "grafana-orgs.json"
    state.write_text('{"acme": "two"}')
    with pytest.raises(OrgsError, match="client name to organization id"):
        load_state(state)
