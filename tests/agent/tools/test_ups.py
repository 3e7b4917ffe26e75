"""``fieldstation ups test-shutdown`` against a real sshd on loopback playing the remote host (harness/sshd.py), with
the files the nut role's own remote_shutdown tasks write (run for real by ansible-playbook, paths moved into tmp):
the pinned host key passes, a wrong one is refused and named, a user whose sudo rule is missing is "NOT allowed",
a key the host does not accept is named. The secondary's sudo rules allow /bin/echo only: nothing shuts down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.cli import main
from fieldstation.tools.ups import RemoteHost
from harness.sshd import Deployed, Secondary, deploy_remote_shutdown, keygen, requires_sshd, secondary

pytestmark = [requires_sshd, pytest.mark.timeout(600)]

# A harmless stand-in for "sudo /sbin/poweroff": what the dry run proves is the same (sudo's rule for this command).
COMMAND = "sudo /bin/echo fieldstation-test-shutdown"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secondary]:
    with secondary(tmp_path_factory.mktemp("secondary"), {"shutdown": ["/bin/echo"], "nosudo": []}) as s:
        yield s


def entry(s: Secondary, user: str = "shutdown", **more: object) -> dict[str, object]:
    return {"host": s.host, "port": s.port, "user": user, "command": COMMAND,
            "key": s.users[user].read_text(), **more}  # fmt: skip


def run(d: Deployed, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["ups", "test-shutdown", "--file", str(d.toml), "--timeout", "15"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_the_pinned_host_key_passes_and_the_shutdown_is_allowed(
    host: Secondary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = deploy_remote_shutdown(tmp_path, [entry(host, host_key=host.host_key)])
    assert d.known_hosts.read_text().splitlines()[-1] == f"[{host.host}]:{host.port} {host.host_key}"
    assert (d.keys / host.host).stat().st_mode & 0o777 == 0o600
    rc, out = run(d, capsys)
    assert rc == 0, out
    assert f"shutdown@{host.host}:{host.port}  OK  reachable, host key OK, allowed (sudo -n -l /bin/echo " in out


def test_a_wrong_pinned_host_key_is_refused_and_named(
    host: Secondary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = keygen(tmp_path / "other_host_key")
    d = deploy_remote_shutdown(tmp_path / "deploy", [entry(host, host_key=other)])
    rc, out = run(d, capsys)
    assert rc == 1, out
    assert "FAIL  reachable, host key MISMATCH: the host's key is not the one pinned in" in out
    assert "allowed" not in out


def test_a_user_without_the_sudo_rule_is_not_allowed(
    host: Secondary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another name for the same server: the role keeps one key per host name.
    nosudo = entry(host, "nosudo", host_key=host.host_key) | {"host": "localhost"}
    d = deploy_remote_shutdown(tmp_path, [entry(host, host_key=host.host_key), nosudo])
    rc, out = run(d, capsys)
    assert rc == 1, out
    lines = out.splitlines()
    assert any(ln.startswith(f"shutdown@{host.host}:{host.port}  OK") for ln in lines), out
    assert any(
        ln.startswith(f"nosudo@localhost:{host.port}  FAIL  reachable, host key OK, NOT allowed: 'sudo -n -l /bin/echo")
        and "a password is required" in ln
        for ln in lines
    ), out


def test_a_key_the_host_does_not_accept_is_named(
    host: Secondary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keygen(tmp_path / "stranger")
    wrong = {**entry(host, host_key=host.host_key), "key": (tmp_path / "stranger").read_text()}
    d = deploy_remote_shutdown(tmp_path / "deploy", [wrong])
    rc, out = run(d, capsys)
    assert rc == 1, out
    assert f"FAIL  reachable, host key OK, key refused: shutdown does not accept {d.keys / host.host}" in out


def test_without_host_key_the_deploy_pins_what_ssh_keyscan_sees_and_keeps_it(
    host: Secondary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = deploy_remote_shutdown(tmp_path, [entry(host)])
    pinned = [ln for ln in d.known_hosts.read_text().splitlines() if not ln.startswith("#")]
    assert pinned == [f"[{host.host}]:{host.port} {host.host_key}"]  # the server has this one key
    rc, out = run(d, capsys)
    assert rc == 0, out
    # A re-deploy keeps the pinned key even when it is not the host's any more: a changed key is never learned.
    other = keygen(tmp_path / "other_host_key")
    d.known_hosts.write_text(f"[{host.host}]:{host.port} {other}\n")
    deploy_remote_shutdown(tmp_path, [entry(host)])
    assert [ln for ln in d.known_hosts.read_text().splitlines() if not ln.startswith("#")] == [
        f"[{host.host}]:{host.port} {other}"
    ]
    rc, out = run(d, capsys)
    assert rc == 1 and "host key MISMATCH" in out, out


def test_the_shutdown_script_connects_with_the_pinned_known_hosts_only(host: Secondary, tmp_path: Path) -> None:
    d = deploy_remote_shutdown(tmp_path, [entry(host, host_key=host.host_key)])
    script = d.script.read_text()
    assert f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={d.known_hosts} -o GlobalKnownHostsFile=none" in script
    assert f"-i {d.keys / host.host} -p {host.port}" in script
    assert "BatchMode=yes" in script and "'sudo /bin/echo fieldstation-test-shutdown'" in script
    assert d.script.stat().st_mode & 0o777 == 0o750


def test_an_unreachable_host_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Secondary) -> None:
    from harness.sshd import free_port

    d = deploy_remote_shutdown(tmp_path, [{**entry(host, host_key=host.host_key), "port": free_port()}])
    rc, out = run(d, capsys)
    assert rc == 1 and "FAIL  unreachable: " in out, out


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("known_hosts = '/x'\n", "ssh_options: Field required"),
        ("known_hosts = '/x'\nssh_options = []\n[[hosts]]\nhost = 'h'\nuser = 'u'\nkey = '/k'\n", "hosts.0.command"),
        ("known_hosts = '/x'\nssh_options = []\n[[hosts]]\nhost='h'\nport=0\nuser='u'\ncommand='c'\nkey='/k'\n",
         "hosts.0.port"),
        ("known_hosts = '/nonexistent'\nssh_options = []\n", "known_hosts: /nonexistent missing"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    path = tmp_path / "ups-shutdown.toml"
    path.write_text(text)
    assert main(["ups", "test-shutdown", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fieldstation: {path}: ") and error in err and len(err.splitlines()) == 1, err


def test_the_inventory_host_key_must_be_a_public_key_line(host: Secondary, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="host_key must be public key lines"):
        deploy_remote_shutdown(tmp_path, [entry(host, host_key=f"{host.host} {host.host_key}")])


def test_each_host_once(host: Secondary, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"nut_remote_shutdown: 127\.0\.0\.1 more than once"):
        deploy_remote_shutdown(tmp_path, [entry(host), entry(host, "nosudo")])


@pytest.mark.parametrize(
    ("command", "check", "dry_run"),
    [
        ("sudo /sbin/poweroff", None, "sudo -n -l /sbin/poweroff"),
        ("sudo -n /sbin/shutdown -h now", None, "sudo -n -l /sbin/shutdown -h now"),  # the command's flags stay
        ("/sbin/poweroff", None, None),  # nothing proves it: the host's line says so and fails
        ("/sbin/poweroff", "test -w /dev/null", "test -w /dev/null"),
    ],
)
def test_the_dry_run_of_a_command(command: str, check: str | None, dry_run: str | None) -> None:
    h = RemoteHost(host="h", user="u", command=command, key=Path("/k"), check=check)
    assert h.check_command() == dry_run
