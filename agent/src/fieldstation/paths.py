"""Where a station keeps its files: the default paths every command names in its ``--help``.

Stdlib only: ``fieldstation --help`` imports this module, and importing pydantic or a model would cost it a
third of a second on a Pi 3 (bench/startup_bench.py).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path("/etc/fieldstation/config.py")
DEFAULT_SETTINGS = Path("/etc/fieldstation/agent.toml")
DEFAULT_BACKUP_SETTINGS = Path("/etc/fieldstation/backup.toml")
DEFAULT_SETUP = Path("/etc/fieldstation/influx-setup.toml")
STATE_DIR = Path("/var/lib/fieldstation")
