"""Shared fixtures. Real servers live in harness/ (InfluxDB, NUT upsd, Modbus peers); every module there
is loaded as a pytest plugin, so a fixture defined in harness/x.py is available to every test."""

from __future__ import annotations

from pathlib import Path

import pytest

# Harness modules import each other (harness.image uses harness.rootfs): have them all rewritten before any loads.
pytest.register_assert_rewrite("harness")

pytest_plugins = sorted(f"harness.{p.stem}" for p in (Path(__file__).parent / "harness").glob("[!_]*.py"))
