"""Reading TOML files that people write: every problem found, each with file, key and reason.

`read_toml` turns I/O, UTF-8 and syntax errors into a Problem; `TomlReader` walks one table with
typed getters that record a Problem and return the default on a bad value, so one pass finds
every problem. Shared by gateway.config and gateway.dialplan.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.errors import Problem

__all__ = ["MISSING", "TomlReader", "read_toml", "type_name"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def read_toml(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Read a TOML file: (data, []) or (None, [the problem]) for I/O, UTF-8 or syntax errors."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, [Problem(file, "(file)", f"cannot read: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, "(syntax)", f"not valid UTF-8 (at byte {exc.start})")]
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem(file, "(syntax)", str(exc))]


_T = TypeVar("_T")
_N = TypeVar("_N", int, float)
MISSING: Final = object()


class TomlReader:
    """Reads one TOML table with typed getters, recording a Problem for each bad value.

    Each getter returns the default after recording a problem, so reading goes on and every
    problem is found in one pass. `finish()` reports the keys nobody asked for as unknown.
    """

    def __init__(
        self, problems: list[Problem], file: str, data: Mapping[str, Any], prefix: str = ""
    ) -> None:
        self.problems = problems
        self.file = file
        self.data = data
        self.prefix = prefix
        self._known: list[str] = []

    def key(self, key: str) -> str:
        """The dotted path of `key` in this table, for problems."""
        name = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(Problem(self.file, key, reason))

    def raw(self, key: str) -> Any:
        """The value of `key`, or MISSING; marks the key as known."""
        self._known.append(key)
        return self.data.get(key, MISSING)

    def has(self, key: str) -> bool:
        return key in self.data

    def finish(self) -> None:
        """Report every key that no getter asked for."""
        for key in self.data:
            if key not in self._known:
                close = difflib.get_close_matches(key, self._known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(self.key(key), f"unknown key{hint}")

    def section(self, key: str) -> TomlReader:
        """A reader over the sub-table `key` (empty if absent or not a table)."""
        value = self.raw(key)
        if value is MISSING:
            value = {}
        elif not isinstance(value, dict):
            self.problem(self.key(key), f"expected a table, got {type_name(value)}")
            value = {}
        return TomlReader(self.problems, self.file, value, self.key(key))

    def typed(self, key: str, kind: type[_T], what: str, default: _T) -> _T:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(self.key(key), f"expected {what}, got {type_name(value)}")
            return default
        return value

    def string(self, key: str, default: str, *, required: bool = False) -> str:
        if required and not self.has(key):
            self.problem(self.key(key), "missing required key")
        return self.typed(key, str, "a string", default)

    def choice(self, key: str, choices: Mapping[str, _T], default: _T) -> _T:
        value = self.raw(key)
        if value is MISSING:
            return default
        if isinstance(value, str) and value.lower() in choices:
            return choices[value.lower()]
        self.problem(self.key(key), f"must be one of: {', '.join(choices)}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        return self.typed(key, bool, "a boolean", default)

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.typed(key, int, "an integer", default)
        return self._in_range(key, value, default, minimum, maximum)

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, positive: bool = False
    ) -> float:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.problem(self.key(key), f"expected a number, got {type_name(value)}")
            return default
        if value != value or value in (float("inf"), float("-inf")):
            self.problem(self.key(key), "must be a finite number")
            return default
        if positive and value <= 0:
            self.problem(self.key(key), "must be greater than 0")
            return default
        return float(self._in_range(key, value, default, minimum, None))

    def _in_range(
        self, key: str, value: _N, default: _N, minimum: float, maximum: float | None
    ) -> _N:
        if value < minimum:
            self.problem(self.key(key), f"must be at least {minimum:g}")
            return default
        if maximum is not None and value > maximum:
            self.problem(self.key(key), f"must be at most {maximum:g}")
            return default
        return value

    def array(self, key: str) -> list[Any] | None:
        """The array at `key`, or None if absent or not an array (recorded)."""
        value = self.raw(key)
        if value is MISSING:
            return None
        if not isinstance(value, list):
            self.problem(self.key(key), f"expected an array, got {type_name(value)}")
            return None
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """An array of strings; a bad item is a problem at key[i] and is left out."""
        items = self.array(key)
        if items is None:
            return default
        out: list[str] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.problem(f"{self.key(key)}[{i}]", f"expected a string, got {type_name(item)}")
        return tuple(out)

    def string_table(
        self, key: str, *, name_pattern: re.Pattern[str] | None = None
    ) -> dict[str, str]:
        """A table of name = "non-empty string" (e.g. users and their passwords)."""
        table = self.section(key)
        out: dict[str, str] = {}
        for name in table.data:
            value = table.string(name, "")
            if name_pattern is not None and not name_pattern.fullmatch(name):
                table.problem(table.key(name), "not a valid name")
            elif isinstance(table.data[name], str) and not value:
                table.problem(table.key(name), "must not be empty")
            elif value:
                out[name] = value
        return out

    def path(self, key: str, default: Path) -> Path:
        """A file path; relative paths are resolved against the current working directory."""
        text = self.string(key, str(default))
        if not text:
            self.problem(self.key(key), "must not be empty")
            text = str(default)
        return Path(os.path.abspath(text))


def type_name(value: object) -> str:
    """The TOML name of a parsed value's type, for "expected X, got Y" problems."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return "table" if isinstance(value, dict) else names.get(type(value), "date-time")
