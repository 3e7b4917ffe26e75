"""Startup cost of the CLI: CPU of ``fieldstation --help``, ``check`` and ``once -n 1`` over bare Python.

A Pi 3 is about ten times slower than this machine, so each 100 ms here is about a second there. Every command
runs ``RUNS`` times as a child process; its CPU (user + system) is the ``resource.getrusage(RUSAGE_CHILDREN)``
delta around each run, and the median is printed beside two references measured the same way in the same run:
``python -c pass`` (the interpreter with site-packages, what the ``fieldstation`` script starts with) and
``python -S -c pass`` (without the site module). Goals (issue 19): ``--help`` ≤ 100 ms over ``python -c pass``,
``check`` and ``once -n 1`` ≤ 250 ms over it. Then the top entries of ``-X importtime`` for each command, by
cumulative time. It asserts nothing.

    .venv-3.11/bin/python bench/startup_bench.py [--runs N] [config.py]

The config is the shipped example (``fieldstation/example_config.py``: simulated sensors, the Pi's own figures, an
Arduino and an HTTP station that are absent here and fail at once).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import fieldstation

EXAMPLE = Path(fieldstation.__file__).with_name("example_config.py")
#: What the ``fieldstation`` console script runs.
CLI = ["-c", "import sys; from fieldstation.cli import main; sys.exit(main())"]
TOP = 8


def commands(config: Path) -> list[tuple[str, list[str], float | None]]:
    """(name, argv after the interpreter, goal in ms over ``python -c pass``; None for a reference)."""
    return [
        ("python -S -c pass", ["-S", "-c", "pass"], None),
        ("python -c pass", ["-c", "pass"], None),
        ("fieldstation --help", [*CLI, "--help"], 100.0),
        ("fieldstation check", [*CLI, "check", str(config)], 250.0),
        ("fieldstation once -n 1", [*CLI, "once", "-n", "1", str(config)], 250.0),
    ]


def cpu_ms(argv: list[str]) -> float:
    """CPU (user + system) of one child run, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1e3


def import_top(argv: list[str]) -> list[tuple[int, int, str]]:
    """The ``TOP`` modules with the largest cumulative import time: (cumulative µs, self µs, name)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, check=False
    ).stderr
    rows = []
    count = 0
    for line in out.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        count += 1
        self_us, cum_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((int(cum_us), int(self_us), name))
    rows.sort(reverse=True)
    return [(count, 0, "modules imported"), *rows[:TOP]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", type=Path, default=EXAMPLE)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    cmds = commands(args.config)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cmds}
    # Interleaved rounds: a burst of load from other processes spreads over every command alike.
    for _ in range(args.runs):
        for name, argv, _ in cmds:
            samples[name].append(cpu_ms(argv))
    med = {name: statistics.median(v) for name, v in samples.items()}
    bare, bare_s = med["python -c pass"], med["python -S -c pass"]
    print(f"Python {sys.version.split()[0]}, median CPU of {args.runs} runs each, config {args.config.name}")
    print(f"  {'command':<24} {'CPU ms':>8} {'over -c pass':>13} {'over -S':>8} {'goal':>10}")
    for name, _, goal in cmds:
        over, over_s = med[name] - bare, med[name] - bare_s
        verdict = "" if goal is None else f"≤ {goal:.0f} {'PASS' if over <= goal else 'MISS'}"
        print(f"  {name:<24} {med[name]:8.1f} {over:13.1f} {over_s:8.1f} {verdict:>10}")
    for name, argv, goal in cmds:
        if goal is None:
            continue
        print(f"\n  -X importtime, {name}: top {TOP} by cumulative time")
        for cum, own, module in import_top(argv):
            if module == "modules imported":
                print(f"    {cum} modules imported")
            else:
                print(f"    {cum / 1e3:7.1f} ms cumulative {own / 1e3:6.1f} ms self  {module}")


if __name__ == "__main__":
    main()
