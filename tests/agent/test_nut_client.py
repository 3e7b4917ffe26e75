"""The NUT protocol client against a real upsd with dummy-ups."""

from __future__ import annotations

import socket
import time

import pytest

from fieldstation.nut_client import NutClient, NutError, _quote, _unquote
from harness.nut import PASSWORD, USER, Upsd


def test_lists_the_ups_and_every_variable(upsd: Upsd) -> None:
    with NutClient(port=upsd.port) as c:
        assert c.list_ups() == {"dummy": "Simulated UPS"}
        variables = c.list_vars("dummy")
    assert variables["battery.charge"] == "100"
    assert variables["ups.status"] == "OL"
    assert variables["input.voltage"] == "230.0"


def test_an_unknown_ups_is_a_clear_error(upsd: Upsd) -> None:
    with NutClient(port=upsd.port) as c, pytest.raises(NutError, match="no such UPS") as info:
        c.list_vars("nosuch")
    assert info.value.code == "UNKNOWN-UPS"
    assert str(info.value) == f"upsd 127.0.0.1:{upsd.port}: UPS 'nosuch': no such UPS on this upsd (see `upsc -l`)"


def test_credentials_are_checked_by_login(upsd: Upsd) -> None:
    with NutClient(port=upsd.port) as c:
        c.login("dummy", USER, PASSWORD)
    with NutClient(port=upsd.port) as c, pytest.raises(NutError, match="access denied") as info:
        c.login("dummy", USER, "wrong")
    assert info.value.code == "ACCESS-DENIED"


def test_state_changes_are_seen(upsd: Upsd) -> None:
    upsd.set_state({"ups.status": "OB DISCHRG", "battery.charge": "80", "ups.load": "23"})
    for _ in range(50):
        with NutClient(port=upsd.port) as c:
            if c.list_vars("dummy")["ups.status"] == "OB DISCHRG":
                break
        time.sleep(0.2)
    with NutClient(port=upsd.port) as c:
        assert c.list_vars("dummy")["battery.charge"] == "80"


def test_no_server_and_a_silent_server_are_clear_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NutError, match="cannot connect"):
        NutClient(port=port, timeout=1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with (
            NutClient(port=listener.getsockname()[1], timeout=0.5) as c,
            pytest.raises(NutError, match=r"no answer within 0\.5 s"),
        ):
            c.list_ups()


def test_quoting_round_trips() -> None:
    for text in ["plain", 'with "quotes"', "back\\slash", ""]:
        assert _unquote(_quote(text)) == text
