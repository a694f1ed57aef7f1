"""Dense decode attention: the baseline every sparse method is measured against.

``out[b, h] = softmax(q[b, h] @ K[b, h // g].T / sqrt(d), over valid positions) @ V[b, h // g]``
(Ribar et al. 2024, Eq. 1-2; one query token per sequence, GQA with g = H / Hkv).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from reference._config import njit_parallel, njit_serial
from reference._validate import check_attention_inputs


def dense_attention_naive(q, k_cache, v_cache, mask=None) -> np.ndarray:
    """Float64 NumPy twin of :func:`dense_attention` (the ground truth; slow and obvious)."""
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    g = H // Hkv
    out = np.empty((B, H, d))
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for h in range(H):
            kv = h // g
            logits = K[b, kv, valid] @ q[b, h] / math.sqrt(d)
            w = np.exp(logits - logits.max())
            w /= w.sum()
            out[b, h] = w @ V[b, kv, valid]
    return out


@njit_serial
def _softmax_attend_row(qh, Kr, Vr, positions, n_pos, scale, out):
    """Exact attention of one query row over ``positions[:n_pos]``: softmax(q K^T * scale) V.

    ``qh`` (d,), ``Kr``/``Vr`` (S, d); writes ``out`` (d,).  Softmax with max subtraction,
    serial float64 accumulation in position order.
    """
    d = qh.shape[0]
    logits = np.empty(n_pos)
    m = -np.inf
    for t in range(n_pos):
        j = positions[t]
        acc = 0.0
        for c in range(d):
            acc += qh[c] * Kr[j, c]
        acc *= scale
        logits[t] = acc
        if acc > m:
            m = acc
    for c in range(d):
        out[c] = 0.0
    total = 0.0
    for t in range(n_pos):
        w = math.exp(logits[t] - m)
        total += w
        j = positions[t]
        for c in range(d):
            out[c] += w * Vr[j, c]
    inv = 1.0 / total
    for c in range(d):
        out[c] *= inv


@njit_parallel
def _dense_kernel(q, K, V, mask, out):
    B, H, d = q.shape
    Hkv = K.shape[1]
    S = K.shape[2]
    g = H // Hkv
    scale = 1.0 / math.sqrt(d)
    for row in prange(B * H):
        b = row // H
        h = row % H
        positions = np.empty(S, dtype=np.int64)
        n = 0
        for j in range(S):
            if mask[b, j]:
                positions[n] = j
                n += 1
        _softmax_attend_row(q[b, h], K[b, h // g], V[b, h // g], positions, n, scale, out[b, h])


def dense_attention(q, k_cache, v_cache, *, mask=None) -> np.ndarray:
    """Dense attention for one decode step (float64 result).

    Parameters
    ----------
    q : ndarray, shape (B, H, d)
        Queries of the token being generated (post-RoPE), float16/32/64.
    k_cache, v_cache : ndarray, shape (B, Hkv, S, d)
        Key and value caches; the current token's key/value sits at the last valid position.
        ``H`` must be a multiple of ``Hkv`` (GQA group size ``g = H // Hkv``).
    mask : ndarray of bool, shape (B, S), optional
        True = attend.  Masked positions may hold any finite values; they have no influence.

    Returns
    -------
    out : ndarray of float64, shape (B, H, d)
    """
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    out = np.empty((B, H, d))
    _dense_kernel(q, K, V, mask, out)
    if not np.isfinite(out).all():
        raise ValueError(
            "q, k_cache: the attention logits overflow float64 (|q . k| is too large);"
            " scale q or k_cache down"
        )
    return out
