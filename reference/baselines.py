"""The paper's baselines for one decode step (Ribar et al. 2024, Sec. 5 and App. E).

Float64 NumPy implementations (the truth; these baselines are not on the hot path of any
kernel this project validates, so they have no Numba kernel). Same shapes and conventions as
:func:`reference.sparq_attention`: ``q (B, H, d)``, caches ``(B, Hkv, S, d)``, ``mask (B, S)``.
Selection is per query head; ties go to the lower index.

- :func:`oracle_topk_attention`: exact scores, keep the top-k, renormalise.
- :func:`lm_infinite_attention`: LM-Infinite / StreamingLLM: the first ``sink`` valid positions
  plus the most recent ``k - sink``.
- :func:`flexgen_topk_attention`: FlexGen's top-k: exact softmax over all valid positions, keep
  the top-k weights, *no* renormalisation.

H2O (stateful heavy-hitter eviction across steps) is not implemented yet.
"""

from __future__ import annotations

import math

import numpy as np

from reference._validate import as_int, check_attention_inputs
from reference.topk import topk_naive


def _exact_logits(qh, Kh, valid):
    return Kh[valid] @ qh / math.sqrt(qh.shape[0])


def _run(q, k_cache, v_cache, mask, k, choose):
    """Apply ``choose(logits, valid) -> (chosen positions into valid, weights)`` per head."""
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    k = as_int("k", k, lo=1)
    g = H // Hkv
    out = np.empty((B, H, d))
    positions = np.full((B, H, k), -1, dtype=np.int64)
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for h in range(H):
            logits = _exact_logits(q[b, h], K[b, h // g], valid)
            chosen, w = choose(logits, min(k, valid.shape[0]))
            positions[b, h, : chosen.shape[0]] = valid[chosen]
            out[b, h] = w @ V[b, h // g][valid[chosen]]
    return out, positions


def _softmax(x):
    w = np.exp(x - x.max())
    return w / w.sum()


def oracle_topk_attention(q, k_cache, v_cache, *, k: int, mask=None, return_positions=False):
    """Exact top-k attention: softmax over the k highest exact scores only (renormalised).

    Returns ``out (B, H, d)`` float64, and ``positions (B, H, k)`` (score descending, ties to
    the lower index, -1 in unused slots) if ``return_positions``.
    """

    def choose(logits, n):
        chosen = topk_naive(logits, n)
        return chosen, _softmax(logits[chosen])

    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out


def flexgen_topk_attention(q, k_cache, v_cache, *, k: int, mask=None, return_positions=False):
    """FlexGen top-k: softmax over all valid positions, keep the k largest weights unnormalised.

    The kept weights sum to less than 1, so the output shrinks towards 0 (paper App. E).
    """

    def choose(logits, n):
        chosen = topk_naive(logits, n)
        return chosen, _softmax(logits)[chosen]

    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out


def lm_infinite_attention(
    q, k_cache, v_cache, *, k: int, sink: int = 16, mask=None, return_positions=False
):
    """LM-Infinite / StreamingLLM: the first ``sink`` valid positions and the most recent
    ``k - sink`` (renormalised softmax over them). ``0 <= sink <= k``; with ``k >=`` the number
    of valid positions every valid position is kept. Positions are returned in index order."""
    k = as_int("k", k, lo=1)
    sink = as_int("sink", sink, lo=0, hi=k)

    def choose(logits, n):
        nv = logits.shape[0]
        chosen = (
            np.arange(nv) if n >= nv else np.r_[np.arange(sink), np.arange(nv - (n - sink), nv)]
        )
        return chosen, _softmax(logits[chosen])

    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out
