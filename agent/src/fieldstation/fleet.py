"""What a station adds on the way to a fleet's central server: its own tags on every point, and the central
vmauth's way of refusing a credential.

The spool holds each point once, encoded for every sink; a sink with ``tags`` (the Ansible role sets
``station = <inventory hostname>`` on the central sink) adds them to each line as it sends it, so the local
InfluxDB keeps its series as they were and the central server tells the stations apart. A point that already
carries one of these tags keeps its own value. See docs/decisions/0005-fleet-victoriametrics.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

#: A tag key or value as a station sets it: what a hostname or a short label holds, nothing to escape.
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

#: The series key of a line: up to its first unescaped space.
_SERIES = re.compile(r"(?:[^\\ ]|\\.)*")

#: What vmauth answers, with status 400, a credential it does not know (1.79: revoked, or never given). It is a
#: refusal of the station, not of the data: the points must stay spooled, never be dropped as unacceptable.
AUTH_REFUSALS = ("cannot find the provided auth token",)


def auth_refused(status: int, body: str) -> bool:
    """True for a reply that refuses the credential though its status says the data was bad (vmauth's 400)."""
    return status == 400 and any(text in body for text in AUTH_REFUSALS)


def tagger(tags: Mapping[str, str]) -> Callable[[list[str]], list[str]] | None:
    """A function adding ``tags`` to every line of a batch (None when there are none to add)."""
    if not tags:
        return None
    items = sorted(tags.items())
    suffix = "".join(f",{k}={v}" for k, v in items)
    markers = tuple(f",{k}=" for k, _ in items)

    def tag_line(line: str) -> str:
        cut = line.find(" ")
        if cut < 0:
            return line  # not a point: the server says so, for this line alone
        if "\\" in line[:cut]:
            match = _SERIES.match(line)
            cut = match.end() if match else cut
        series = line[:cut]
        if any(m in series for m in markers):
            have = series + ","
            extra = "".join(f",{k}={v}" for k, v in items if f",{k}=" not in have)
            return series + extra + line[cut:]
        return series + suffix + line[cut:]

    def tag_lines(lines: list[str]) -> list[str]:
        return [tag_line(line) for line in lines]

    return tag_lines
