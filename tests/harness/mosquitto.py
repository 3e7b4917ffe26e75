"""Fixture: a real Mosquitto broker (Debian's mosquitto) on a free loopback port, and a publisher playing devices."""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fieldstation.influxd import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: user → password; when given, anonymous clients are refused and only these users get in.
    passwords: dict[str, str] = field(default_factory=dict)
    #: TLS only, with a self-signed certificate for 127.0.0.1 (``cert``: the file a client trusts).
    tls: bool = False

    @property
    def cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def log(self) -> Path:
        return self.root / "mosquitto.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if self.passwords:
            pwfile = self.root / "passwd"
            pwfile.unlink(missing_ok=True)
            for user, password in self.passwords.items():
                create = [] if pwfile.exists() else ["-c"]
                subprocess.run(["/usr/bin/mosquitto_passwd", *create, "-b", str(pwfile), user, password], check=True)
            pwfile.chmod(0o600)
            access = f"allow_anonymous false\npassword_file {pwfile}\n"
        if self.tls and not self.cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self.root / "broker.key"),
                 "-out", str(self.cert)],
                check=True, capture_output=True,
            )
        if self.tls:
            access += f"certfile {self.cert}\nkeyfile {self.root / 'broker.key'}\n"
        # No persistence: a restart forgets retained messages, as a broker whose store was lost does.
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{access}persistence false\n"
            # A log file is flushed line by line (stdout is block-buffered): tests read what the broker saw.
            # Started as root, mosquitto would drop to the `mosquitto` user, who cannot write the test's directory.
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.log}\nlog_type all\nconnection_messages true\n"
        )
        self.log.touch()
        with (self.root / "mosquitto.out").open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=out)
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mosquitto not listening within {timeout:g} s: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def clients_connected(self) -> list[str]:
        """Client ids of the connections the broker logged as made, in order."""
        return [
            line.split(" as ", 1)[1].split(" ", 1)[0]
            for line in self.log.read_text(errors="replace").splitlines()
            if "New client connected" in line and " as " in line
        ]

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        """Publish one message as a device would, and return once the broker has it (QoS 1)."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{time.monotonic_ns()}")
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()
            client._reset_sockets()  # loop_start()'s socket pair, else left to Client.__del__ (paho-mqtt 2.2)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto at 127.0.0.1:<free port>, anonymous, stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
