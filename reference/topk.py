"""Exact top-k (and, later, bucketed approximate top-k).

Row function contract used by other kernels (e.g. SparQ's selection step):

``topk_row(x, k, out)`` — serial Numba function. ``x`` is a 1-D float64 array that holds
no NaN (±inf allowed), ``0 <= k <= len(x)``. Writes into ``out[:k]`` the indices of the k
largest entries, ordered by value descending and, among equal values, by index ascending.
"""

from __future__ import annotations

import numpy as np

from reference._config import njit_serial


@njit_serial
def _better(x, a, b):
    # True when element a ranks before element b: larger value, then lower index.
    xa = x[a]
    xb = x[b]
    return xa > xb or (xa == xb and a < b)


@njit_serial
def _sift_down(x, heap, start, size):
    # Min-heap on rank: the root is the *worst* kept element.
    i = start
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        worst = left
        right = left + 1
        if right < size and _better(x, heap[left], heap[right]):
            worst = right
        if _better(x, heap[i], heap[worst]):
            heap[i], heap[worst] = heap[worst], heap[i]
            i = worst
        else:
            break


@njit_serial
def topk_row(x, k, out):
    """Indices of the k largest entries of ``x`` into ``out[:k]`` (value desc, index asc)."""
    n = x.shape[0]
    if k <= 0:
        return
    heap = np.empty(k, dtype=np.int64)
    for i in range(k):
        heap[i] = i
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(x, heap, i, k)
    for i in range(k, n):
        if _better(x, i, heap[0]):
            heap[0] = i
            _sift_down(x, heap, 0, k)
    # Heap-sort: repeatedly move the worst to the end.
    size = k
    while size > 1:
        heap[0], heap[size - 1] = heap[size - 1], heap[0]
        size -= 1
        _sift_down(x, heap, 0, size)
    for i in range(k):
        out[i] = heap[i]


def topk_naive(x: np.ndarray, k: int) -> np.ndarray:
    """Float64 NumPy twin of :func:`topk_row` for a 1-D array: a stable sort by (-value, index)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.lexsort((np.arange(x.shape[0]), -x))
    return order[:k].astype(np.int64)
