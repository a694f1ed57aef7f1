"""Input validation shared by the public functions (never called from jitted code)."""

from __future__ import annotations

import operator

import numpy as np
from numba import prange

from reference._config import njit_parallel


@njit_parallel
def _first_nonfinite(flat):
    """Flat index of the first NaN or +/-inf in ``flat`` (1-D), or -1 (chunked, parallel).

    Per chunk, ``sum(v * 0.0)`` is NaN exactly when the chunk holds a NaN or an inf (a
    branch-free loop that vectorises); only such a chunk is scanned for the first index."""
    n = flat.shape[0]
    chunk = 1 << 16
    nchunks = (n + chunk - 1) // chunk
    first = np.full(nchunks, -1, dtype=np.int64)
    for c in prange(nchunks):
        lo = c * chunk
        hi = min(n, lo + chunk)
        acc = 0.0
        for i in range(lo, hi):
            acc += flat[i] * 0.0
        if acc != acc:
            for i in range(lo, hi):
                v = flat[i]
                if not (v - v == 0.0):  # false exactly for NaN and +/-inf
                    first[c] = i
                    break
    for c in range(nchunks):
        if first[c] >= 0:
            return first[c]
    return -1


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
    if not (x.dtype.kind == "f" and x.dtype.itemsize in (2, 4, 8)):  # any byte order
        raise TypeError(
            f"{name}: expected a float16, float32 or float64 array, got dtype {x.dtype}"
            " (cast explicitly if you mean it)"
        )
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.size and _first_nonfinite(x.reshape(-1)) >= 0:
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


def as_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_attention_inputs(q, k_cache, v_cache, mask):
    """Validate decode-attention inputs; return (q, k, v, mask, B, H, Hkv, S, d)."""
    q = as_float_array("q", q, 3)
    k_cache = as_float_array("k_cache", k_cache, 4)
    v_cache = as_float_array("v_cache", v_cache, 4)
    B, H, d = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache, v_cache: expected equal shapes (B, Hkv, S, d), got {k_cache.shape}"
            f" and {v_cache.shape}"
        )
    Bk, Hkv, S, dk = k_cache.shape
    if Bk != B:
        raise ValueError(f"k_cache: expected batch {B} (from q {q.shape}), got {Bk}")
    if dk != d:
        raise ValueError(f"k_cache: expected head dim {d} (from q {q.shape}), got {dk}")
    if d < 1 or S < 1 or B < 1 or H < 1 or Hkv < 1:
        raise ValueError(
            f"q, k_cache: every dimension must be >= 1, got q {q.shape}, k_cache {k_cache.shape}"
        )
    if H % Hkv != 0:
        raise ValueError(
            f"q: number of query heads H={H} must be a multiple of the KV heads Hkv={Hkv}"
        )
    if mask is None:
        mask = np.ones((B, S), dtype=np.bool_)
    else:
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
        mask = np.ascontiguousarray(mask)
    check_logit_range(q, k_cache, mask)
    return q, k_cache, v_cache, mask, B, H, Hkv, S, d
