"""Fixture: a real NUT upsd with the dummy-ups driver (Debian's nut-server) on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fieldstation.influxd import free_port
from fieldstation.nut_client import NutClient, NutError

NUT_BIN = Path("/lib/nut")
USER, PASSWORD = "monuser", "s3cret-pw"


@dataclass
class Upsd:
    root: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def env(self) -> dict[str, str]:
        return {**os.environ, "NUT_CONFPATH": str(self.etc), "NUT_STATEPATH": str(self.root / "state")}

    def write_config(self, status: dict[str, str]) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(mode=0o770, exist_ok=True)
        (self.etc / "ups.conf").write_text(
            '[dummy]\n  driver = dummy-ups\n  port = dummy.dev\n  desc = "Simulated UPS"\n'
        )
        (self.etc / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\n")
        (self.etc / "upsd.users").write_text(f"[{USER}]\n  password = {PASSWORD}\n  upsmon primary\n")
        (self.etc / "nut.conf").write_text("MODE=standalone\n")
        self.set_state(status)

    def set_state(self, values: dict[str, str]) -> None:
        """Rewrite the dummy's .dev file; dummy-ups re-reads it when its mtime changes."""
        dev = self.etc / "dummy.dev"
        tmp = dev.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
        tmp.replace(dev)  # atomically: dummy-ups must never read a half-written file
        st = dev.stat()
        os.utime(dev, ns=(st.st_atime_ns, max(st.st_mtime_ns, time.time_ns()) + 1_000_000_000))

    def _spawn(self, *argv: str) -> None:
        with (self.root / "nut.log").open("ab") as log:  # the child keeps its own copy of the descriptor
            self.procs.append(
                subprocess.Popen([str(NUT_BIN / argv[0]), *argv[1:]], env=self.env(), stdout=log, stderr=log)
            )

    def start(self) -> None:
        self._spawn("dummy-ups", "-a", "dummy", "-F", "-u", "root")
        self.start_upsd()

    def start_upsd(self) -> None:
        self._spawn("upsd", "-F", "-u", "root")
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with NutClient(port=self.port, timeout=2) as c:
                    if c.list_vars("dummy").get("ups.status", "WAIT") != "WAIT":
                        return
            except NutError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"upsd not ready within {timeout:g} s: {(self.root / 'nut.log').read_text()[-500:]}")

    def stop_upsd(self) -> None:
        proc = self.procs.pop()
        proc.terminate()
        proc.wait(10)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


ONLINE = {
    "ups.status": "OL",
    "battery.charge": "100",
    "battery.runtime": "3600",
    "ups.load": "23",
    "input.voltage": "230.0",
}


@pytest.fixture
def upsd(tmp_path: Path) -> Iterator[Upsd]:
    """upsd + dummy-ups serving the UPS ``dummy``, on line, at 127.0.0.1:<free port>."""
    server = Upsd(tmp_path / "nut")
    server.write_config(ONLINE)
    server.start()
    try:
        yield server
    finally:
        server.stop()
