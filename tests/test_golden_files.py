"""Golden-case files (``save_cases`` / ``load_cases``): a golden directory is untrusted input.

Every expected value here is computed independently of the code under test: checksums with
hashlib, files with plain numpy/zipfile/json, bfloat16 bit patterns with integer shifts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from reference.validation import check_sparq, load_cases, make_case, save_cases

FIELDS = ("out", "components", "approx_logits", "positions", "alpha", "v_mean", "y", "temperature")
KEYS = ("q", "k_cache", "v_cache", "mask") + tuple(f"expected_{f}" for f in FIELDS)
CASE_KEYS = ("name", "description", "file", "dtype", "seed", "params", "arrays")
PARAM_KEYS = ("r", "k", "local_window", "reallocate", "temperature", "group_score", "selection")


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def tiny(dtype="float16", name="tiny", **kw):
    return make_case(name, B=2, H=4, Hkv=2, S=9, d=8, r=2, k=3, local_window=1, seed=3,
                     dtype=dtype, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def cases():
    return [tiny(), make_case("tiny-head", B=1, H=2, Hkv=1, S=5, d=4, r=2, k=8, local_window=1,
                              seed=4, selection="head")]  # fmt: skip


@pytest.fixture
def gold(tmp_path, cases):
    d = tmp_path / "gold"
    save_cases(cases, d)
    return d


def manifest(d):
    return json.loads((d / "manifest.json").read_text())


def put_manifest(d, m):
    (d / "manifest.json").write_text(json.dumps(m))


def npz(path):
    with np.load(path) as z:
        return dict(z)


def replace_array(d, key, value, *, case=0, declare=True):
    """Store ``value`` as ``key`` of a case; with ``declare`` the manifest's checksum (and
    dtype) follow it, so that only the check under test can catch the change."""
    m = manifest(d)
    e = m["cases"][case]
    arrays = npz(d / e["file"])
    arrays[key] = value
    np.savez_compressed(d / e["file"], **arrays)
    if declare:
        e["arrays"][key]["sha256"] = sha(value)
        e["arrays"][key]["dtype"] = str(np.asarray(value).dtype)
        put_manifest(d, m)


def write_members(path, members: dict, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)


def npy_bytes(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def write_format1(d, cases):
    """A directory as the previous version (format 1) wrote it, written here by hand."""
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for c in cases:
        arrays = {**c.inputs, **{f"expected_{f}": getattr(c.expected, f) for f in FIELDS}}
        np.savez_compressed(d / f"{c.name}.npz", **arrays)
        entries.append(dict(name=c.name, description=c.description, file=f"{c.name}.npz",
                            dtype=c.dtype, seed=c.seed, params=c.params,
                            arrays={k: dict(shape=list(v.shape), dtype=str(v.dtype), sha256=sha(v))
                                    for k, v in arrays.items()}))  # fmt: skip
    put_manifest(d, dict(format="sparq-golden/1", reference_version="0.1.0",
                         steps=["out"], conventions="docs", cases=entries))  # fmt: skip


def same_case(a, b):
    assert a.name == b.name and a.params == b.params and a.dtype == b.dtype
    for k in ("q", "k_cache", "v_cache", "mask"):
        assert a.inputs[k].dtype == b.inputs[k].dtype
        np.testing.assert_array_equal(a.inputs[k], b.inputs[k])
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a.expected, f), getattr(b.expected, f))


# ------------------------------------------------------------------------------------------
# 1. Names stay inside the directory.
# ------------------------------------------------------------------------------------------

BAD_NAMES = ["../x", "a/b", "ABS", ".", "..", "", "a\\b", "x" * 200, "é", "a b", "c:x", "a\0b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_save_refuses_a_case_name_that_is_not_a_plain_name(tmp_path, cases, bad):
    out = tmp_path / "sub" / "gold"
    if bad == "ABS":
        bad = str(tmp_path / "abs")
    with pytest.raises(ValueError, match=r"cases\[1\]: name") as e:
        save_cases([cases[0], dataclasses.replace(cases[0], name=bad)], out)
    assert repr(bad) in str(e.value)
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


def test_save_refuses_duplicate_names_ignoring_case(tmp_path, cases):
    with pytest.raises(ValueError, match="'TINY' repeats cases"):
        save_cases([cases[0], dataclasses.replace(cases[0], name="TINY")], tmp_path / "g")


@pytest.mark.parametrize(
    "field, bad",
    [(f, b) for f in ("file", "name") for b in ("../outside/tiny.npz", "ABS", "sub/tiny.npz", "..")]
    + [("file", "tiny.npy"), ("file", ".npz")],
)
def test_load_refuses_entries_outside_the_directory(tmp_path, gold, field, bad):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(gold / "tiny.npz", outside / "tiny.npz")  # a valid file with valid checksums
    if bad == "ABS":
        bad = str(outside / "tiny.npz")
    m = manifest(gold)
    m["cases"][0][field] = bad
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=r"manifest\.json: cases\[0\].*" + field) as e:
        load_cases(gold)
    assert repr(bad) in str(e.value)


def test_load_refuses_a_link_out_of_the_directory(tmp_path, gold):
    outside = tmp_path / "elsewhere.npz"
    shutil.copy(gold / "tiny.npz", outside)
    (gold / "tiny.npz").unlink()
    try:
        os.symlink(outside, gold / "tiny.npz")
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    with pytest.raises(ValueError, match="tiny.npz: resolves outside"):
        load_cases(gold)
    # a link that stays inside is fine
    (gold / "tiny.npz").unlink()
    shutil.copy(outside, gold / "real.bin")
    os.symlink("real.bin", gold / "tiny.npz")
    assert load_cases(gold)[0].name == "tiny"


def test_load_refuses_duplicate_names_and_files(gold):
    m = manifest(gold)
    m["cases"][1]["name"] = "Tiny"
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=r"cases\[1\]: name: 'Tiny' repeats cases\[0\]"):
        load_cases(gold)
    m["cases"][1] = dict(m["cases"][0], name="other")
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=r"cases\[1\]: file: 'tiny.npz' repeats"):
        load_cases(gold)


def test_save_writes_no_file_through_an_existing_link(tmp_path, cases):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    d = tmp_path / "gold"
    d.mkdir()
    try:
        os.symlink(victim, d / "tiny.npz")
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    save_cases(cases, d)
    assert victim.read_bytes() == b"keep me"
    assert not (d / "tiny.npz").is_symlink()
    same_case(load_cases(d)[0], cases[0])
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "tiny-head.npz", "tiny.npz"]


def test_files_are_created_with_the_usual_permissions(gold):
    if os.name != "posix":
        pytest.skip("POSIX modes")
    umask = os.umask(0)
    os.umask(umask)
    for p in gold.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p.name


# ------------------------------------------------------------------------------------------
# 2. The set of arrays is fixed and every array is checksummed.
# ------------------------------------------------------------------------------------------


def test_empty_arrays_entry_no_longer_skips_the_checksums(gold):
    arrays = npz(gold / "tiny.npz")
    replace_array(gold, "expected_out", arrays["expected_out"] + 1.0, declare=False)
    m = manifest(gold)
    m["cases"][0]["arrays"] = {}
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=r"cases\[0\] \(tiny\): arrays: missing key 'q'"):
        load_cases(gold)


@pytest.mark.parametrize("key", KEYS)
def test_every_array_needs_a_manifest_entry(gold, key):
    m = manifest(gold)
    del m["cases"][0]["arrays"][key]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=f"manifest.json: .*arrays: missing key '{key}'"):
        load_cases(gold)


def test_an_extra_manifest_array_is_refused(gold):
    m = manifest(gold)
    m["cases"][0]["arrays"]["junk"] = m["cases"][0]["arrays"]["q"]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match="manifest.json: .*arrays: unknown key 'junk'"):
        load_cases(gold)


@pytest.mark.parametrize("key", KEYS)
def test_every_array_must_be_in_the_file(gold, key):
    arrays = npz(gold / "tiny.npz")
    del arrays[key]
    np.savez_compressed(gold / "tiny.npz", **arrays)
    with pytest.raises(ValueError, match=f"tiny.npz: {key}: array missing from the file"):
        load_cases(gold)


def test_an_extra_array_in_the_file_is_refused(gold):
    arrays = npz(gold / "tiny.npz")
    np.savez_compressed(gold / "tiny.npz", **arrays, junk=np.zeros(3))
    with pytest.raises(ValueError, match="tiny.npz: junk: array not in the manifest"):
        load_cases(gold)


@pytest.mark.parametrize("key", KEYS)
def test_every_array_is_checksummed(gold, key):
    a = npz(gold / "tiny.npz")[key].copy()
    a.reshape(-1)[-1] = not a.reshape(-1)[-1] if a.dtype == bool else a.reshape(-1)[-1] + 1
    replace_array(gold, key, a, declare=False)
    with pytest.raises(ValueError, match=f"tiny.npz: {key}: checksum mismatch for array '{key}'"):
        load_cases(gold)


def test_checksums_are_sha256_of_the_stored_arrays(gold):
    for e in manifest(gold)["cases"]:
        arrays = npz(gold / e["file"])
        assert set(arrays) == set(KEYS) == set(e["arrays"])
        for k, a in arrays.items():
            assert e["arrays"][k] == dict(shape=list(a.shape), dtype=str(a.dtype), sha256=sha(a))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_checksums_are_those_format_1_wrote(tmp_path, dtype):
    """Unchanged arrays keep bit-identical checksums across the format change."""
    c = [tiny(dtype)]
    write_format1(tmp_path / "old", c)
    save_cases(c, tmp_path / "new")
    old, new = manifest(tmp_path / "old"), manifest(tmp_path / "new")
    assert new["format"] == "sparq-golden/2"
    assert old["cases"][0]["arrays"] == new["cases"][0]["arrays"]


# ------------------------------------------------------------------------------------------
# 3. Headers and sizes are checked before anything is inflated.
# ------------------------------------------------------------------------------------------


def test_declared_shape_must_match_the_file(gold):
    a = npz(gold / "tiny.npz")["expected_out"][:, :, :4].copy()
    m = manifest(gold)
    replace_array(gold, "expected_out", a, declare=False)
    m["cases"][0]["arrays"]["expected_out"]["sha256"] = sha(a)
    put_manifest(gold, m)
    with pytest.raises(ValueError) as e:
        load_cases(gold)
    assert str(e.value) == (
        "tiny.npz: expected_out: declared shape [2, 4, 8] differs from the file's (2, 4, 4)"
    )


def test_declared_dtype_must_match_the_file(gold):
    a = npz(gold / "tiny.npz")["q"].astype(np.float32)
    m = manifest(gold)
    replace_array(gold, "q", a, declare=False)
    m["cases"][0]["arrays"]["q"]["sha256"] = sha(a)
    put_manifest(gold, m)
    with pytest.raises(ValueError, match="tiny.npz: q: declared dtype float16 differs from the"):
        load_cases(gold)


@pytest.mark.parametrize(
    "key, shape",
    [("q", [2, 4, 7]), ("k_cache", [2, 2, 9, 7]), ("mask", [2, 8]), ("expected_out", [2, 4, 16]),
     ("expected_components", [2, 2, 3]), ("expected_positions", [2, 2, 9]),
     ("expected_approx_logits", [2, 4]), ("v_cache", [2, 2, 9, 8, 1])],
)  # fmt: skip
def test_declared_shapes_must_fit_the_case(gold, key, shape):
    m = manifest(gold)
    m["cases"][0]["arrays"][key]["shape"] = shape
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=r"manifest\.json: cases\[0\] \(tiny\)"):
        load_cases(gold)


def test_huge_declared_sizes_are_refused_from_the_manifest_alone(gold):
    m = manifest(gold)
    d = 2**28  # q alone: 2 * 4 * 2**28 float16 = 4 GiB, k_cache 18 GiB
    for key, a in m["cases"][0]["arrays"].items():
        if a["shape"][-1] == 8 and key != "mask":
            a["shape"][-1] = d
    put_manifest(gold, m)
    (gold / "tiny.npz").unlink()  # never opened
    with pytest.raises(ValueError, match=r"cases\[0\] \(tiny\): arrays: \d+ bytes .*MAX_CASE"):
        load_cases(gold)


def test_suite_limit(gold, monkeypatch):
    import reference._golden_io as gio

    one = sum(
        np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"]))
        for a in manifest(gold)["cases"][0]["arrays"].values()
    )
    monkeypatch.setattr(gio, "MAX_SUITE_BYTES", one + 1)
    with pytest.raises(ValueError, match=r"cases\[1\] \(tiny-head\): the suite exceeds"):
        load_cases(gold)


def test_manifest_size_limit(gold, monkeypatch):
    import reference._golden_io as gio

    monkeypatch.setattr(gio, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(ValueError, match="manifest.json: .* bytes exceed the limit"):
        load_cases(gold)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _write_raw_zip(path, members):
    """A zip written byte by byte: members are (name, raw deflate data, crc, size)."""
    out, cd = bytearray(), bytearray()
    for name, data, crc, size in members:
        n, off = name.encode(), len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size,
                           len(n), 0) + n + data  # fmt: skip
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data),
                          size, len(n), 0, 0, 0, 0, 0, off) + n  # fmt: skip
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd),
                      len(out), 0)  # fmt: skip
    path.write_bytes(bytes(out + cd + end))


@pytest.mark.parametrize("stage", ["on-disk", "zip-directory", "npy-header"])
def test_a_zip_bomb_is_refused_before_inflating(gold, stage, monkeypatch):
    """q.npy: a 2 MB deflate stream of a .npy that declares and holds 2 GiB of zeros. The
    file is larger than a case this small can be ("on-disk"); with that check relaxed, the
    zip directory gives the size away; if the directory lies (claims the size the manifest
    expects, with the CRC of that prefix), the .npy header does."""
    import reference._golden_io as gio

    lie = stage == "npy-header"
    if stage != "on-disk":
        monkeypatch.setattr(gio, "NPZ_SLACK_BYTES", 2**30)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f2", "fortran_order": False, "shape": (2**30,)}
    )
    header = header.getvalue()
    mib = bytes(2**20)
    # Full flushes make each segment independent, so one compressed MiB can be repeated.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header + mib) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    stream = first + seg * 2047 + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    assert len(stream) < 3 * 2**20
    size = len(header) + 2**31
    if lie:
        declared = 2 * 4 * 8 * 2  # the manifest's q: (2, 4, 8) float16
        size = len(header) + declared
        crc = zlib.crc32((header + mib)[:size])
    else:
        crc = zlib.crc32(header)
        for _ in range(2048):
            crc = zlib.crc32(mib, crc)
    members = [("q.npy", stream, crc, size)]
    for k, a in npz(gold / "tiny.npz").items():
        if k != "q":
            raw = npy_bytes(a)
            members.append((f"{k}.npy", _deflate(raw), zlib.crc32(raw), len(raw)))
    _write_raw_zip(gold / "tiny.npz", members)
    inflated = []  # bytes out of every zlib stream zipfile opens (the 2 GiB must not be)
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self._d = real(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self._d.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def flush(self, *args):
            out = self._d.flush(*args)
            inflated.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._d, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="^tiny.npz: ") as e:
            load_cases(gold)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak
    assert sum(inflated) < 8 * 2**20, sum(inflated)
    assert {
        "on-disk": "bytes on disk, more than the declared arrays",
        "zip-directory": "refused before inflating",
        "npy-header": "declared shape [2, 4, 8] differs from the file's (1073741824,)",
    }[stage] in str(e.value)


def test_trailing_bytes_after_the_array_are_refused(gold):
    arrays = npz(gold / "tiny.npz")
    members = {f"{k}.npy": npy_bytes(a) for k, a in arrays.items()}
    members["q.npy"] += bytes(16)
    write_members(gold / "tiny.npz", members)
    with pytest.raises(ValueError, match="tiny.npz: q: member holds"):
        load_cases(gold)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_only_stored_or_deflated_members(gold, method):
    arrays = npz(gold / "tiny.npz")
    write_members(gold / "tiny.npz", {f"{k}.npy": npy_bytes(a) for k, a in arrays.items()}, method)
    with pytest.raises(ValueError, match="tiny.npz: q: compression method"):
        load_cases(gold)


def test_stored_and_fortran_order_members_load(gold, cases):
    arrays = npz(gold / "tiny.npz")
    arrays["expected_out"] = np.asfortranarray(arrays["expected_out"])
    arrays["q"] = np.asfortranarray(arrays["q"])
    np.savez(gold / "tiny.npz", **arrays)  # not compressed
    same_case(load_cases(gold)[0], cases[0])


@pytest.mark.parametrize("bad", [b"\x93NUMPY\x03\x00", b"\x93NUMPX\x01\x00", b"junk"])
def test_bad_npy_magic_is_refused(gold, bad):
    arrays = npz(gold / "tiny.npz")
    members = {f"{k}.npy": npy_bytes(a) for k, a in arrays.items()}
    members["v_cache.npy"] = bad + members["v_cache.npy"][8:]
    write_members(gold / "tiny.npz", members)
    with pytest.raises(ValueError, match="tiny.npz: v_cache: "):
        load_cases(gold)


class _Boom:
    unpickled = False

    def __reduce__(self):
        return (_mark_unpickled, ())


def _mark_unpickled():
    _Boom.unpickled = True
    return 0


@pytest.mark.parametrize("declared", ["object", "float64"])
def test_object_arrays_are_never_unpickled(gold, declared):
    bad = np.empty((2, 4, 8), dtype=object)
    bad[...] = _Boom()
    arrays = npz(gold / "tiny.npz")
    arrays["expected_out"] = bad
    np.savez(gold / "tiny.npz", **arrays)  # pickles the object array
    m = manifest(gold)
    m["cases"][0]["arrays"]["expected_out"]["dtype"] = declared
    put_manifest(gold, m)
    with pytest.raises(ValueError, match="expected_out: .*(dtype|object)"):
        load_cases(gold)
    assert not _Boom.unpickled


# ------------------------------------------------------------------------------------------
# 4. Corrupt, truncated or missing pieces: a ValueError naming the file and key.
# ------------------------------------------------------------------------------------------


def test_missing_manifest_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_cases(tmp_path)


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -100, -22, -1])
def test_truncated_npz(gold, cut):
    data = (gold / "tiny.npz").read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    (gold / "tiny.npz").write_bytes(data[:n])
    with pytest.raises(ValueError, match="^tiny.npz: "):
        load_cases(gold)


def test_bit_flips_in_the_npz_are_caught_or_harmless(tmp_path, cases):
    d = tmp_path / "g"
    save_cases(cases[:1], d)
    data = (d / "tiny.npz").read_bytes()
    caught = harmless = 0
    for i in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        (d / "tiny.npz").write_bytes(bytes(flipped))
        try:
            back = load_cases(d)[0]
        except ValueError as e:
            assert str(e).startswith("tiny.npz: "), (i, str(e))
            caught += 1
        else:  # a flip in a field nobody reads (a time stamp, attributes)
            same_case(back, cases[0])
            harmless += 1
    assert caught > harmless, (caught, harmless)


def test_missing_npz(gold):
    (gold / "tiny-head.npz").unlink()
    with pytest.raises(ValueError, match="tiny-head.npz: file not found"):
        load_cases(gold)


def test_npz_that_is_not_a_regular_file(gold):
    (gold / "tiny.npz").unlink()
    (gold / "tiny.npz").mkdir()
    with pytest.raises(ValueError, match="tiny.npz: "):
        load_cases(gold)
    if hasattr(os, "mkfifo"):
        (gold / "tiny.npz").rmdir()
        os.mkfifo(gold / "tiny.npz")  # opening it for reading must not block
        with pytest.raises(ValueError, match="tiny.npz: not a regular file"):
            load_cases(gold)


@pytest.mark.parametrize("key", ["format", "cases"])
def test_missing_top_level_keys(gold, key):
    m = manifest(gold)
    del m[key]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=f"manifest.json: missing key '{key}'"):
        load_cases(gold)


@pytest.mark.parametrize("key", CASE_KEYS)
def test_missing_case_keys(gold, key):
    m = manifest(gold)
    del m["cases"][1][key]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=rf"manifest.json: cases\[1\].*missing key '{key}'"):
        load_cases(gold)


@pytest.mark.parametrize("key", PARAM_KEYS)
def test_missing_params(gold, key):
    m = manifest(gold)
    del m["cases"][0]["params"][key]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=rf"cases\[0\] \(tiny\): params: missing key '{key}'"):
        load_cases(gold)


@pytest.mark.parametrize("key", ["shape", "dtype", "sha256"])
def test_missing_array_metadata(gold, key):
    m = manifest(gold)
    del m["cases"][0]["arrays"]["expected_y"][key]
    put_manifest(gold, m)
    with pytest.raises(ValueError, match=f"arrays: expected_y: missing key '{key}'"):
        load_cases(gold)


def _set(path, value):
    def edit(m):
        *head, last = path
        for p in head:
            m = m[p]
        m[last] = value

    return edit


WRONG_TYPES = [
    (_set(["cases"], {}), "cases: expected a list"),
    (_set(["cases"], []), "cases: no cases"),
    (_set(["cases", 0], ["tiny"]), r"cases\[0\]: expected an object"),
    (_set(["cases", 0, "arrays"], []), "arrays: expected an object"),
    (_set(["cases", 0, "params"], []), "params: expected an object"),
    (_set(["cases", 0, "arrays", "q"], "x"), "arrays: q: expected an object"),
    (_set(["cases", 0, "arrays", "q", "shape"], "abc"), "q: shape: expected a list of ints"),
    (_set(["cases", 0, "arrays", "q", "shape"], [2, 4, True]), "q: shape"),
    (_set(["cases", 0, "arrays", "q", "shape"], [2.0, 4, 8]), "q: shape"),
    (_set(["cases", 0, "arrays", "q", "shape"], [-2, 4, 8]), "q: shape: negative"),
    (_set(["cases", 0, "arrays", "q", "dtype"], 5), "q: dtype"),
    (_set(["cases", 0, "arrays", "q", "dtype"], "complex64"), "q: dtype"),
    (_set(["cases", 0, "arrays", "q", "dtype"], "(1000000,)f8"), "q: dtype"),
    (_set(["cases", 0, "arrays", "q", "sha256"], 123), "q: sha256"),
    (_set(["cases", 0, "arrays", "q", "sha256"], "AB" * 32), "q: sha256"),
    (_set(["cases", 0, "seed"], "3"), "seed: expected an int"),
    (_set(["cases", 0, "seed"], True), "seed: expected an int"),
    (_set(["cases", 0, "name"], 5), "name: expected a string"),
    (_set(["cases", 0, "file"], None), "file: expected a string"),
    (_set(["cases", 0, "description"], 5), "description: expected a string"),
    (_set(["cases", 0, "dtype"], "float8"), "dtype: expected one of"),
    (_set(["cases", 0, "params", "r"], "2"), "params: r"),
    (_set(["cases", 0, "params", "r"], True), "params: r"),
    (_set(["cases", 0, "params", "r"], 9), "params: r"),
    (_set(["cases", 0, "params", "selection"], "diagonal"), "params: selection"),
    (_set(["cases", 0, "params", "tau"], 1.0), "params: unknown key 'tau'"),
    (_set(["cases", 0, "params", "topk"], "bucketed"), "params: "),
    (_set(["format"], "sparq-golden/9"), "format: expected 'sparq-golden/2'"),
    (_set(["format"], 2), "format: expected"),
    (_set(["steps"], "out"), "steps: expected a list"),
    (_set(["extra"], 1), "unknown key 'extra'"),
]


@pytest.mark.parametrize("edit, message", WRONG_TYPES)
def test_wrong_json_types(gold, edit, message):
    m = manifest(gold)
    edit(m)
    put_manifest(gold, m)
    with pytest.raises(ValueError, match="^manifest.json: .*" + message):
        load_cases(gold)


def test_manifest_that_is_not_an_object(gold):
    put_manifest(gold, [1, 2])
    with pytest.raises(ValueError, match="manifest.json: expected an object"):
        load_cases(gold)


INVALID_JSON = {
    "truncated": lambda t: t[: len(t) // 2],
    "not-utf8": lambda t: b"\xff\xfe" + t,
    "deep": lambda t: b"[" * 200_000,
    "duplicate-key": lambda t: t.replace(b"{", b'{"cases": [], ', 1),
    "nan": lambda t: t.replace(b'"seed": 3', b'"seed": NaN', 1),
    "infinity": lambda t: t.replace(b'"seed": 3', b'"seed": -Infinity', 1),
    "empty": lambda t: b"",
}


@pytest.mark.parametrize("how", INVALID_JSON)
def test_invalid_json(gold, how):
    text = (gold / "manifest.json").read_bytes()
    broken = INVALID_JSON[how](text)
    assert broken != text
    (gold / "manifest.json").write_bytes(broken)
    with pytest.raises(ValueError, match="^manifest.json: "):
        load_cases(gold)


def test_an_empty_suite_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="no cases"):
        save_cases([], tmp_path / "g")
    assert not (tmp_path / "g").exists()


# ------------------------------------------------------------------------------------------
# 5. Array kinds.
# ------------------------------------------------------------------------------------------


def _with_step(case, **steps):
    return dataclasses.replace(case, expected=dataclasses.replace(case.expected, **steps))


SAVE_KINDS = [
    ("expected_out", lambda c: _with_step(c, out=c.expected.out.astype(np.complex128))),
    ("expected_alpha", lambda c: _with_step(c, alpha=c.expected.alpha.astype(str))),
    ("expected_y", lambda c: _with_step(c, y=c.expected.y.astype(np.int64))),
    ("expected_positions", lambda c: _with_step(c, positions=c.expected.positions * 1.0)),
    ("expected_components", lambda c: _with_step(c, components=c.expected.components > 0)),
    ("expected_v_mean", lambda c: _with_step(c, v_mean=c.expected.v_mean.astype(object))),
    ("mask", lambda c: dataclasses.replace(c, inputs={**c.inputs,
                                                      "mask": c.inputs["mask"].astype(np.int8)})),
    ("q", lambda c: dataclasses.replace(c, inputs={**c.inputs,
                                                   "q": c.inputs["q"].astype(np.float64)})),
]  # fmt: skip


@pytest.mark.parametrize("key, bad", SAVE_KINDS)
def test_save_refuses_wrong_array_kinds(tmp_path, cases, key, bad):
    with pytest.raises(ValueError, match=f"tiny.*{key}"):
        save_cases([bad(cases[0])], tmp_path / "g")
    assert not (tmp_path / "g").exists()


LOAD_KINDS = [
    ("expected_out", lambda a: a.astype(np.complex128)),
    ("expected_alpha", lambda a: a.astype(np.float32).view(np.int32)),
    ("expected_positions", lambda a: a.astype(np.float64)),
    ("mask", lambda a: a.astype(np.uint8)),
    ("q", lambda a: a.view(np.int16)),
    ("k_cache", lambda a: a.astype(np.float32)),
]


@pytest.mark.parametrize("key, bad", LOAD_KINDS)
def test_load_refuses_wrong_array_kinds(gold, key, bad):
    replace_array(gold, key, bad(npz(gold / "tiny.npz")[key]))
    with pytest.raises(ValueError, match=rf"manifest.json: cases\[0\] \(tiny\).*{key}"):
        load_cases(gold)


def test_mask_bytes_must_be_0_or_1(gold):
    arrays = npz(gold / "tiny.npz")
    raw = bytearray(npy_bytes(arrays["mask"]))
    raw[-1] = 2
    members = {f"{k}.npy": npy_bytes(a) for k, a in arrays.items()}
    members["mask.npy"] = bytes(raw)
    write_members(gold / "tiny.npz", members)
    m = manifest(gold)
    m["cases"][0]["arrays"]["mask"]["sha256"] = hashlib.sha256(raw[-18:]).hexdigest()
    put_manifest(gold, m)
    with pytest.raises(ValueError, match="tiny.npz: mask: "):
        load_cases(gold)


# ------------------------------------------------------------------------------------------
# 6. bfloat16 on disk.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf():
    return tiny("bfloat16", name="bf")


def test_bfloat16_inputs_are_stored_as_bit_patterns(tmp_path, bf):
    save_cases([bf], tmp_path)
    arrays = npz(tmp_path / "bf.npz")
    meta = manifest(tmp_path)["cases"][0]["arrays"]
    for k in ("q", "k_cache", "v_cache"):
        bits = (bf.inputs[k].view(np.uint32) >> 16).astype(np.uint16)
        assert arrays[k].dtype == np.uint16
        np.testing.assert_array_equal(arrays[k], bits)
        assert meta[k] == dict(shape=list(bits.shape), dtype="uint16", sha256=sha(bits),
                               storage="bfloat16-bits")  # fmt: skip
    assert "storage" not in meta["mask"] and "storage" not in meta["expected_out"]
    back = load_cases(tmp_path)[0]
    for k in ("q", "k_cache", "v_cache"):
        assert back.inputs[k].dtype == np.float32
        np.testing.assert_array_equal(back.inputs[k].view(np.uint32), bf.inputs[k].view(np.uint32))
    same_case(back, bf)
    exp = {f: getattr(back.expected, f) for f in ("components", "positions", "out")}
    assert check_sparq(back, exp).passed


def test_bfloat16_as_float32_on_request(tmp_path, bf):
    save_cases([bf], tmp_path, bfloat16_storage="float32")
    assert npz(tmp_path / "bf.npz")["q"].dtype == np.float32
    assert "storage" not in manifest(tmp_path)["cases"][0]["arrays"]["q"]
    same_case(load_cases(tmp_path)[0], bf)


def test_format_1_files_still_load(tmp_path, bf, cases):
    write_format1(tmp_path, [bf, *cases])
    back = load_cases(tmp_path)
    for a, b in zip(back, [bf, *cases], strict=True):
        same_case(a, b)


def test_format_1_bfloat16_must_hold_bfloat16_values(tmp_path, bf):
    write_format1(tmp_path, [bf])
    q = bf.inputs["q"].copy()
    q.reshape(-1)[5] = np.nextafter(q.reshape(-1)[5], np.float32(np.inf))
    replace_array(tmp_path, "q", q)
    with pytest.raises(ValueError, match="bf.npz: q: a bfloat16 case holds float32 values"):
        load_cases(tmp_path)


def test_storage_key_rules(tmp_path, bf, cases):
    write_format1(tmp_path / "v1", [bf])
    m = manifest(tmp_path / "v1")
    m["cases"][0]["arrays"]["q"]["storage"] = "bfloat16-bits"
    put_manifest(tmp_path / "v1", m)
    with pytest.raises(ValueError, match="arrays: q: unknown key 'storage'"):
        load_cases(tmp_path / "v1")  # format 1 had no storage key
    save_cases(cases, tmp_path / "f16")
    m = manifest(tmp_path / "f16")
    m["cases"][0]["arrays"]["q"]["storage"] = "bfloat16-bits"
    put_manifest(tmp_path / "f16", m)
    with pytest.raises(ValueError, match="q: storage 'bfloat16-bits' is only for the bfloat16"):
        load_cases(tmp_path / "f16")
    save_cases([bf], tmp_path / "bf")
    m = manifest(tmp_path / "bf")
    m["cases"][0]["arrays"]["q"]["storage"] = "bfloat16-bytes"
    put_manifest(tmp_path / "bf", m)
    with pytest.raises(ValueError, match="q: storage: expected 'bfloat16-bits'"):
        load_cases(tmp_path / "bf")
    del m["cases"][0]["arrays"]["q"]["storage"]  # uint16 data read as plain: refused
    put_manifest(tmp_path / "bf", m)
    with pytest.raises(ValueError, match="q: expected a float32 holding bfloat16 values"):
        load_cases(tmp_path / "bf")


def test_save_refuses_float32_that_is_not_bfloat16(tmp_path, bf):
    q = bf.inputs["q"].copy()
    q.reshape(-1)[0] = np.float32(1.0 + 2.0**-20)
    bad = dataclasses.replace(bf, inputs={**bf.inputs, "q": q})
    for storage in ("bits", "float32"):
        with pytest.raises(ValueError, match=r"cases\[0\] \(bf\): q: .*not bfloat16"):
            save_cases([bad], tmp_path / storage, bfloat16_storage=storage)


def test_ml_dtypes_bfloat16_inputs(tmp_path, bf):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    inputs = {k: (v.astype(ml_dtypes.bfloat16) if k != "mask" else v) for k, v in bf.inputs.items()}
    save_cases([dataclasses.replace(bf, inputs=inputs)], tmp_path / "ml")
    save_cases([bf], tmp_path / "f32")
    assert (
        manifest(tmp_path / "ml")["cases"][0]["arrays"]
        == (manifest(tmp_path / "f32")["cases"][0]["arrays"])
    )
    same_case(load_cases(tmp_path / "ml")[0], bf)
