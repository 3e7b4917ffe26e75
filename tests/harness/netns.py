"""Test hosts on a network of their own: a network namespace (``ip netns``) joined to this machine by a veth pair
with fixed addresses, so a container booted in it (``boot(..., network_namespace=...)``) is a host on a LAN that a
test reaches over SSH, as a user reaches their Pi. Its firewall applies inside the namespace only.

The namespace has no route out. What a station fetches from the network (Debian's packages, for apt) goes through a
forward proxy on this machine's end of the link that passes requests on only to the hosts it is given, as a lab's
apt proxy would (``Acquire::http::Proxy``).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import secrets
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own business, never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "transfer-encoding", "upgrade"}


@dataclass(frozen=True)
class Link:
    namespace: str  # for ``boot(network_namespace=...)`` and ``ip -n``
    host_if: str
    host_ip: str  # this machine's end
    guest_if: str
    guest_ip: str  # the station's address


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _free_subnet() -> int:
    """A /30 in 10.213.0.0/16 that no interface here uses (concurrent tests each take their own)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(100):
        n = secrets.randbelow(16384)
        if f"10.213.{n // 64}.{(n % 64) * 4}" not in used and f"10.213.{n // 64}.{(n % 64) * 4 + 1}/" not in used:
            return n
    raise RuntimeError("no free /30 in 10.213.0.0/16")


@contextlib.contextmanager
def veth_namespace(guest_if: str = "lan0") -> Iterator[Link]:
    """A namespace with one link to this machine. The guest's interface name matches none of the image's network
    files (eth*, en*, wl*), so systemd-networkd inside leaves its fixed address alone."""
    tag = secrets.token_hex(3)
    n = _free_subnet()
    base = f"10.213.{n // 64}.{(n % 64) * 4}"
    prefix = base.rsplit(".", 1)[0]
    last = int(base.rsplit(".", 1)[1])
    link = Link(f"fs-{tag}", f"fsh-{tag}", f"{prefix}.{last + 1}", guest_if, f"{prefix}.{last + 2}")
    _ip("netns", "add", link.namespace)
    try:
        _ip("link", "add", link.host_if, "type", "veth", "peer", "name", guest_if, "netns", link.namespace)
        _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        _ip("-n", link.namespace, "addr", "add", f"{link.guest_ip}/30", "dev", guest_if)
        _ip("-n", link.namespace, "link", "set", guest_if, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        yield link
    finally:
        subprocess.run(["ip", "link", "del", link.host_if], capture_output=True)  # takes the peer along
        subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True)


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    allowed: frozenset[str] = frozenset()
    timeout = 60

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.allowed:
            self.send_error(403, f"this proxy forwards only to {', '.join(sorted(self.allowed))}")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        try:
            conn.request(self.command, url._replace(scheme="", netloc="").geturl() or "/", body, headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            self.send_error(502, f"{url.hostname}: {exc}")
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Proxy:
    url: str
    server: http.server.ThreadingHTTPServer

    def apt_conf(self, root: Path) -> Path:
        """Points the station's apt at this proxy, as a lab with an apt proxy configures its hosts."""
        conf = root / "etc/apt/apt.conf.d/00proxy"
        conf.write_text(f'Acquire::http::Proxy "{self.url}";\n')
        return conf


@contextlib.contextmanager
def forward_proxy(address: str, allowed_hosts: Iterable[str]) -> Iterator[Proxy]:
    """An HTTP forward proxy on ``address`` (a free port) that passes requests on to ``allowed_hosts`` only."""
    handler = type("Forward", (_Forward,), {"allowed": frozenset(allowed_hosts)})
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="forward-proxy", daemon=True)
    thread.start()
    try:
        yield Proxy(f"http://{address}:{server.server_address[1]}/", server)
    finally:
        server.shutdown()
        server.server_close()


def reachable(address: str, port: int, timeout: float = 3) -> bool:
    """Whether a TCP connection to address:port is accepted (a firewall that drops it times out)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
