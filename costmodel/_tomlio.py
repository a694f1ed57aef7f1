"""Strict TOML loading shared by hardware profiles and model shapes.

Every data file is one flat table of values whose units are in the key names, plus a
``[sources]`` table with one ``{source = "...", retrieved = "YYYY-MM-DD"}`` entry per number.
Unknown keys, missing keys, wrong types and impossible values are rejected with a
``ValueError`` that names the key and the file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["loads_toml", "check_keys", "get_number", "get_str", "get_bool", "check_sources"]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def loads_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a ``ValueError`` naming ``origin``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from None


def check_keys(
    data: Mapping[str, Any], *, required: set[str], optional: set[str], origin: str
) -> None:
    """Reject unknown and missing keys, naming them and ``origin``."""
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise ValueError(
            f"{origin}: unknown key(s) {unknown}; expected keys are {sorted(required | optional)}"
        )
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{origin}: missing required key(s) {missing}")


def get_number(
    data: Mapping[str, Any],
    key: str,
    origin: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    integer: bool = False,
) -> float | int:
    """Read a number, checking type and range; raise ``ValueError`` naming key and file."""
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{origin}: key '{key}': expected a number, got {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise ValueError(f"{origin}: key '{key}': expected an integer, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{origin}: key '{key}': expected finite, got {value!r}")
    if minimum is not None:
        if strict_min and not value > minimum:
            raise ValueError(f"{origin}: key '{key}': expected > {minimum}, got {value!r}")
        if not strict_min and not value >= minimum:
            raise ValueError(f"{origin}: key '{key}': expected >= {minimum}, got {value!r}")
    if maximum is not None and not value <= maximum:
        raise ValueError(f"{origin}: key '{key}': expected <= {maximum}, got {value!r}")
    return int(value) if integer else float(value)


def get_str(data: Mapping[str, Any], key: str, origin: str, *, choices=None) -> str:
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{origin}: key '{key}': expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{origin}: key '{key}': expected one of {sorted(choices)}, got {value!r}")
    return value


def get_bool(data: Mapping[str, Any], key: str, origin: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ValueError(f"{origin}: key '{key}': expected true or false, got {value!r}")
    return value


def check_sources(sources: Any, numeric_keys: set[str], origin: str) -> dict[str, tuple[str, str]]:
    """Validate the ``[sources]`` table: exactly one entry per number present.

    Returns ``{key: (source, retrieved)}``.
    """
    if not isinstance(sources, Mapping):
        raise ValueError(f"{origin}: key 'sources': expected a table of per-number sources")
    unknown = sorted(set(sources) - numeric_keys)
    if unknown:
        raise ValueError(f"{origin}: sources given for unknown or absent key(s) {unknown}")
    missing = sorted(numeric_keys - set(sources))
    if missing:
        raise ValueError(f"{origin}: no source given for key(s) {missing} (add [sources.KEY])")
    out: dict[str, tuple[str, str]] = {}
    for key in sorted(numeric_keys):
        entry = sources[key]
        where = f"sources.{key}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{origin}: '{where}': expected a table with source and retrieved")
        check_keys(
            entry, required={"source", "retrieved"}, optional=set(), origin=f"{origin} [{where}]"
        )
        src = get_str(entry, "source", f"{origin} [{where}]")
        date = entry["retrieved"]
        date = str(date)
        if not _DATE.match(date):
            raise ValueError(f"{origin}: '{where}.retrieved': expected YYYY-MM-DD, got {date!r}")
        out[key] = (src, date)
    return out


def shipped_names(package: str) -> list[str]:
    """Names of the ``*.toml`` files shipped in ``package``, sorted."""
    files = resources.files(package)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_named(
    name_or_path: str | os.PathLike, *, package: str, what: str, kinds: str,
    parse: Callable[[str, str], Any],
) -> Any:  # fmt: skip
    """Parse a shipped TOML file by name, or a user's file by path (``.toml`` or a path).

    ``what`` names one item in messages (``"hardware"``), ``kinds`` the shipped set
    (``"profiles"``); a shipped file's ``name`` key must equal its file name."""
    s = os.fspath(name_or_path)
    if s.endswith(".toml") or os.sep in s or "/" in s:
        path = Path(s)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {s}")
        return parse(path.read_text(encoding="utf-8"), str(path))
    known = shipped_names(package)
    if s not in known:
        raise ValueError(f"unknown {what.split()[0]} {s!r}; known {kinds}: {', '.join(known)}")
    origin = f"{package.replace('.', '/')}/{s}.toml"
    item = parse((resources.files(package) / f"{s}.toml").read_text(encoding="utf-8"), origin)
    if item.name != s:
        raise ValueError(f"{origin}: key 'name' is {item.name!r}, expected {s!r}")
    return item
