"""Loading ``config.py``: run the user's plain Python file, collect its sensors, report every mistake.

``config.py`` is ordinary Python. Its sensors are, in order of preference:

- ``sensors = {"Group": [...], ...}``: a mapping of dashboard group to sensors;
- ``sensors = [...]``: a list;
- otherwise every module-level ``Sensor`` instance, in definition order.

Every mistake becomes one line ``file:line: problem``, on the line of the option at fault; a
:class:`ConfigError` carries all of them (one run of ``check`` reports every mistake). ``fieldstation check``
and the service run exactly this code.

The file runs on a worker thread with a time limit (:data:`IMPORT_TIMEOUT`): a config that loops or blocks is
reported with the line it is stuck on instead of hanging ``check`` or the service's start, and ``sys.exit()`` or
``KeyboardInterrupt`` in it is reported like any other error. Threads it starts are listed by
:func:`threads_left_running` so the CLI does not wait for them at exit.
"""

from __future__ import annotations

import ast
import contextvars
import sys
import threading
import traceback
import types
import typing
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

# ConfigError lives in its own light module (the CLI names it before any config loads); imported from here too.
from fieldstation.errors import ConfigError as ConfigError  # noqa: PLC0414 (an explicit re-export, for mypy)
from fieldstation.paths import DEFAULT_CONFIG
from fieldstation.sensor import CallSite, Failure, MissingExtra, Range, Sensor, did_you_mean, failures, loading_file

#: Seconds config.py may take to run. Importing the drivers it names takes a few seconds on a Pi Zero.
IMPORT_TIMEOUT = 20.0

#: The module name config.py runs as.
CONFIG_MODULE = "fieldstation_config"

#: Non-daemon threads the last loaded config.py started (see :func:`threads_left_running`).
_started: list[threading.Thread] = []


def threads_left_running() -> list[threading.Thread]:
    """Non-daemon threads started by config.py that are still alive: the process must not wait for them."""
    return [t for t in _started if t.is_alive()]


class _Source:
    """The parsed config file: finds the line of an option inside the call that created a sensor."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.calls: dict[tuple[int, int, int, int], ast.Call] = {}
        self.classes: dict[str, int] = {}
        try:
            tree = ast.parse(data, path)
        except (SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.end_lineno is not None and node.end_col_offset is not None:
                self.calls[(node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)] = node
            elif isinstance(node, ast.ClassDef):
                self.classes.setdefault(node.name, node.lineno)

    def line(self, site: CallSite | None, option: str | None = None, key: object = None) -> int | None:
        """The line of ``option=`` (of its ``key`` if the option is a dict literal) in the call at ``site``."""
        if site is None:
            return None
        call = self.calls.get(site[1]) if site[1] is not None else None
        if call is None:
            return site[0]
        for kw in call.keywords:
            if option is not None and kw.arg == option:
                if key is not None and isinstance(kw.value, ast.Dict):
                    for k in kw.value.keys:
                        if isinstance(k, ast.Constant) and k.value == key:
                            return k.lineno
                return kw.lineno
        return call.lineno

    def where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line is not None else self.path


def _line_in(tb: TracebackType | None, path: str) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


# -- pydantic's errors in plain words -------------------------------------------------------------------


#: How plain annotations read in "should be …" messages.
KINDS: dict[Any, str] = {
    type(None): "None",
    float: "a number",
    int: "a whole number",
    str: "a string",
    bool: "True or False",
    Range: "(low, high)",
}


def _kind(tp: Any) -> str:
    """What a value of annotation ``tp`` looks like, for "should be …" messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in KINDS:
        text = KINDS[tp]
    elif origin is typing.Annotated:
        text = _kind(args[0])
    elif origin in (typing.Union, types.UnionType):
        kinds = [_kind(a) for a in args]
        text = ", ".join(kinds[:-1]) + " or " + kinds[-1]
    elif origin is typing.Literal:
        text = " or ".join(repr(a) for a in args)
    elif origin is dict:
        text = f"{{field: {_kind(args[1])}}}" if args and args[0] is str else "a dict"
    elif origin in (list, tuple):
        text = f"a list of {_kind(args[0])}" if args else "a list"
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        text = f"{tp.__name__}(...)"
    else:
        text = getattr(tp, "__name__", str(tp))
    return text


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _is_union(typing.get_args(tp)[0])
    return origin in (typing.Union, types.UnionType)


def _path(parts: tuple[int | str, ...]) -> str:
    """Where inside an option: ``, entry 'a', item 2``; a tagged union's tag (``linear``) is skipped."""
    out = []
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if isinstance(part, str) and part.startswith("tagged-union["):
            skip = True  # the next part is the discriminator's value
            continue
        out.append(f"item {part + 1}" if isinstance(part, int) else f"entry {part!r}")
    return "".join(f", {p}" for p in out)


def _say(err: ErrorDetails) -> str:
    msg = err["msg"].removeprefix("Value error, ").split(", unable to")[0]
    return msg if "(got " in msg else f"{msg} (got {err['input']!r})"


def _describe_option(title: str, option: str, errs: list[ErrorDetails], annotation: Any) -> tuple[object, str]:
    """One problem for one option: (dict key it is about or None, text)."""
    skip = 1
    if _is_union(annotation) and all(len(e["loc"]) >= 2 for e in errs):
        # Pydantic reports every member of the union; the member that got deepest is the one the user meant.
        deepest = max(errs, key=lambda e: len(e["loc"]))
        if len(deepest["loc"]) == 2:
            return None, f"{title} option {option!r} should be {_kind(annotation)} (got {errs[0]['input']!r})"
        errs = [e for e in errs if e["loc"][1] == deepest["loc"][1]]
        tag = str(deepest["loc"][1])
        skip = 3 if tag.startswith("tagged-union[") else 2  # and the discriminator's value
    inner = errs[0]["loc"][skip:]
    key = inner[0] if inner and isinstance(inner[0], str) else None
    # In a mapping of tagged unions ({field: Linear(...)}) the part after the key is the discriminator's value.
    tagged_values = (
        skip == 2 and str(errs[0]["loc"][1]).startswith("dict[") and "tagged-union[" in str(errs[0]["loc"][1])
    )
    texts = []
    for e in errs:
        parts = e["loc"][skip:]
        if tagged_values:
            parts = parts[:1] + parts[2:]
        texts.append(f"{title} option {option!r}{_path(parts)}: {_say(e)}")
    return key, "; ".join(dict.fromkeys(texts))


def _validation_problems(exc: ValidationError, cls: type[BaseModel]) -> list[tuple[str | None, object, str]]:
    """(option, key, problem) per option pydantic refused."""
    by_option: dict[str, list[ErrorDetails]] = {}
    out: list[tuple[str | None, object, str]] = []
    for err in exc.errors():
        if not err["loc"]:  # a check across options
            out.append((None, None, f"{exc.title}: {err['msg'].removeprefix('Value error, ')}"))
        else:
            by_option.setdefault(str(err["loc"][0]), []).append(err)
    for option, errs in by_option.items():
        kind = errs[0]["type"] if len(errs[0]["loc"]) == 1 else "nested"
        if kind == "extra_forbidden":
            hint = did_you_mean(option, cls.model_fields)
            out.append((option, None, f"unknown option {option!r} for {exc.title}{hint}"))
        elif kind == "missing":
            out.append((option, None, f"{exc.title} needs the option {option!r}"))
        else:
            field = cls.model_fields.get(option)
            annotation = field.annotation if field is not None else None
            key, text = _describe_option(exc.title, option, errs, annotation)
            out.append((option, key, text))
    return out


def _describe_validation(exc: ValidationError, cls: type[BaseModel] | None = None) -> str:
    """All of pydantic's complaints about one model in one line (used for settings files too)."""
    return "; ".join(text for _, _, text in _validation_problems(exc, cls or BaseModel))


# -- loading --------------------------------------------------------------------------------------------


def _failure_problems(src: _Source, failure: Failure) -> list[tuple[int | None, str]]:
    if not isinstance(failure.exc, ValidationError):
        return [(src.line(failure.site), str(failure.exc))]
    refused = _validation_problems(failure.exc, failure.cls)
    out = [(src.line(failure.site, option, key), text) for option, key, text in refused]
    # The options pydantic accepted can still name fields the sensor does not have: report those in this run too.
    bad = {option for option, _, _ in refused} | {None}
    try:
        more = failure.sensor.field_problems(skip=bad)
    except Exception:  # an unvalidated stand-in can lack what the check needs: the first mistakes are reported
        more = []
    out += [(src.line(failure.site, option, key), text) for option, key, text in more]
    return out


def _sensor_problems(src: _Source, sensors: list[Sensor], invalid: list[Sensor]) -> list[tuple[int | None, str]]:
    out: list[tuple[int | None, str]] = []
    seen_classes: set[type[Sensor]] = set()
    for s in [*sensors, *invalid]:
        cls = type(s)
        if cls not in seen_classes:
            seen_classes.add(cls)
            problem = cls.read_problem()
            if problem is not None:
                code = getattr(cls.read, "__code__", None)
                if code is not None and code.co_filename == src.path:
                    line: int | None = code.co_firstlineno
                else:
                    line = src.classes.get(cls.__name__, src.line(s._site))
                out.append((line, problem))
        if not s._invalid:  # a stand-in's fields were checked with its failure
            out += [(src.line(s._site, option, key), text) for option, key, text in s.field_problems()]
    return out


def _collect(namespace: dict[str, Any], src: _Source) -> tuple[list[Sensor], list[tuple[int | None, str]]]:
    declared = namespace.get("sensors")
    found: list[tuple[str, Any]] = []
    problems: list[tuple[int | None, str]] = []
    if isinstance(declared, dict):
        for group, members in declared.items():
            if not isinstance(members, (list, tuple)):
                problems.append((None, f"sensors[{group!r}] must be a list of sensors, not {type(members).__name__}"))
            else:
                found.extend((str(group), m) for m in members)
    elif isinstance(declared, (list, tuple)):
        found = [("", m) for m in declared]
    elif declared is not None:
        problems.append((None, f"`sensors` must be a list or a dict of lists, not {type(declared).__name__}"))
    else:
        found = [("", v) for k, v in namespace.items() if isinstance(v, Sensor) and not k.startswith("_")]

    sensors: list[Sensor] = []
    seen: dict[str, Sensor] = {}
    for i, (group, item) in enumerate(found):
        if not isinstance(item, Sensor):
            problems.append((None, f"sensors entry {i + 1} is a {type(item).__name__}, not a Sensor"))
            continue
        if item._invalid:  # already reported
            continue
        if group and not item.group:
            item.group = group
        if item.name in seen:
            line = item._origin[1] if item._origin else None
            problems.append((line, f"duplicate sensor name {item.name!r} (first defined at {seen[item.name].origin})"))
            continue
        seen[item.name] = item
        sensors.append(item)
    return sensors, problems


def _stuck_line(worker: threading.Thread, path: str) -> int | None:
    frame = sys._current_frames().get(worker.ident or -1)
    line = None
    while frame is not None:
        if frame.f_code.co_filename == path and line is None:
            line = frame.f_lineno  # the innermost frame of config.py
        frame = frame.f_back
    return line


def _exit_problem(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"config.py called sys.exit({exc.code!r}) while being loaded; it should only define sensors"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt raised while config.py was being loaded"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"


def _execute(code: types.CodeType, namespace: dict[str, Any], path: str, timeout: float) -> BaseException | None:
    """Run config.py on a daemon thread; return what it raised; ConfigError if it is still running at ``timeout``."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            exec(code, namespace)  # noqa: S102  (config.py is the user's own trusted Python, by design)
        except BaseException as exc:  # sys.exit and KeyboardInterrupt too: they are reported
            outcome.append(exc)

    before = set(threading.enumerate())
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="config.py import", daemon=True)
    worker.start()
    worker.join(timeout)
    _started[:] = [t for t in threading.enumerate() if t not in before and t is not worker and not t.daemon]
    if worker.is_alive():
        line = _stuck_line(worker, path)
        where = f"{path}:{line}" if line is not None else path
        raise ConfigError(
            f"{where}: still running after {timeout:g} s while being loaded (an endless loop, or a call that waits?);"
            " config.py should only define sensors"
        )
    return outcome[0] if outcome else None


def load_sensors(path: str | Path = DEFAULT_CONFIG, *, timeout: float = IMPORT_TIMEOUT) -> list[Sensor]:
    """Execute a ``config.py`` and return its validated sensors, or raise :class:`ConfigError` with every mistake."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    name = str(p)
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError(f"{name}:{line}: a NUL byte: config.py must be a text file (a damaged copy?)")
    try:
        # Bytes, so that compile() honours a PEP 263 coding line (# -*- coding: latin-1 -*-); UTF-8 otherwise.
        code = compile(data, name, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"{name}:{exc.lineno}: syntax error: {exc.msg}") from None
    src = _Source(name, data)
    # A real module, so that pydantic (and typing.get_type_hints) resolve the annotations of sensor classes
    # defined in config.py against its globals.
    module = types.ModuleType(CONFIG_MODULE)
    module.__file__ = name
    sys.modules[CONFIG_MODULE] = module
    namespace: dict[str, Any] = module.__dict__
    collected: list[Failure] = []
    tokens = (loading_file.set(name), failures.set(collected))
    try:
        raised = _execute(code, namespace, name, timeout)
    finally:
        failures.reset(tokens[1])
        loading_file.reset(tokens[0])

    problems = [p for f in collected for p in _failure_problems(src, f)]
    sensors: list[Sensor] = []
    if raised is not None:
        if isinstance(raised, ValidationError):  # a model other than a sensor (a conversion made on its own)
            text = _describe_validation(raised)
        elif isinstance(raised, MissingExtra):
            text = str(raised)
        else:
            text = _exit_problem(raised)
        problems.append((_line_in(raised.__traceback__, name), text))
    else:
        sensors, more = _collect(namespace, src)
        problems += more + _sensor_problems(src, sensors, [f.sensor for f in collected])
        if not sensors and not problems:
            problems.append((None, "no sensors defined (add a list named `sensors`)"))
    if problems:
        problems.sort(key=lambda p: p[0] if p[0] is not None else 0)
        raise ConfigError("\n".join(f"{src.where(line)}: {text}" for line, text in dict.fromkeys(problems)))
    return sensors
