"""Strict TOML loading shared by hardware profiles and model shapes, and the value checks
that the public API applies to the same fields.

Every data file is one flat table of values whose units are in the key names, plus a
``[sources]`` table with one ``{source = "...", retrieved = "YYYY-MM-DD"}`` entry per number.
Unknown keys, missing keys, wrong types and impossible values are rejected with a
``ValueError`` that names the key and the file.

The same checks serve function arguments (:func:`check_number`, :func:`check_str`,
:func:`check_real`): there the message starts with the argument's name
(``"<name>: expected <what>, got <value>"``) and a wrong type is a ``TypeError``.
"""

from __future__ import annotations

import datetime
import math
import numbers
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

__all__ = [
    "MAX_FILE_BYTES",
    "DataFileNotFoundError",
    "loads_toml",
    "check_keys",
    "check_number",
    "check_real",
    "check_str",
    "check_bool",
    "check_date",
    "get_number",
    "get_str",
    "get_bool",
    "check_sources",
    "show",
]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

#: largest profile / model file read (bytes); real ones are a few kB
MAX_FILE_BYTES = 1 << 20


class DataFileNotFoundError(FileNotFoundError, ValueError):
    """A profile or model file that does not exist: a ``FileNotFoundError`` and, like every
    other bad argument of the cost model, a ``ValueError``."""


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, shortened to ``limit`` characters."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _typed(value: Any) -> str:
    return f"{type(value).__name__} {show(value)}"


def loads_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error (or nesting too deep to parse) becomes a
    ``ValueError`` naming ``origin``."""
    if not isinstance(origin, str):
        raise TypeError(f"origin: expected a str naming the text's source, got {_typed(origin)}")
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str of TOML, got {_typed(text)}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(
            f"{origin}: not valid TOML here: arrays or tables nested too deeply to parse"
        ) from None


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


def check_number(
    value: Any,
    label: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    integer: bool = False,
    type_error: type[Exception] = TypeError,
) -> float | int:
    """A finite real number in range (``label: expected ..., got ...`` on failure).

    bool is not a number; an ``integer`` field takes an int or an integral float (``32.0``;
    ``32.9`` is rejected, never truncated) and returns an int; other fields return a float.
    A wrong type raises ``type_error`` (``ValueError`` for file contents)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy bools too
        raise type_error(f"{label}: expected a number, got {show(value)}")
    if isinstance(value, numbers.Integral):
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{label}: expected finite, got {show(value)}")
        if integer and not value.is_integer():
            raise ValueError(f"{label}: expected an integer, got {show(value)}")
    if minimum is not None:
        if strict_min and not value > minimum:
            raise ValueError(f"{label}: expected > {minimum}, got {show(value)}")
        if not strict_min and not value >= minimum:
            raise ValueError(f"{label}: expected >= {minimum}, got {show(value)}")
    if maximum is not None and not value <= maximum:
        raise ValueError(f"{label}: expected <= {maximum}, got {show(value)}")
    if integer:
        return int(value)
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{label}: expected finite, got an int of {value.bit_length()} bits"
        ) from None


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float = 0.0,
    strict_min: bool = True,
    maximum: float | None = None,
) -> float:
    """A function argument that must be a finite real number (default: ``> 0``); bool, str,
    None and NaN/inf are rejected naming ``name``. Returns it as a float."""
    return float(check_number(value, name, minimum=minimum, strict_min=strict_min, maximum=maximum))


def check_str(
    value: Any, label: str, *, choices=None, type_error: type[Exception] = TypeError
) -> str:
    """A non-empty (not all-blank) string of valid Unicode, optionally one of ``choices``."""
    if not isinstance(value, str):
        raise type_error(f"{label}: expected a non-empty string, got {show(value)}")
    if not value.strip():
        raise ValueError(f"{label}: expected a non-empty string, got {show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{label}: expected valid Unicode text (no lone surrogates), got {show(value)}"
        ) from None
    if choices is not None and value not in choices:
        raise ValueError(f"{label}: expected one of {sorted(choices)}, got {show(value)}")
    return value


def check_bool(value: Any, label: str, *, type_error: type[Exception] = TypeError) -> bool:
    """A real bool (``True``/``False``, or numpy's); ``"no"``, 0 and None are rejected."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):
        raise type_error(f"{label}: expected a bool (True or False), got {_typed(value)}")
    return bool(value)


def check_date(value: Any, label: str) -> str:
    """A real calendar date written ``YYYY-MM-DD`` (a TOML date literal is accepted too)."""
    if isinstance(value, datetime.datetime) or not isinstance(value, (str, datetime.date)):
        raise ValueError(f"{label}: expected a date YYYY-MM-DD, got {show(value)}")
    text = value.isoformat() if isinstance(value, datetime.date) else value
    if not _DATE.fullmatch(text):
        raise ValueError(f"{label}: expected YYYY-MM-DD, got {show(text)}")
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{label}: expected a valid date YYYY-MM-DD, got {show(text)}") from None
    return text


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
    return check_number(
        data[key],
        f"{origin}: key '{key}'",
        minimum=minimum,
        maximum=maximum,
        strict_min=strict_min,
        integer=integer,
        type_error=ValueError,
    )


def get_str(data: Mapping[str, Any], key: str, origin: str, *, choices=None) -> str:
    return check_str(data[key], f"{origin}: key '{key}'", choices=choices, type_error=ValueError)


def get_bool(data: Mapping[str, Any], key: str, origin: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ValueError(f"{origin}: key '{key}': expected true or false, got {show(value)}")
    return value


def check_sources(sources: Any, numeric_keys: set[str], origin: str) -> dict[str, tuple[str, str]]:
    """Validate the ``[sources]`` table: exactly one entry per number present, each with a
    non-empty ``source`` and a real ``retrieved`` date.

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
        date = check_date(entry["retrieved"], f"{origin}: '{where}.retrieved'")
        out[key] = (src, date)
    return out


def shipped_names(package: str) -> list[str]:
    """Names of the ``*.toml`` files shipped in ``package``, sorted."""
    files = resources.files(package)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def load_named(
    name_or_path: str | os.PathLike, *, package: str, what: str, kinds: str,
    parse: Callable[[str, str], Any], argname: str = "name_or_path",
) -> Any:  # fmt: skip
    """Parse a shipped TOML file by name, or a user's file by path (``.toml`` or a path).

    ``what`` names one item in messages (``"hardware"``), ``kinds`` the shipped set
    (``"profiles"``), ``argname`` the caller's argument; a shipped file's ``name`` key must
    equal its file name. A missing file raises :class:`DataFileNotFoundError`; an unreadable
    one, one over :data:`MAX_FILE_BYTES` or one that is not UTF-8 a ``ValueError``."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"{argname}: expected a {what} name or a TOML file path, got {_typed(name_or_path)}"
        )
    s = os.fspath(name_or_path)
    if not isinstance(s, str):
        raise TypeError(f"{argname}: expected a str path, got {_typed(s)}")
    if s.endswith(".toml") or os.sep in s or "/" in s:
        path = Path(s)
        try:
            if not path.is_file():
                raise DataFileNotFoundError(f"{argname}: {what} file not found: {show(s)}")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ValueError(
                    f"{argname}: {what} file {show(s)}: expected at most {MAX_FILE_BYTES} bytes, "
                    f"got {size}"
                )
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{s}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError):
                raise
            raise ValueError(
                f"{argname}: cannot read {what} file {show(s)}: {exc.strerror or exc}"
            ) from None
        return parse(text, str(path))
    known = shipped_names(package)
    if s not in known:
        raise ValueError(
            f"{argname}: unknown {what.split()[0]} {show(s)}; known {kinds}: {', '.join(known)}"
        )
    origin = f"{package.replace('.', '/')}/{s}.toml"
    item = parse((resources.files(package) / f"{s}.toml").read_text(encoding="utf-8"), origin)
    if item.name != s:
        raise ValueError(f"{origin}: key 'name' is {item.name!r}, expected {s!r}")
    return item
