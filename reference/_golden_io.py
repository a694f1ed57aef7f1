"""Golden-case files: ``<name>.npz`` per case and ``manifest.json`` (``docs/validation.md``).

:func:`save_cases` and :func:`load_cases` are re-exported by :mod:`reference.validation`.
A golden directory may come from anywhere (a download, a colleague's GPU box), so the loader
treats every byte of it as untrusted:

* case names and file entries are plain names inside the directory (``[A-Za-z0-9._-]+``,
  not ``.``/``..``), and a file that resolves outside it (a symlink) is refused;
* the manifest is checked completely (keys, JSON types, parameters, the shapes every array
  must have given the case's ``q`` and ``k_cache`` and the byte limits below) before any
  ``.npz`` is opened;
* in each ``.npz`` the zip directory (member names, sizes, compression) and then every
  member's ``.npy`` header are checked against the manifest *before* the member is
  inflated, so a small file that would inflate to gigabytes is refused unread;
* the set of arrays is fixed, every array has a SHA-256 and every checksum is verified;
  never ``allow_pickle``: object arrays are refused;
* every failure is a :class:`GoldenFileError` (a ``ValueError``) naming the file and key.

This module imports :mod:`reference.validation` only inside functions (that module
re-exports this one).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from reference.precision import PRECISIONS

#: Format written by :func:`save_cases`; :data:`READ_FORMATS` are the ones read.
FORMAT = "sparq-golden/2"
#: Format 1 (bfloat16 inputs as float32 holding the values, no ``storage`` key) is still read.
READ_FORMATS = ("sparq-golden/1", "sparq-golden/2")
#: ``"storage"`` of a bfloat16 input stored as its uint16 bit patterns (format 2).
BF16_BITS = "bfloat16-bits"

#: Largest ``manifest.json`` read (bytes).
MAX_MANIFEST_BYTES = 16 * 2**20
#: Largest case: the uncompressed ``.npy`` members of one ``.npz`` together (bytes). The
#: biggest built-in case (``llama3-8b-like`` in float64) takes about 34 MiB; a realistic
#: ``sparq golden --shape 16,32,32,32768,128 --dtype float16`` case about 8.7 GiB.
MAX_CASE_BYTES = 16 * 2**30
#: Largest suite: every case of one manifest together, uncompressed (bytes); load_cases
#: holds them all in memory.
MAX_SUITE_BYTES = 32 * 2**30
#: Longest case name / file entry (characters).
MAX_NAME_CHARS = 128
#: How much larger than its arrays' declared bytes (plus 1/256 of them) an ``.npz`` on disk
#: may be: zip headers and deflate's worst-case growth take a few hundred bytes per member.
NPZ_SLACK_BYTES = 2**20
#: Largest ``.npy`` header accepted (NumPy's own default cap; ours are about 128 bytes).
MAX_NPY_HEADER_BYTES = 10_000

_FIELDS = ("out", "components", "approx_logits", "positions", "alpha", "v_mean", "y", "temperature")
_INPUT_KEYS = ("q", "k_cache", "v_cache", "mask")
#: The arrays of every case, in the order they are written.
ARRAY_KEYS = _INPUT_KEYS + tuple(f"expected_{f}" for f in _FIELDS)
_INDEX_STEPS = ("expected_components", "expected_positions")

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = ("format", "cases")
_TOP_OPTIONAL = ("reference_version", "steps", "conventions")
#: Parameters every case records; the other ``validation._PARAM_KEYS`` are optional.
_BASE_PARAMS = ("r", "k", "local_window", "reallocate", "temperature", "group_score", "selection")
_CASE_KEYS = ("name", "description", "file", "dtype", "seed", "params", "arrays")
_ARRAY_META = ("shape", "dtype", "sha256")
_BASIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                 "uint64", "float16", "float32", "float64")  # fmt: skip
#: Declared dtype strings understood (``str(a.dtype)`` of these types, in any byte order).
_DTYPES = {
    str(np.dtype(n).newbyteorder(o)): np.dtype(n).newbyteorder(o)
    for n in _BASIC_DTYPES
    for o in "<>="
}
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Exceptions that zipfile, zlib and numpy's header parser raise on damaged data.
_LOW_LEVEL = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
              ValueError, struct.error, NotImplementedError, RuntimeError, KeyError,
              IndexError, OverflowError, TypeError, SyntaxError)  # fmt: skip


class GoldenFileError(ValueError):
    """A golden directory that cannot be trusted; the message names the file and key."""


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@contextmanager
def _low_level(where: str):
    """Re-raise what zipfile/zlib/numpy raise on damaged bytes as a GoldenFileError."""
    try:
        yield
    except GoldenFileError:
        raise
    except _LOW_LEVEL as exc:
        raise GoldenFileError(
            f"{where}: damaged or unreadable ({type(exc).__name__}: {exc})"
        ) from exc


def _plain_name(value, where: str, *, suffix: str = "") -> str:
    if not isinstance(value, str):
        raise GoldenFileError(f"{where}: expected a string, got {type(value).__name__}")
    if (
        not _NAME_RE.fullmatch(value)
        or value in (".", "..")
        or len(value) > MAX_NAME_CHARS
        or not value.endswith(suffix)
        or value == suffix
    ):
        need = f" ending in {suffix!r}" if suffix else ""
        raise GoldenFileError(
            f"{where}: {value!r} is not a plain file name{need} inside the directory (at most"
            f" {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ -, not '.' or '..')"
        )
    return value


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _dict_with(obj, where: str, required, optional=()) -> dict:
    if not isinstance(obj, dict):
        raise GoldenFileError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise GoldenFileError(f"{where}: missing key {missing[0]!r}")
    extra = sorted(set(obj) - set(required) - set(optional), key=str)
    if extra:
        raise GoldenFileError(f"{where}: unknown key {extra[0]!r}")
    return obj


def _nbytes(shape, dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


# ------------------------------------------------------------------------------------------
# One case's manifest entry: keys, types, parameters, shapes, dtypes, byte limit.
# ------------------------------------------------------------------------------------------


def _check_dtype_rule(where: str, key: str, dt: np.dtype, case_dtype: str, storage) -> None:
    """Which dtype each array may have (the inputs: the case's dtype)."""
    if storage is not None and (key not in _INPUT_KEYS[:3] or case_dtype != "bfloat16"):
        raise GoldenFileError(
            f"{where}: {key}: storage {storage!r} is only for the bfloat16 inputs q, k_cache,"
            " v_cache"
        )
    if key in _INPUT_KEYS[:3]:
        if storage == BF16_BITS:
            ok, need = dt.kind == "u" and dt.itemsize == 2, "uint16 (bfloat16 bit patterns)"
        elif case_dtype == "bfloat16":
            ok, need = dt.kind == "f" and dt.itemsize == 4, "float32 holding bfloat16 values"
        else:
            want = np.dtype(case_dtype)
            ok, need = dt.kind == "f" and dt.itemsize == want.itemsize, f"{case_dtype}"
    elif key == "mask":
        ok, need = dt.kind == "b", "bool"
    elif key in _INDEX_STEPS:
        ok, need = dt.kind in "iu", "integer"
    else:
        ok, need = dt.kind == "f" and dt.itemsize in (2, 4, 8), "float16, float32 or float64"
    if not ok:
        raise GoldenFileError(
            f"{where}: {key}: expected a {need} array (case dtype {case_dtype}), got {dt}"
        )


def _expected_shapes(where: str, declared: dict, params: dict) -> dict:
    """The shape of every array, from q (B, H, d), k_cache (B, Hkv, S, d) and the params."""
    from reference.sparq import SparqParams, positions_columns

    q, kc = declared["q"], declared["k_cache"]
    if len(q) != 3 or len(kc) != 4:
        raise GoldenFileError(
            f"{where}: q, k_cache: expected shapes (B, H, d) and (B, Hkv, S, d), got {q} and {kc}"
        )
    B, H, d = q
    _, Hkv, S, _ = kc
    if min(B, H, d, Hkv, S) < 1 or H % Hkv or kc[0] != B or kc[3] != d:
        raise GoldenFileError(
            f"{where}: q, k_cache: shapes {q} and {kc} do not fit (B, H, d) and (B, Hkv, S, d)"
            " with every size >= 1 and H a multiple of Hkv"
        )
    try:
        p = SparqParams.build(d=d, **params)
    except (TypeError, ValueError) as exc:
        raise GoldenFileError(f"{where}: params: {exc}") from None
    G = Hkv if p.selection == "group" else H
    n = positions_columns(p.k, S)
    return dict(q=(B, H, d), k_cache=(B, Hkv, S, d), v_cache=(B, Hkv, S, d), mask=(B, S),
                expected_out=(B, H, d), expected_components=(B, G, p.r),
                expected_approx_logits=(B, H, S), expected_positions=(B, G, n),
                expected_alpha=(B, H), expected_v_mean=(B, Hkv, d), expected_y=(B, H, d),
                expected_temperature=(B, H))  # fmt: skip


def _check_entry(entry, where: str, fmt: str) -> tuple[dict, int]:
    """Check one case entry; return ``({key: (shape, dtype, sha256, storage)}, bytes)``."""
    from reference.validation import _PARAM_KEYS

    optional_params = tuple(k for k in _PARAM_KEYS if k not in _BASE_PARAMS)
    e = _dict_with(entry, where, _CASE_KEYS)
    name = _plain_name(e["name"], f"{where}: name")
    where = f"{where} ({name})"
    _plain_name(e["file"], f"{where}: file", suffix=".npz")
    if not isinstance(e["description"], str):
        raise GoldenFileError(f"{where}: description: expected a string")
    if not _is_int(e["seed"]):
        raise GoldenFileError(f"{where}: seed: expected an int, got {e['seed']!r}")
    if not isinstance(e["dtype"], str) or e["dtype"] not in PRECISIONS:
        raise GoldenFileError(f"{where}: dtype: expected one of {PRECISIONS}, got {e['dtype']!r}")
    params = _dict_with(e["params"], f"{where}: params", _BASE_PARAMS, optional_params)
    arrays = _dict_with(e["arrays"], f"{where}: arrays", ARRAY_KEYS)
    metas = {}
    for key in ARRAY_KEYS:
        w = f"{where}: arrays: {key}"
        optional = ("storage",) if fmt != "sparq-golden/1" else ()
        m = _dict_with(arrays[key], w, _ARRAY_META, optional)
        shape = m["shape"]
        if not (isinstance(shape, list) and len(shape) <= 4 and all(map(_is_int, shape))):
            raise GoldenFileError(f"{w}: shape: expected a list of ints, got {shape!r}")
        if any(s < 0 for s in shape):
            raise GoldenFileError(f"{w}: shape: negative size in {shape}")
        if not isinstance(m["dtype"], str) or m["dtype"] not in _DTYPES:
            raise GoldenFileError(
                f"{w}: dtype: expected one of {_BASIC_DTYPES}, got {m['dtype']!r}"
            )
        if not (isinstance(m["sha256"], str) and _SHA_RE.fullmatch(m["sha256"])):
            raise GoldenFileError(f"{w}: sha256: expected 64 lowercase hex digits")
        storage = m.get("storage")
        if storage is not None and storage != BF16_BITS:
            raise GoldenFileError(f"{w}: storage: expected {BF16_BITS!r}, got {storage!r}")
        dt = _DTYPES[m["dtype"]]
        _check_dtype_rule(where, key, dt, e["dtype"], storage)
        metas[key] = (tuple(shape), dt, m["sha256"], storage)
    shapes = _expected_shapes(where, {k: v[0] for k, v in metas.items()}, params)
    for key in ARRAY_KEYS:
        if metas[key][0] != shapes[key]:
            raise GoldenFileError(
                f"{where}: arrays: {key}: declared shape {list(metas[key][0])} is inconsistent"
                f" with the case (expected {list(shapes[key])} from q {list(shapes['q'])},"
                f" k_cache {list(shapes['k_cache'])} and the params)"
            )
    total = sum(_nbytes(s, dt) for s, dt, _, _ in metas.values())
    if total > MAX_CASE_BYTES:
        raise GoldenFileError(
            f"{where}: arrays: {total} bytes uncompressed exceed the limit MAX_CASE_BYTES ="
            f" {MAX_CASE_BYTES}"
        )
    return metas, total


# ------------------------------------------------------------------------------------------
# Files.
# ------------------------------------------------------------------------------------------


def _open_regular(path: Path, where: str):
    """Open ``path`` for reading if it is a regular file (never blocks on a FIFO)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise GoldenFileError(f"{where}: file not found") from None
    except OSError as exc:
        raise GoldenFileError(f"{where}: cannot open ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise GoldenFileError(f"{where}: not a regular file")
    return os.fdopen(fd, "rb"), st.st_size


def _reject_constant(c):
    raise GoldenFileError(f"manifest.json: {c} is not a JSON value")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise GoldenFileError(f"manifest.json: duplicate key {k!r}")
        out[k] = v
    return out


def _read_manifest(path: Path) -> dict:
    f, size = _open_regular(path, "manifest.json")
    with f:
        if size > MAX_MANIFEST_BYTES:
            raise GoldenFileError(
                f"manifest.json: {size} bytes exceed the limit MAX_MANIFEST_BYTES ="
                f" {MAX_MANIFEST_BYTES}"
            )
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise GoldenFileError(
            f"manifest.json: larger than MAX_MANIFEST_BYTES = {MAX_MANIFEST_BYTES}"
        )
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates)  # fmt: skip
    except GoldenFileError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise GoldenFileError(f"manifest.json: not valid JSON ({exc})") from None


def _check_manifest(manifest) -> tuple[str, list]:
    m = _dict_with(manifest, "manifest.json", _TOP_KEYS, _TOP_OPTIONAL)
    fmt = m["format"]
    if fmt not in READ_FORMATS:
        raise GoldenFileError(
            f"manifest.json: format: expected {FORMAT!r} (or one of {READ_FORMATS}), got {fmt!r}"
        )
    for key in ("reference_version", "conventions"):
        if key in m and not isinstance(m[key], str):
            raise GoldenFileError(f"manifest.json: {key}: expected a string")
    if "steps" in m and not (
        isinstance(m["steps"], list) and all(isinstance(s, str) for s in m["steps"])
    ):
        raise GoldenFileError("manifest.json: steps: expected a list of strings")
    cases = m["cases"]
    if not isinstance(cases, list):
        raise GoldenFileError(f"manifest.json: cases: expected a list, got {type(cases).__name__}")
    if not cases:
        raise GoldenFileError("manifest.json: cases: no cases (an empty suite checks nothing)")
    checked, seen, total = [], {}, 0
    for i, e in enumerate(cases):
        metas, nbytes = _check_entry(e, f"manifest.json: cases[{i}]", fmt)
        for key in ("name", "file"):
            folded = (key, e[key].casefold())
            if folded in seen:
                raise GoldenFileError(
                    f"manifest.json: cases[{i}]: {key}: {e[key]!r} repeats cases[{seen[folded]}]"
                    " (names are compared ignoring case)"
                )
            seen[folded] = i
        total += nbytes
        if total > MAX_SUITE_BYTES:
            raise GoldenFileError(
                f"manifest.json: cases[{i}] ({e['name']}): the suite exceeds the limit"
                f" MAX_SUITE_BYTES = {MAX_SUITE_BYTES} bytes uncompressed"
            )
        checked.append((e, metas, nbytes))
    return fmt, checked


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, meta, fname: str):
    """Check the member's .npy header against the manifest, then inflate it (bounded)."""
    shape, dt, _, _ = meta
    where = f"{fname}: {key}"
    nbytes = _nbytes(shape, dt)
    with _low_level(where), zf.open(info) as fp:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            hshape, fortran, hdt = npy_format.read_array_header_1_0(fp, MAX_NPY_HEADER_BYTES)
        elif version == (2, 0):
            hshape, fortran, hdt = npy_format.read_array_header_2_0(fp, MAX_NPY_HEADER_BYTES)
        else:
            raise GoldenFileError(f"{where}: unsupported .npy format version {version}")
        if hdt.hasobject:
            raise GoldenFileError(f"{where}: object arrays are refused (never unpickled)")
        if hdt != dt:
            raise GoldenFileError(f"{where}: declared dtype {dt} differs from the file's {hdt}")
        if hshape != shape:
            raise GoldenFileError(
                f"{where}: declared shape {list(shape)} differs from the file's {hshape}"
            )
        if info.file_size != fp.tell() + nbytes:
            raise GoldenFileError(
                f"{where}: member holds {info.file_size} bytes, the header and the declared"
                f" shape say {fp.tell() + nbytes}"
            )
        buf = np.empty(nbytes, dtype=np.uint8)
        view, pos = memoryview(buf), 0
        while pos < nbytes:
            chunk = fp.read(min(1 << 20, nbytes - pos))
            if not chunk:
                raise GoldenFileError(f"{where}: truncated ({pos} of {nbytes} bytes)")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if fp.read(1):  # also the point where zipfile verifies the CRC-32
            raise GoldenFileError(f"{where}: data past the declared end")
    return buf.view(dt).reshape(shape, order="F" if fortran else "C")


def _load_case(directory: Path, e: dict, metas: dict, nbytes: int, fmt: str):
    from reference.sparq import SparqSteps
    from reference.validation import GoldenCase

    fname = e["file"]
    path = directory / fname
    try:
        inside = path.resolve(strict=True).is_relative_to(directory.resolve(strict=True))
    except (OSError, RuntimeError):
        raise GoldenFileError(f"{fname}: file not found (manifest.json: {e['name']})") from None
    if not inside:
        raise GoldenFileError(f"{fname}: resolves outside the directory {directory} (a link?)")
    f, size = _open_regular(path, fname)
    with f:
        limit = nbytes + nbytes // 256 + NPZ_SLACK_BYTES
        if size > limit:
            raise GoldenFileError(
                f"{fname}: {size} bytes on disk, more than the declared arrays ({nbytes} bytes)"
                " could take"
            )
        with _low_level(fname):
            zf = zipfile.ZipFile(f)
        with zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise GoldenFileError(f"{fname}: a member name appears twice")
            by_key = {}
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key not in metas:
                    raise GoldenFileError(f"{fname}: {key}: array not in the manifest")
                by_key[key] = info
            for key in ARRAY_KEYS:
                if key not in by_key:
                    raise GoldenFileError(f"{fname}: {key}: array missing from the file")
                info = by_key[key]
                if info.compress_type not in _ZIP_METHODS or info.flag_bits & 0x1:
                    raise GoldenFileError(
                        f"{fname}: {key}: compression method {info.compress_type}"
                        f"{' (encrypted)' if info.flag_bits & 0x1 else ''}: only stored or"
                        " deflated members are read"
                    )
                need = _nbytes(metas[key][0], metas[key][1])
                if info.file_size > need + MAX_NPY_HEADER_BYTES + 16:
                    raise GoldenFileError(
                        f"{fname}: {key}: member inflates to {info.file_size} bytes; the declared"
                        f" shape and dtype take {need} bytes (refused before inflating)"
                    )
            arrays = {}
            for key in ARRAY_KEYS:
                a = _read_member(zf, by_key[key], key, metas[key], fname)
                if _sha256(a) != metas[key][2]:
                    raise GoldenFileError(f"{fname}: {key}: checksum mismatch for array {key!r}")
                arrays[key] = a
    if arrays["mask"].view(np.uint8).max(initial=0) > 1:
        raise GoldenFileError(f"{fname}: mask: bytes other than 0 and 1 in a bool array")
    for key in _INPUT_KEYS[:3]:
        a = arrays[key]
        if metas[key][3] == BF16_BITS:
            arrays[key] = (a.astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "bfloat16" and (a.astype("<f4").view("<u4") & 0xFFFF).any():
            raise GoldenFileError(
                f"{fname}: {key}: a bfloat16 case holds float32 values that are not bfloat16"
            )
    inputs = {k: arrays[k] for k in _INPUT_KEYS}
    expected = SparqSteps(**{f: arrays[f"expected_{f}"] for f in _FIELDS})
    return GoldenCase(e["name"], e["description"], e["params"], inputs, expected, e["dtype"],
                      e["seed"])  # fmt: skip


def load_cases(directory) -> list:
    """Read cases written by :func:`save_cases` (format 1 or 2), checking everything first.

    Raises FileNotFoundError when ``directory`` has no ``manifest.json``, and
    :class:`GoldenFileError` (a ``ValueError``) naming the file and key for any damaged,
    inconsistent, oversized or unsafe piece (``docs/validation.md``)."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not os.path.lexists(manifest_path):
        raise FileNotFoundError(f"directory: no manifest.json in {directory}")
    fmt, checked = _check_manifest(_read_manifest(manifest_path))
    return [_load_case(directory, e, metas, nbytes, fmt) for e, metas, nbytes in checked]


# ------------------------------------------------------------------------------------------
# Writing.
# ------------------------------------------------------------------------------------------


def _as_bf16_bits(a: np.ndarray, where: str) -> np.ndarray:
    """uint16 bit patterns of bfloat16 values held in float32 (or an ml_dtypes array)."""
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:
        return a.view(np.uint16).astype(np.uint16)
    if not (a.dtype.kind == "f" and a.dtype.itemsize == 4):
        raise GoldenFileError(f"{where}: expected float32 holding bfloat16 values, got {a.dtype}")
    bits = np.ascontiguousarray(a, dtype="<f4").view("<u4")
    if (bits & 0xFFFF).any():
        raise GoldenFileError(f"{where}: float32 values that are not bfloat16 (low bits set)")
    return (bits >> 16).astype(np.uint16)


def _py_scalar(v):
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file and rename over ``path`` (never through a link)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # 0o666 less the umask, as a plain open() would create it (mkstemp would make it 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_cases(cases, directory, *, bfloat16_storage: str = "bits") -> Path:
    """Write ``<name>.npz`` per case and ``manifest.json``; return the manifest path.

    Every case is checked (name, parameters, array kinds and shapes, the limits the loader
    applies) before anything is written. ``bfloat16_storage``: ``"bits"`` (default) stores
    bfloat16 inputs as uint16 bit patterns (``"storage": "bfloat16-bits"``), ``"float32"``
    as float32 holding the values (as format 1 did, for readers that use ``np.load``
    directly)."""
    from reference.sparq import SparqSteps
    from reference.validation import INPUTS, STEPS, GoldenCase, _version

    if bfloat16_storage not in ("bits", "float32"):
        raise ValueError(
            f"bfloat16_storage: expected 'bits' or 'float32', got {bfloat16_storage!r}"
        )
    if not isinstance(cases, (list, tuple)):
        raise TypeError(f"cases: expected a list of GoldenCase, got {type(cases).__name__}")
    if not cases:
        raise ValueError("cases: no cases (an empty suite checks nothing)")
    prepared, seen, total = [], {}, 0
    for i, c in enumerate(cases):
        if not isinstance(c, GoldenCase):
            raise TypeError(f"cases[{i}]: expected a GoldenCase, got {type(c).__name__}")
        name = _plain_name(c.name, f"cases[{i}]: name")
        if name.casefold() in seen:
            raise ValueError(
                f"cases[{i}]: name: {name!r} repeats cases[{seen[name.casefold()]}]"
                " (names are compared ignoring case)"
            )
        seen[name.casefold()] = i
        where = f"cases[{i}] ({name})"
        if not isinstance(c.inputs, dict) or set(c.inputs) != set(INPUTS):
            raise ValueError(f"{where}: inputs: expected the keys {INPUTS}")
        if not isinstance(c.expected, SparqSteps):
            raise TypeError(f"{where}: expected: expected a SparqSteps")
        if not isinstance(c.params, dict):
            raise TypeError(f"{where}: params: expected a dict")
        arrays, storage = {}, {}
        for key in INPUTS:
            a = np.asarray(c.inputs[key])
            if key != "mask" and c.dtype == "bfloat16":
                if bfloat16_storage == "bits":
                    a, storage[key] = _as_bf16_bits(a, f"{where}: {key}"), BF16_BITS
                else:
                    bits = _as_bf16_bits(a, f"{where}: {key}")  # checks the values
                    a = (bits.astype(np.uint32) << 16).view(np.float32)
            arrays[key] = a
        for f in _FIELDS:
            arrays[f"expected_{f}"] = np.asarray(getattr(c.expected, f))
        for key, a in arrays.items():
            if a.dtype.hasobject or str(a.dtype) not in _DTYPES:
                raise GoldenFileError(f"{where}: {key}: arrays of dtype {a.dtype} are not stored")
        entry = dict(
            name=name, description=c.description, file=f"{name}.npz", dtype=c.dtype,
            seed=_py_scalar(c.seed), params={k: _py_scalar(v) for k, v in c.params.items()},
            arrays={k: dict(shape=list(v.shape), dtype=str(v.dtype), sha256=_sha256(v),
                            **({"storage": storage[k]} if k in storage else {}))
                    for k, v in arrays.items()},
        )  # fmt: skip
        _, nbytes = _check_entry(entry, f"cases[{i}]", FORMAT)
        total += nbytes
        if total > MAX_SUITE_BYTES:
            raise ValueError(f"{where}: the suite exceeds MAX_SUITE_BYTES = {MAX_SUITE_BYTES}")
        prepared.append((entry, arrays))
    manifest = dict(format=FORMAT, reference_version=_version(), steps=list(STEPS),
                    conventions="docs/sparq.md, docs/validation.md",
                    cases=[e for e, _ in prepared])  # fmt: skip
    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for entry, arrays in prepared:
        _write_atomic(directory / entry["file"], lambda f, a=arrays: np.savez_compressed(f, **a))
    path = directory / "manifest.json"
    _write_atomic(path, lambda f: f.write(text.encode("utf-8")))
    return path
