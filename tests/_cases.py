"""Random attention cases shared by the tests (values from a seeded generator)."""

from __future__ import annotations

import numpy as np


def random_case(seed, B=2, H=4, Hkv=2, S=17, d=8, pad=True, dtype=np.float64, holes=False):
    """Normal q, K, V; left padding per batch row (``pad``) and, with ``holes``, scattered
    masked positions too (the last position, the current token, stays valid)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, H, d)).astype(dtype)
    K = rng.normal(size=(B, Hkv, S, d)).astype(dtype)
    V = rng.normal(size=(B, Hkv, S, d)).astype(dtype)
    mask = np.ones((B, S), dtype=bool)
    if pad:
        for b in range(B):
            mask[b, : rng.integers(0, S)] = False  # left padding, at least one valid position
    if holes:
        mask[:, : S - 1] &= rng.random((B, S - 1)) > 0.3
    return q, K, V, mask
