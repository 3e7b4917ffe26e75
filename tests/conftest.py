"""Shared fixtures. Real servers live in harness/ (InfluxDB, NUT upsd, Modbus peers); every module there
is loaded as a pytest plugin, so a fixture defined in harness/x.py is available to every test."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(f"harness.{p.stem}" for p in (Path(__file__).parent / "harness").glob("[!_]*.py"))
