"""Fixtures: a real InfluxDB 1.x (Debian's influxd) on free loopback ports, stopped in teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.influxd import LocalInfluxd

DB = "fieldstation"


def start_influxd(root: Path, *, auth: bool = False, db: str | None = DB) -> LocalInfluxd:
    server = LocalInfluxd(root, auth=auth).start()
    if db and not auth:
        server.query(f'CREATE DATABASE "{db}"')
    return server


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[LocalInfluxd]:
    """A fresh InfluxDB with the database ``fieldstation``."""
    server = start_influxd(tmp_path / "influxd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influxd2(tmp_path: Path) -> Iterator[LocalInfluxd]:
    """A second InfluxDB, standing in for a fleet's central server."""
    server = start_influxd(tmp_path / "influxd2")
    try:
        yield server
    finally:
        server.stop()


def points(server: LocalInfluxd, measurement: str, db: str = DB) -> list[dict[str, object]]:
    """Every point of a measurement, tags included, ``time`` in ns."""
    return server.rows(f'SELECT * FROM "{measurement}" GROUP BY *', db)
