"""Loading ``config.py``: run the user's plain Python file, collect its sensors, report mistakes in one line.

``config.py`` is ordinary Python. Its sensors are, in order of preference:

- ``sensors = {"Group": [...], ...}``: a mapping of dashboard group to sensors;
- ``sensors = [...]``: a list;
- otherwise every module-level ``Sensor`` instance, in definition order.

Every mistake becomes a :class:`ConfigError` whose message is one line: ``file:line: problem``.
``fieldstation check`` and the service run exactly this code.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from fieldstation.sensor import MissingExtra, Sensor, loading_file

DEFAULT_CONFIG = Path("/etc/fieldstation/config.py")


class ConfigError(Exception):
    """A user mistake in a config file; ``str()`` is a single line naming file and line."""


def _line_in(tb: TracebackType | None, path: str) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown option {loc!r} for {exc.title}")
        elif err["type"] == "missing":
            problems.append(f"{exc.title} needs the option {loc!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if "(got " in msg else f" (got {err['input']!r})"
            problems.append(f"{exc.title} option {loc!r}: {msg}{got}")
    return "; ".join(problems)


def _collect(namespace: dict[str, Any], path: str) -> list[Sensor]:
    declared = namespace.get("sensors")
    found: list[tuple[str, Any]] = []
    if isinstance(declared, dict):
        for group, members in declared.items():
            if not isinstance(members, (list, tuple)):
                raise ConfigError(f"{path}: sensors[{group!r}] must be a list of sensors, not {type(members).__name__}")
            found.extend((str(group), m) for m in members)
    elif isinstance(declared, (list, tuple)):
        found = [("", m) for m in declared]
    elif declared is not None:
        raise ConfigError(f"{path}: `sensors` must be a list or a dict of lists, not {type(declared).__name__}")
    else:
        found = [("", v) for k, v in namespace.items() if isinstance(v, Sensor) and not k.startswith("_")]

    sensors: list[Sensor] = []
    seen: dict[str, Sensor] = {}
    for i, (group, item) in enumerate(found):
        if not isinstance(item, Sensor):
            raise ConfigError(f"{path}: sensors entry {i + 1} is a {type(item).__name__}, not a Sensor")
        if group and not item.group:
            item.group = group
        if item.name in seen:
            raise ConfigError(
                f"{item.origin}: duplicate sensor name {item.name!r} (first defined at {seen[item.name].origin})"
            )
        seen[item.name] = item
        sensors.append(item)
    if not sensors:
        raise ConfigError(f"{path}: no sensors defined (add a list named `sensors`)")
    return sensors


def load_sensors(path: str | Path = DEFAULT_CONFIG) -> list[Sensor]:
    """Execute a ``config.py`` and return its validated sensors, or raise :class:`ConfigError`."""
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    name = str(p)
    try:
        code = compile(source, name, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"{name}:{exc.lineno}: syntax error: {exc.msg}") from None
    namespace: dict[str, Any] = {"__file__": name, "__name__": "fieldstation_config"}
    token = loading_file.set(name)
    try:
        exec(code, namespace)  # noqa: S102  (config.py is the user's own trusted Python, by design)
    except ValidationError as exc:
        raise ConfigError(f"{name}:{_line_in(exc.__traceback__, name)}: {_describe_validation(exc)}") from None
    except MissingExtra as exc:
        raise ConfigError(f"{name}:{_line_in(exc.__traceback__, name)}: {exc}") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{name}:{_line_in(exc.__traceback__, name)}: {type(exc).__name__}: {first}") from None
    finally:
        loading_file.reset(token)
    return _collect(namespace, name)
