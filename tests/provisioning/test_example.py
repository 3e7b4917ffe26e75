"""The example provisioning checked in under provisioning/example/ is exactly what the render command makes of the
example inputs next to it: reviewers can load it into a Grafana, and it cannot drift from the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.agent import fieldstation_cmd

ROOT = Path(__file__).parents[2]
HERE = ROOT / "provisioning"


def test_the_checked_in_example_is_what_render_writes(tmp_path: Path) -> None:
    out = tmp_path / "example"
    result = subprocess.run(
        fieldstation_cmd(
            "grafana", "render", str(out),
            "--config", str(HERE / "example_station.py"),
            "--grafana", str(HERE / "example-grafana.toml"),
            "--settings", str(HERE / "example-agent.toml"),
        ),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    ours = sorted(p.relative_to(HERE / "example") for p in (HERE / "example").rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert ours == fresh
    stale = [str(f) for f in fresh if (out / f).read_bytes() != (HERE / "example" / f).read_bytes()]
    assert stale == [], "re-render with the command in provisioning/README.md"
