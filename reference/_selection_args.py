"""Argument checks shared by the public top-k functions and their NumPy twins.

Pure Python/NumPy (no Numba): :func:`bucket_sizes` (public, re-exported by
:mod:`reference.selection`) and the private checks ``_check_int``, ``_as_rows``,
``_nrows``, ``_check_bucket_args``.
"""

from __future__ import annotations

import numbers

import numpy as np

from reference._checks import as_int


def _check_int(name: str, value, lo: int, hi: int | None, what: str) -> int:
    """:func:`reference._checks.as_int`'s type rules, then a range worded as ``what``."""
    value = as_int(name, value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}: expected {what}, got {value}")
    return value


def _as_rows(x, axis, fname: str) -> tuple[np.ndarray, int]:
    """Validate ``x``/``axis``; return (x with ``axis`` moved last, normalised axis)."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    dt = x.dtype
    if dt == np.bool_:
        raise TypeError(
            f"{fname}: x: expected a real numeric dtype (float16/32/64 or integer), got bool; "
            "cast to an integer dtype to rank booleans"
        )
    if dt.kind not in "fiu" or (dt.kind == "f" and dt.itemsize > 8):
        raise TypeError(
            f"{fname}: x: expected a real numeric dtype (float16/32/64 or integer), got {dt}"
        )
    if x.ndim == 0:
        raise ValueError(f"{fname}: x: expected at least 1 dimension, got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{fname}: axis: expected an int, got {type(axis).__name__} {axis!r}")
    axis = int(axis)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"{fname}: axis: expected -{x.ndim} <= axis < {x.ndim} for x.ndim={x.ndim}, got {axis}"
        )
    axis %= x.ndim
    xm = x if axis == x.ndim - 1 else np.moveaxis(x, axis, -1)
    return xm, axis


def _nrows(xm: np.ndarray) -> int:
    return int(np.prod(xm.shape[:-1], dtype=np.int64))


#: Largest ``num_buckets`` for which :func:`bucket_sizes` builds its array (512 MiB).
MAX_BUCKET_ARRAY = 2**26


def bucket_sizes(n: int, num_buckets: int) -> np.ndarray:
    """Sizes of the ``num_buckets`` buckets of ``n`` elements (no padding).

    Buckets ``0 .. n % b - 1`` hold ``n // b + 1`` elements, the rest ``n // b``; the same
    sizes serve both layouts (interleaved bucket j is ``{j, j + b, j + 2b, ...}``).
    ``1 <= num_buckets <= n`` and ``num_buckets <= MAX_BUCKET_ARRAY`` (2**26, 512 MiB).

    Returns
    -------
    ndarray of int64, shape (num_buckets,)
    """
    n = _check_int("bucket_sizes: n", n, 1, 2**63 - 1, "1 <= n <= 2**63 - 1 (int64 sizes)")
    b = _check_int("bucket_sizes: num_buckets", num_buckets, 1, n, f"1 <= num_buckets <= n = {n}")
    if b > MAX_BUCKET_ARRAY:
        raise ValueError(
            f"bucket_sizes: num_buckets: expected <= {MAX_BUCKET_ARRAY} (2**26; the array of"
            f" sizes would take {8 * b / 2**30:.3g} GiB), got {b}; the sizes take two values:"
            " n // b + 1 for the first n % b buckets, n // b for the rest"
        )
    base, rem = divmod(n, b)
    return np.where(np.arange(b) < rem, base + 1, base).astype(np.int64)


def _check_bucket_args(fname, n, k, num_buckets, k_per_bucket, axis):
    k = _check_int(f"{fname}: k", k, 0, n, f"0 <= k <= n = {n} (the size of axis {axis})")
    b = _check_int(f"{fname}: num_buckets", num_buckets, 1, n, f"1 <= num_buckets <= n = {n}")
    kb = _check_int(f"{fname}: k_per_bucket", k_per_bucket, 1, None, "k_per_bucket >= 1")
    if b * kb < k:
        raise ValueError(
            f"{fname}: num_buckets * k_per_bucket: expected >= k = {k}, got {b} * {kb} = {b * kb}"
        )
    return k, b, effective_k_per_bucket(kb, k, -(-n // b))


def effective_k_per_bucket(kb: int, k: int, largest_bucket: int) -> int:
    """``k_per_bucket`` as the kernels use it: ``max(1, min(kb, k, largest_bucket))``.

    The same selection for every larger value: a bucket never gives more candidates than it
    holds, and a bucket's candidates beyond its own first ``k`` (value descending, index
    ascending) can never be among the overall top ``k``, because those ``k`` rank before
    them. So any ``k_per_bucket`` (up to 2**64 and beyond) is accepted and exact."""
    return max(1, min(kb, k, largest_bucket))
