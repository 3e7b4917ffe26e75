"""Root filesystems for the Ansible tests: a cached Debian bookworm tarball (mmdebstrap), the playbook run into an
extracted copy over the chroot connection, then the copy booted with systemd-nspawn to see the units really start.

    root = fresh_root(tmp_path)                           # or the ``rootfs`` fixture
    result = run_playbook(root, {"var": "value"}).assert_ok()
    box = nspawn(root)                                    # the ``nspawn`` fixture powers it off in teardown
    assert box.run("systemctl is-active ssh").stdout.strip() == "active"

Needs root, mmdebstrap and systemd-container (tests/run installs them). The tests using these fixtures run once, on
the first pass of tests/run (FIELDSTATION_SECOND_PASS set → skipped).

The booted container always gets its own network namespace (``--private-network``, loopback only): services bind
their real ports and nftables rules load (nspawn grants CAP_NET_ADMIN only then) without touching the host.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SITE_YML = ANSIBLE_DIR / "site.yml"
ANSIBLE_CFG = ANSIBLE_DIR / "ansible.cfg"
ANSIBLE_REQUIREMENTS = ANSIBLE_DIR / "requirements.txt"
ANSIBLE_VENV = REPO / ".venv-ansible"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fieldstation"

SUITE = "bookworm"
INCLUDE = "systemd-sysv,dbus,python3,python3-apt,iproute2,sudo,openssh-server,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
DEBIAN_SUITES |= {"oldoldstable", "oldstable", "stable", "testing", "unstable"}
# Rebuilt when older, to keep up with point releases; a stale tarball is still used when the mirror is unreachable.
MAX_AGE_S = 14 * 86400
# A clean environment inside the container: nothing of the host's (pyenv, venvs, locale) leaks in.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "PAGER": "cat",
}


def log(msg: str) -> None:
    print(f"[rootfs] {msg}", flush=True)


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} missing)"
    return "\n".join(text.splitlines()[-lines:])


# -- skipping ---------------------------------------------------------------------------------------------------


def skip_reason() -> str | None:
    """Why the rootfs tests cannot run here, or None."""
    if os.environ.get("FIELDSTATION_SECOND_PASS"):
        return "rootfs tests run once, on the first pass"
    if os.geteuid() != 0:
        return "rootfs tests need root (mmdebstrap, chroot, systemd-nspawn)"
    missing = [t for t in ("mmdebstrap", "systemd-nspawn", "nsenter", "tar") if not shutil.which(t)]
    if missing:
        return f"rootfs tests need {', '.join(missing)} (apt-get install mmdebstrap systemd-container; tests/run does)"
    return None


def skip_unless_possible() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


# Mark for tests that build on these fixtures without requesting them (the fixtures skip on their own).
requires_rootfs = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


# -- the Ansible venv -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes (several pytest runs may share the cache and the venv)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ansible_venv() -> Path:
    """The venv holding ansible + ansible-lint as pinned in ansible/requirements.txt (created or updated here if
    tests/run has not done it already; ~30-60 s)."""
    wanted = hashlib.sha256(ANSIBLE_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = ANSIBLE_VENV / ".requirements.sha256"
    ready = (ANSIBLE_VENV / "bin" / "ansible-playbook").exists()
    if ready and stamp.exists() and stamp.read_text().strip() == wanted:
        return ANSIBLE_VENV
    with _locked("ansible-venv"):
        if not (ANSIBLE_VENV / "bin" / "python").exists():
            python = sys.executable if sys.version_info[:2] == (3, 11) else "python3"
            log(f"creating {ANSIBLE_VENV} with {python}")
            subprocess.run([python, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        log(f"installing {ANSIBLE_REQUIREMENTS.relative_to(REPO)} into {ANSIBLE_VENV.name} (~30-60 s)")
        t0 = time.monotonic()
        pip = [str(ANSIBLE_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        proc = subprocess.run([*pip, "-r", str(ANSIBLE_REQUIREMENTS)], capture_output=True, text=True)
        if proc.returncode:
            raise AssertionError(f"pip install -r {ANSIBLE_REQUIREMENTS} failed:\n{proc.stdout}\n{proc.stderr}")
        stamp.write_text(wanted + "\n")
        log(f"ansible venv ready in {time.monotonic() - t0:.0f} s")
    return ANSIBLE_VENV


# -- the base root filesystem -----------------------------------------------------------------------------------


def _one_line_sources(etc: Path) -> Iterator[tuple[list[str], str, list[str]]]:
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if f.is_file():
            for raw in f.read_text(errors="replace").splitlines():
                line = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()  # drop [signed-by=...] options
                if len(line) >= 3:
                    yield [line[0]], line[1], [line[2]]


def _deb822_stanza(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for raw in stanza.splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        if raw[0].isspace() and key:  # continuation line
            fields[key] += " " + raw.strip()
        elif ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def _sources(etc: Path) -> Iterator[tuple[list[str], str, list[str]]]:
    """(types, uri, suites) of every APT source under ``etc`` (one-line .list and deb822 .sources)."""
    yield from _one_line_sources(etc)
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields = _deb822_stanza(stanza)
            if fields.get("enabled", "yes").lower() != "no":
                for uri in fields.get("uris", "").split():
                    yield fields.get("types", "").split(), uri, fields.get("suites", "").split()


def debian_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The host's configured Debian archive (not -security, not third-party repositories);
    FIELDSTATION_DEBIAN_MIRROR overrides it."""
    if os.environ.get("FIELDSTATION_DEBIAN_MIRROR"):
        return os.environ["FIELDSTATION_DEBIAN_MIRROR"]
    for types, uri, suites in _sources(etc):
        if "deb" in types and any(s in DEBIAN_SUITES for s in suites) and not uri.rstrip("/").endswith("-security"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def mmdebstrap_args(mirror: str | None = None) -> list[str]:
    return [
        "--variant=minbase",
        "--architectures=amd64",
        f"--include={INCLUDE}",
        SUITE,
        "TARGET",
        mirror or debian_mirror(),
    ]


def base_rootfs(*, max_age_s: float = MAX_AGE_S) -> Path:
    """The cached tarball ~/.cache/fieldstation/rootfs/bookworm-<hash of the mmdebstrap arguments>.tar, built
    with mmdebstrap (~20-60 s) when missing or older than ``max_age_s``."""
    args = mmdebstrap_args()
    digest = hashlib.sha256("\0".join(args).encode()).hexdigest()[:12]
    tarball = CACHE / "rootfs" / f"{SUITE}-{digest}.tar"
    if tarball.exists() and time.time() - tarball.stat().st_mtime < max_age_s:
        return tarball
    with _locked(f"rootfs-{digest}"):
        if tarball.exists() and time.time() - tarball.stat().st_mtime < max_age_s:
            return tarball  # another process built it while we waited
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tmp = tarball.with_name(f".{tarball.stem}.{os.getpid()}.tmp.tar")
        build_log = tarball.with_suffix(".log")
        argv = ["mmdebstrap", "--format=tar", *(str(tmp) if a == "TARGET" else a for a in args)]
        log(f"building the base rootfs (~20-60 s): {' '.join(argv)}")
        t0 = time.monotonic()
        with build_log.open("w") as out:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc:
            tmp.unlink(missing_ok=True)
            if tarball.exists():
                log(f"mmdebstrap failed (rc={rc}); using the stale {tarball}:\n{tail(build_log, 20)}")
                return tarball
            raise AssertionError(f"mmdebstrap failed (rc={rc}):\n{tail(build_log)}")
        os.replace(tmp, tarball)  # atomically: readers never see a half-written tarball
        log(f"base rootfs {tarball} built in {time.monotonic() - t0:.1f} s")
    return tarball


def fresh_root(tmp_path: Path, name: str = "root") -> Path:
    """A fresh copy of the base rootfs at ``tmp_path/name`` (ownership, modes and xattrs kept; the host's
    resolv.conf copied in so apt works in the chroot). ~5 s."""
    tarball = base_rootfs()
    root = tmp_path / name
    root.mkdir(parents=True)
    t0 = time.monotonic()
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tarball), "-C", str(root)],
        check=True,
    )
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)  # may be a dangling symlink (systemd-resolved) in the image
    shutil.copyfile("/etc/resolv.conf", resolv)
    resolv.chmod(0o644)
    # mmdebstrap empties /var/lib/apt/lists; its fresh mtime would make `apt: cache_valid_time=...` skip the update
    # and find no packages for an hour after each build. Age it, as on a device whose image is older than that.
    os.utime(root / "var/lib/apt/lists", (0, 0))
    (root / "var/lib/apt/periodic/update-success-stamp").unlink(missing_ok=True)
    log(f"extracted {tarball.name} into {root} in {time.monotonic() - t0:.1f} s")
    return root


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_root(root: Path) -> None:
    """Deletes an extracted rootfs, unless something is mounted inside (deleting through a bind mount of /dev
    would delete the host's)."""
    if not root.exists():
        return
    for booted in [b for b in _RUNNING if b.root == root]:
        booted.stop()  # a container still running on it (fixture teardown order)
    busy = mounts_under(root)
    if busy:
        log(f"not removing {root}: mounted inside: {busy}")
        return
    shutil.rmtree(root, ignore_errors=True)


# -- ansible-playbook over the chroot connection ----------------------------------------------------------------

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)(?:\s+skipped=(?P<skipped>\d+))?",
    re.MULTILINE,
)
PROGRESS = re.compile(r"^(PLAY |TASK \[|RUNNING HANDLER|PLAY RECAP|fatal:|failed:|changed:|ERROR!|\[ERROR\])")


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    changed: int
    failed: int
    ok: int
    unreachable: int = 0
    skipped: int = 0
    log: Path | None = None
    seconds: float = 0.0

    @property
    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported ``changed`` (for idempotency failures)."""
        return self._tasks_with("changed:")

    @property
    def failed_tasks(self) -> list[str]:
        return self._tasks_with("fatal:", "failed:")

    def _tasks_with(self, *prefixes: str) -> list[str]:
        found: list[str] = []
        task = "?"
        for line in self.stdout.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line[line.index("[") + 1 : line.rindex("]")] if "]" in line else line
            elif line.startswith(prefixes) and task not in found:
                found.append(task)
        return found

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.stdout.splitlines()[-lines:])

    def assert_ok(self) -> PlaybookResult:
        """Raises (with the end of the output) unless the run succeeded; returns self."""
        if self.rc != 0 or self.failed or self.unreachable:
            raise AssertionError(
                f"ansible-playbook rc={self.rc} failed={self.failed} unreachable={self.unreachable} "
                f"(log: {self.log}); failed tasks: {self.failed_tasks}\n{self.tail()}"
            )
        return self

    def assert_idempotent(self) -> PlaybookResult:
        self.assert_ok()
        assert self.changed == 0, f"changed on a re-run: {self.changed_tasks}"
        return self


def write_inventory(path: Path, root: Path, inventory_vars: dict[str, object]) -> Path:
    host = {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3",
        **inventory_vars,
    }
    inventory = {"all": {"children": {"fieldstation": {"hosts": {"rootfs": host}}}}}
    path.write_text(json.dumps(inventory, indent=2) + "\n")  # JSON is YAML
    return path


def run_playbook(
    root: Path,
    inventory_vars: dict[str, object] | None = None,
    playbook: Path = SITE_YML,
    extra_args: Sequence[str] = (),
    *,
    workdir: Path | None = None,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
    inventory: Path | None = None,
    host: str = "rootfs",
) -> PlaybookResult:
    """Runs ``playbook`` into the rootfs at ``root`` over community.general.chroot (host ``rootfs`` in group
    ``fieldstation``, plus ``inventory_vars``) with ansible/ansible.cfg. The inventory and the full output land
    in ``workdir`` (default: next to ``root``, i.e. the test's tmp_path); progress is printed as it runs and the
    end of the output when it fails. Never raises for a failed run: see ``assert_ok()``. With ``inventory`` (a
    user's inventory file, reaching ``host`` its own way, e.g. over SSH), that file is used as it is instead."""
    venv = ansible_venv()
    workdir = workdir or root.parent
    workdir.mkdir(parents=True, exist_ok=True)
    n = 1
    while (workdir / f"playbook-{n}.log").exists():
        n += 1
    if inventory is None:
        inventory = write_inventory(workdir / f"inventory-{n}.yml", root, inventory_vars or {})
    out = workdir / f"playbook-{n}.log"
    argv = [str(venv / "bin" / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra_args]
    run_env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "",
        **(env or {}),
    }
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        run_env.pop(var, None)
    log(f"ansible-playbook {playbook.name} → {root} (output: {out})")
    t0 = time.monotonic()
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            cwd=playbook.parent,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _follow(proc, out, t0, timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - t0
    stdout = out.read_text(errors="replace")
    counts = {"ok": -1, "changed": -1, "failed": -1, "unreachable": -1, "skipped": -1}  # -1: no PLAY RECAP
    for m in RECAP.finditer(stdout):
        if m["host"] == host:
            counts = {k: int(m[k] or 0) for k in counts}
    result = PlaybookResult(proc.returncode, stdout, log=out, seconds=seconds, **counts)
    log(
        f"ansible-playbook rc={result.rc} ok={result.ok} changed={result.changed} failed={result.failed} "
        f"in {seconds:.1f} s"
    )
    if result.rc != 0:
        log(f"end of {out}:\n{result.tail(60)}")
    return result


def _follow(proc: subprocess.Popen[bytes], out: Path, t0: float, timeout: float) -> None:
    """Prints the task headers and changes/failures of a running playbook from its log until it exits."""
    pos = 0
    partial = b""
    with out.open("rb") as f:
        while True:
            done = proc.poll() is not None
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for raw in lines:
                line = raw.decode(errors="replace")
                if PROGRESS.match(line):
                    print(f"  {time.monotonic() - t0:6.1f}s {line[:150]}", flush=True)
            if done:
                return
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"ansible-playbook still running after {timeout:g} s:\n{tail(out)}")
            time.sleep(0.3)


# -- booting with systemd-nspawn --------------------------------------------------------------------------------


_RUNNING: list[Booted] = []


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(p) for p in f.read().split()]
    return kids


def _is_ns_init(pid: int) -> bool:
    """True if ``pid`` is PID 1 of its own PID namespace (the container's systemd)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


@dataclass(eq=False)
class Booted:
    """A rootfs booted with ``systemd-nspawn -b``; ``run()`` executes commands inside (``nsenter -a``)."""

    root: Path
    proc: subprocess.Popen[bytes]
    log: Path
    machine: str
    pid: int = 0  # the container's systemd, as seen from the host
    state: str = ""  # systemctl is-system-running once booted: running or degraded
    _stopped: bool = field(default=False, repr=False)

    def run(
        self, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``cmd`` (a list, or a string for ``sh -c``) inside the container, as root, with a clean env."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=CONTAINER_ENV,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode:
            raise AssertionError(f"{argv} rc={proc.returncode} in the container:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def is_active(self, unit: str) -> str:
        return self.run(["systemctl", "is-active", unit]).stdout.strip()

    def journal(self, unit: str, lines: int = 50) -> str:
        return self.run(["journalctl", "--no-pager", "-n", str(lines), "-u", unit]).stdout

    def failed_units(self) -> str:
        return self.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()

    def wait_until(self, cmd: str | Sequence[str], timeout: float = 30, interval: float = 0.3) -> str:
        """Polls ``cmd`` inside until it exits 0; returns its stdout."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.run(cmd)
            if last.returncode == 0:
                return last.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd!r} still failing after {timeout:g} s:\n{last.stdout}\n{last.stderr}")
            time.sleep(interval)

    def wait_booted(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while not self.pid:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited (rc={self.proc.returncode}):\n{tail(self.log)}")
            self.pid = next((p for p in _children(self.proc.pid) if _is_ns_init(p)), 0)
            if time.monotonic() > deadline:
                raise AssertionError(f"no container init after {timeout:g} s:\n{tail(self.log)}")
            time.sleep(0.1)
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited (rc={self.proc.returncode}):\n{tail(self.log)}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                state = self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
            if state in ("running", "degraded"):
                self.state = state
                if state == "degraded":
                    log(f"{self.machine} booted degraded; failed units:\n{self.failed_units()}")
                return state
            time.sleep(0.2)
        jobs = self.run(["systemctl", "list-jobs", "--no-pager"]).stdout
        raise AssertionError(f"not booted after {timeout:g} s (state {state!r}); jobs:\n{jobs}\n{tail(self.log)}")

    def stop(self, timeout: float = 30) -> None:
        """``systemctl poweroff`` inside, then waits for nspawn; kills it (and the container) if it hangs."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.proc.poll() is None and self.pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run(["systemctl", "--no-block", "poweroff"], timeout=10)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.machine} did not power off within {timeout:g} s; terminating systemd-nspawn")
            self.proc.terminate()  # nspawn asks the container's init to halt
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pid:  # init outliving nspawn would keep the whole container running
            with contextlib.suppress(ProcessLookupError):
                if _is_ns_init(self.pid):
                    os.kill(self.pid, signal.SIGKILL)


def boot(
    root: Path, *, timeout: float = 120, extra_args: Sequence[str] = (), network_namespace: str | None = None
) -> Booted:
    """Boots ``root`` with ``systemd-nspawn --register=no --keep-unit -b --private-network`` and waits until
    ``systemctl is-system-running`` says running or degraded (the failed units are printed then). Prefer the
    ``nspawn`` fixture, which stops it in teardown; else call ``stop()``. ``network_namespace``: the name of a
    namespace made with ``ip netns add`` (harness.netns) to run in instead of a private network of its own."""
    machine = f"fs-{secrets.token_hex(4)}"  # unique: concurrent containers must not share /run/systemd/nspawn/...
    nspawn_log = root.parent / f"nspawn-{machine}.log"
    argv = [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "--boot",
        f"--directory={root}",
        f"--machine={machine}",
        # nspawn keeps CAP_NET_ADMIN for --private-network only; the station's own firewall needs it in a given
        # namespace too (the namespace is the test's, so nothing outside it is touched).
        *([f"--network-namespace-path=/run/netns/{network_namespace}", "--capability=CAP_NET_ADMIN"]
          if network_namespace else ["--private-network"]),
        "--console=read-only",
        *extra_args,
    ]
    log(f"booting {root} as {machine} (console: {nspawn_log})")
    t0 = time.monotonic()
    with nspawn_log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    booted = Booted(root, proc, nspawn_log, machine)
    atexit.register(booted.stop)
    _RUNNING.append(booted)
    try:
        booted.wait_booted(timeout)
    except BaseException:
        booted.stop()
        raise
    log(f"{machine} {booted.state} in {time.monotonic() - t0:.1f} s (init pid {booted.pid})")
    return booted


# -- fixtures ---------------------------------------------------------------------------------------------------

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if getattr(report, "failed", False):
        item.stash[_failed] = True
    return report


@pytest.fixture
def rootfs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fresh bookworm rootfs at tmp_path/root; deleted after a passing test (kept after a failure, or always
    with FIELDSTATION_KEEP_ROOTFS=1). Skips on the second pass, without root or without the tools."""
    skip_unless_possible()
    root = fresh_root(tmp_path)
    yield root
    if not request.node.stash.get(_failed, False) and not os.environ.get("FIELDSTATION_KEEP_ROOTFS"):
        remove_root(root)


@pytest.fixture
def nspawn() -> Iterator[Callable[..., Booted]]:
    """``nspawn(root, timeout=120)`` boots a rootfs (see ``boot``); every container is powered off in teardown."""
    skip_unless_possible()
    started: list[Booted] = []

    def start(root: Path, **kwargs: object) -> Booted:
        booted = boot(root, **kwargs)  # type: ignore[arg-type]
        started.append(booted)
        return booted

    yield start
    for booted in reversed(started):
        booted.stop()
