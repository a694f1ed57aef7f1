"""Input checks shared by the public functions (never called from jitted code)."""

from __future__ import annotations

import functools
import operator

import numpy as np
from numba import prange

from reference._config import njit_parallel, njit_serial

#: Elements per chunk of the parallel finite scans (the unit of work of one thread, and of
#: the "is there a NaN/inf here?" test). On the development host (2 vCPUs, 256 MiB of
#: float32 / 128 MiB of float16 bits, both threads) the scan read 46 / 50 GB/s at 2^14,
#: 45-50 / 49-51 at 2^16 and 51 / 53 at 2^18: flat within noise. What matters is that the
#: inner loops are serial functions: written in the prange body they did not vectorise
#: (8.3 / 17.4 GB/s).
_SCAN_CHUNK = 1 << 16


@njit_serial
def _poisoned(seg):
    """``sum(v * 0.0)``: NaN exactly when ``seg`` holds a NaN or an inf (vectorises)."""
    acc = 0.0
    for i in range(seg.shape[0]):
        acc += seg[i] * 0.0
    return acc != acc


@njit_serial
def _exp_all_set(seg, exp_mask):
    """How many 16-bit patterns in ``seg`` have every exponent bit of ``exp_mask`` set."""
    cnt = 0
    for i in range(seg.shape[0]):
        cnt += (seg[i] & exp_mask) == exp_mask
    return cnt


@njit_parallel
def _first_nonfinite(flat):
    """Flat index of the first NaN or +/-inf in ``flat`` (1-D), or -1 (chunked, parallel).

    Only a chunk that :func:`_poisoned` flags is scanned for the first index."""
    n = flat.shape[0]
    chunk = _SCAN_CHUNK
    nchunks = (n + chunk - 1) // chunk
    first = np.full(nchunks, -1, dtype=np.int64)
    for c in prange(nchunks):
        lo = c * chunk
        hi = min(n, lo + chunk)
        if _poisoned(flat[lo:hi]):
            for i in range(lo, hi):
                v = flat[i]
                if not (v - v == 0.0):  # false exactly for NaN and +/-inf
                    first[c] = i
                    break
    for c in range(nchunks):
        if first[c] >= 0:
            return first[c]
    return -1


def _any_nonfinite(flat: np.ndarray) -> bool:
    """Whether the 1-D ``flat`` holds a NaN or an inf: one serial pass when it fits in one
    scan chunk (q, v_mean: no parallel launch for a few thousand elements), else the
    parallel scan."""
    if flat.size <= _SCAN_CHUNK:
        return bool(_poisoned(flat))
    return bool(_first_nonfinite(flat) >= 0)


@njit_parallel
def _max_abs_valid(K, mask):
    """max |K[b, h, j, :]| over valid positions j (parallel over (b, h); exact)."""
    B, Hkv, S, d = K.shape
    part = np.zeros(B * Hkv)
    for row in prange(B * Hkv):
        b = row // Hkv
        h = row % Hkv
        m = 0.0
        for j in range(S):
            if mask[b, j]:
                for c in range(d):
                    m = max(m, abs(K[b, h, j, c]))
        part[row] = m
    return part.max()


def check_logit_range(q: np.ndarray, k_cache: np.ndarray, mask: np.ndarray) -> None:
    """Reject inputs whose logits could overflow float64.

    For any head and valid position, ``|q_h . k_j| <= ||q_h||_1 max|K_valid|``, and SparQ's
    approximate logits obey the same bound (``|s| <= sqrt(kept * total / d) max|K| <=
    ||q_h||_1 max|K|``), so below 1e300 no logit, group sum or softmax can overflow. Masked
    positions do not count (they may hold any finite garbage)."""
    bound = float(np.abs(q).sum(axis=-1).max()) * float(_max_abs_valid(k_cache, mask))
    if not bound < 1e300:
        raise ValueError(
            f"q, k_cache: max ||q_h||_1 * max |k_cache| = {bound:.3g} >= 1e300, so the attention"
            " logits could overflow float64; scale q or k_cache down"
        )


def as_float_array(name: str, x, ndim: int, *, allow_inf: bool = False) -> np.ndarray:
    """Return ``x`` as a C-contiguous float64 array, checking dtype, rank and finiteness.

    float16 and float32 widen to float64 exactly (the truth path computes in float64; the
    caller's array is never modified).  Integer, bool, complex or object data raise TypeError.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)  # lists, tuples, scalars; the dtype check below decides
    if _is_bfloat16(x.dtype):
        x = x.astype(np.float32)
    if not (x.dtype.kind == "f" and x.dtype.itemsize in (2, 4, 8)):  # any byte order
        raise TypeError(
            f"{name}: expected a float16, bfloat16, float32 or float64 array, got dtype"
            f" {x.dtype}"
            " (cast explicitly if you mean it)"
        )
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.size and _any_nonfinite(x.reshape(-1)):
        if np.isnan(x).any():
            idx = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
            raise ValueError(f"{name}: contains NaN (first at index {idx}); NaN is not accepted")
        if not allow_inf:
            idx = tuple(int(i) for i in np.argwhere(np.isinf(x))[0])
            raise ValueError(f"{name}: contains +/-inf (first at index {idx}); only finite values")
    return x


def as_int(
    name: str, value, *, lo: int | None = None, hi: int | None = None, hi_name: str = ""
) -> int:
    """An integer parameter in [lo, hi] (bool and float are rejected); ``hi_name`` names the
    quantity the upper bound comes from (e.g. ``"k"``) for the error message."""
    for bound_name, bound in (("lo", lo), ("hi", hi)):
        if bound is not None and (
            isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, np.integer))
        ):
            raise TypeError(f"{bound_name}: expected an int or None, got {bound!r}")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int, got bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}") from None
    if lo is not None and v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    if hi is not None and v > hi:
        bound = f"{hi_name} = {hi}" if hi_name else f"{hi}"
        raise ValueError(f"{name}: expected an int <= {bound}, got {v}")
    return int(v)


def as_bool(name: str, value) -> bool:
    """A flag must be a real bool or ``numpy.bool_`` (``"False"``, ``None`` or ``1`` is not
    silently truthy/falsy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def as_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_attention_inputs(q, k_cache, v_cache, mask):
    """Validate decode-attention inputs for the float64 twins (float64 copies, finite-checked,
    logit-overflow bound); return (q, k, v, mask, B, H, Hkv, S, d)."""
    q = as_float_array("q", q, 3)
    k_cache = as_float_array("k_cache", k_cache, 4)
    v_cache = as_float_array("v_cache", v_cache, 4)
    B, H, Hkv, S, d = check_shapes(q.shape, k_cache.shape, v_cache.shape)
    mask = check_mask(mask, B, S)
    check_logit_range(q, k_cache, mask)
    return q, k_cache, v_cache, mask, B, H, Hkv, S, d


# ---------------------------------------------------------------------------------------------
# Kernel inputs: caches in their own dtype (no float64 copies), non-finite values located
# only on the error path.
# ---------------------------------------------------------------------------------------------

from reference._rows import ENC_BF16, ENC_F16, ENC_NATIVE, widen  # noqa: E402

_CACHE_DTYPES = "float16, bfloat16, float32 or float64"


def _is_bfloat16(dt: np.dtype) -> bool:
    # ml_dtypes.bfloat16, by name (a float kind is never it: ``dtype.name`` is a slow
    # property, so the common dtypes skip it)
    return dt.kind != "f" and dt.itemsize == 2 and dt.name == "bfloat16"


def as_cache_array(name: str, x, ndim: int) -> tuple[np.ndarray, int]:
    """Return ``(array, encoding)``: ``x`` C-contiguous in its own dtype; float16 as a
    ``uint16`` view of its bits (:data:`ENC_F16`), bfloat16 as an ``int16`` view
    (:data:`ENC_BF16`): the kernels pick the decoder by the view's dtype.

    A non-contiguous or byte-swapped ``x`` is copied once, in its own dtype; otherwise no copy
    is made and the caller's array is only read."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    dt = x.dtype
    if _is_bfloat16(dt):
        enc = ENC_BF16
    elif dt.kind == "f" and dt.itemsize == 2:
        enc = ENC_F16
    elif dt.kind == "f" and dt.itemsize in (4, 8):
        enc = ENC_NATIVE
    else:
        raise TypeError(
            f"{name}: expected a {_CACHE_DTYPES} array, got dtype {dt} (cast explicitly if you"
            " mean it)"
        )
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {x.shape}")
    if not dt.isnative:
        dt = dt.newbyteorder("=")
    x = np.ascontiguousarray(x, dtype=dt)  # at most one copy (byte order and layout at once)
    if enc == ENC_F16:
        x = x.view(np.uint16)
    elif enc == ENC_BF16:
        x = x.view(np.int16)
    return x, enc


@njit_parallel
def _nonfinite16_count(flat, exp_mask):
    """Number of 16-bit patterns in ``flat`` whose exponent bits (``exp_mask``) are all set."""
    n = flat.shape[0]
    chunk = _SCAN_CHUNK
    nchunks = (n + chunk - 1) // chunk
    hits = np.zeros(nchunks, dtype=np.int64)
    for c in prange(nchunks):
        hits[c] = _exp_all_set(flat[c * chunk : min(n, (c + 1) * chunk)], exp_mask)
    return hits.sum()


def has_nonfinite(x: np.ndarray, enc: int) -> bool:
    """Whether ``x`` (from :func:`as_cache_array`) holds a NaN or an inf (parallel scan)."""
    if x.size == 0:
        return False
    flat = x.reshape(-1)
    if enc == ENC_NATIVE:
        return _any_nonfinite(flat)
    bits = flat.view(np.uint16)
    return bool(_nonfinite16_count(bits, np.uint16(0x7C00 if enc == ENC_F16 else 0x7F80)) > 0)


def _as_float_chunk(chunk: np.ndarray, enc: int) -> np.ndarray:
    if enc == ENC_F16:
        return chunk.view(np.float16)
    if enc == ENC_BF16:
        return (chunk.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return chunk


def raise_nonfinite(name: str, x: np.ndarray, enc: int) -> None:
    """Raise the ``ValueError`` naming the first NaN of ``x`` (else its first inf), if any;
    scanned in chunks so that no full-size float copy is made."""
    flat = x.reshape(-1)
    step = 1 << 22
    for kind, test in (("NaN", np.isnan), ("+/-inf", np.isinf)):
        for lo in range(0, flat.size, step):
            hit = np.flatnonzero(test(_as_float_chunk(flat[lo : lo + step], enc)))
            if hit.size:
                idx = tuple(int(i) for i in np.unravel_index(lo + int(hit[0]), x.shape))
                if kind == "NaN":
                    raise ValueError(
                        f"{name}: contains NaN (first at index {idx}); NaN is not accepted"
                    )
                raise ValueError(
                    f"{name}: contains +/-inf (first at index {idx}); only finite values"
                )


def check_mask(mask, B: int, S: int) -> np.ndarray:
    """A (B, S) bool mask (True = attend), every row with a valid position; None = all."""
    if mask is None:
        return np.ones((B, S), dtype=np.bool_)
    if not isinstance(mask, np.ndarray):
        mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool array (True = attend), got dtype {mask.dtype}")
    if mask.shape != (B, S):
        raise ValueError(f"mask: expected shape (B, S) = {(B, S)}, got {mask.shape}")
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(
            f"mask: every batch row needs at least one True (valid) position; rows"
            f" {np.flatnonzero(empty).tolist()} are all False"
        )
    return np.ascontiguousarray(mask)


def check_shapes(q_shape, k_shape, v_shape) -> tuple[int, int, int, int, int]:
    """``(B, H, Hkv, S, d)`` from the shapes of q (B, H, d) and the caches (B, Hkv, S, d)."""
    B, H, d = q_shape
    if k_shape != v_shape:
        raise ValueError(
            f"k_cache, v_cache: expected equal shapes (B, Hkv, S, d), got {k_shape} and {v_shape}"
        )
    Bk, Hkv, S, dk = k_shape
    if Bk != B:
        raise ValueError(f"k_cache: expected batch {B} (from q {q_shape}), got {Bk}")
    if dk != d:
        raise ValueError(f"k_cache: expected head dim {d} (from q {q_shape}), got {dk}")
    if d < 1 or S < 1 or B < 1 or H < 1 or Hkv < 1:
        raise ValueError(
            f"q, k_cache: expected every dimension >= 1, got q {q_shape}, k_cache {k_shape}"
        )
    if H % Hkv != 0:
        raise ValueError(
            f"q: expected the number of query heads H={H} to be a multiple of the KV heads"
            f" Hkv={Hkv}"
        )
    return B, H, Hkv, S, d


#: Byte alignment of the float64 query rows the kernels read (a cache line: 512-bit loads
#: that straddle two lines halve the FMA throughput of the dot products on AVX-512 hosts)
Q_ALIGN = 64


def aligned_copy(x: np.ndarray, align: int = Q_ALIGN) -> np.ndarray:
    """``x`` itself if its data starts on an ``align``-byte boundary (and it is
    C-contiguous), else a C-contiguous copy that does (same dtype, shape and values)."""
    if x.flags.c_contiguous and x.ctypes.data % align == 0:
        return x
    buf = np.empty(x.nbytes + align, dtype=np.uint8)
    start = (-buf.ctypes.data) % align
    out = buf[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


@njit_serial
def _copy_query(src, buf):
    """Widen the 3-D ``src`` (own dtype as in :func:`as_cache_array`, any layout) into the
    1-D float64 ``buf`` in C order, from the first element of ``buf`` on a :data:`Q_ALIGN`
    byte boundary; returns that element's index, or -1 if a value is NaN or +/-inf."""
    off = ((Q_ALIGN - buf.ctypes.data % Q_ALIGN) % Q_ALIGN) // 8
    B, H, d = src.shape
    i = off
    chk = 0.0
    for b in range(B):
        for h in range(H):
            for c in range(d):
                v = widen(src[b, h, c])
                buf[i] = v
                chk += v * 0.0
                i += 1
    return off if chk == chk else -1


def as_query(q) -> np.ndarray:
    """``q`` (B, H, d) as a C-contiguous float64 copy whose data starts on a :data:`Q_ALIGN`
    byte boundary, checked like :func:`as_float_array` (dtype, rank, finite values).

    One jitted pass widens and checks (on a cache-cold call on the development host the
    NumPy conversion, the finite scan and :func:`aligned_copy` took about 47 us; with this
    pass and the shared mask of :func:`_all_valid`, :class:`KernelInputs` went from 69-84
    to 34-38 us); other inputs (not an array of a float dtype in native byte order, the
    wrong rank, no elements, a NaN or inf) take :func:`as_float_array`, which also raises
    the errors."""
    if isinstance(q, np.ndarray) and q.ndim == 3 and q.size and q.dtype.isnative:
        dt = q.dtype
        src = None
        if dt.kind == "f" and dt.itemsize in (4, 8):
            src = q
        elif dt.kind == "f" and dt.itemsize == 2:
            src = q.view(np.uint16)
        elif _is_bfloat16(dt):
            src = q.view(np.int16)
        if src is not None:
            buf = np.empty(q.size + Q_ALIGN // 8)
            off = _copy_query(src, buf)
            if off >= 0:
                return buf[off : off + q.size].reshape(q.shape)
    return aligned_copy(as_float_array("q", q, 3))


@functools.lru_cache(maxsize=8)
def _all_valid(B: int, S: int) -> np.ndarray:
    """The (B, S) all-True mask of ``mask=None``, one per shape (the kernels only read it;
    building and checking it again cost about 12 us on a cache-cold call)."""
    return np.ones((B, S), dtype=np.bool_)


class KernelInputs:
    """Validated kernel inputs: ``q`` float64 (B, H, d); ``k``, ``v`` in their own dtype with
    encodings ``enc_k``, ``enc_v``; ``mask`` (B, S) bool; sizes ``B, H, Hkv, S, d``."""

    __slots__ = ("q", "k", "enc_k", "k_dtype", "v", "enc_v", "mask", "B", "H", "Hkv", "S", "d")

    def __init__(self, q, k_cache, v_cache, mask):
        # small: a float64 copy, finite-checked, on a cache-line boundary (Q_ALIGN)
        self.q = as_query(q)
        self.k_dtype = np.asarray(k_cache).dtype  # as given (no copy for an ndarray)
        self.k, self.enc_k = as_cache_array("k_cache", k_cache, 4)
        self.v, self.enc_v = as_cache_array("v_cache", v_cache, 4)
        self.B, self.H, self.Hkv, self.S, self.d = check_shapes(
            self.q.shape, self.k.shape, self.v.shape
        )
        self.mask = _all_valid(self.B, self.S) if mask is None else check_mask(mask, self.B, self.S)

    def raise_nonfinite_caches(self) -> None:
        """Name the first non-finite element of k_cache or v_cache, if there is one."""
        raise_nonfinite("k_cache", self.k, self.enc_k)
        raise_nonfinite("v_cache", self.v, self.enc_v)

    def check_finite_caches(self) -> None:
        """Full scan of both caches (``check_finite=True``); raises naming the element."""
        if has_nonfinite(self.k, self.enc_k) or has_nonfinite(self.v, self.enc_v):
            self.raise_nonfinite_caches()
