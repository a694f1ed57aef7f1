"""An independent float32 SparQ implementation (batched NumPy, written apart from the
reference) to run through the checker, as a kernel author's implementation would be."""

from __future__ import annotations

import numpy as np


def _softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    w = np.exp(x - m)
    return w / w.sum(axis=axis, keepdims=True)


def sparq_float32(q, k_cache, v_cache, mask, *, r, k, local_window, reallocate=True,
                  temperature="l1", group_score="logits", selection="group",
                  window_bug=False):  # fmt: skip
    """Returns every step as a dict. ``window_bug`` forces the last ``local_window`` *indices*
    (valid or not) instead of the most recent valid positions: a plausible kernel bug."""
    q, K, V = (np.asarray(x, dtype=np.float32) for x in (q, k_cache, v_cache))
    B, H, d = q.shape
    Hkv, S = K.shape[1], K.shape[2]
    g = H // Hkv
    wv = mask[:, None, :, None].astype(np.float32)
    v_mean = (np.where(wv > 0, V, 0) * wv).sum(2) / wv.sum(2)
    if selection == "head":
        K, V = np.repeat(K, g, axis=1), np.repeat(V, g, axis=1)
    G = K.shape[1]
    per = H // G
    qg = q.reshape(B, G, per, d)
    a = np.abs(qg).sum(2)
    i1 = np.argsort(-a, axis=-1, kind="stable")[..., :r]
    qs = np.take_along_axis(qg, i1[:, :, None, :], axis=3)
    Ks = np.take_along_axis(K, i1[:, :, None, :], axis=3)
    total, kept = np.abs(qg).sum(-1), np.abs(qs).sum(-1)
    if temperature == "l1":
        cov = np.where(total > 0, kept / np.where(total > 0, total, 1), 1)
        tau = np.sqrt(np.float32(d) * cov)
    else:
        tau = np.full((B, G, per), np.sqrt(d if temperature == "sqrt_d" else r), np.float32)
    dots = np.einsum("bgpr,bgsr->bgps", qs, Ks)
    s = np.where(tau[..., None] > 0, dots / np.where(tau > 0, tau, 1)[..., None], 0)
    s = np.where(mask[:, None, None, :], s, -np.inf).astype(np.float32)
    p = _softmax(s)
    score = s.sum(2) if group_score == "logits" else p.sum(2)
    score = np.where(mask[:, None, :], score, -np.inf)
    if window_bug:
        local = mask & (np.arange(S) >= S - local_window)
    else:
        recent = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1]
        local = mask & (recent <= local_window)
    score = np.where(local[:, None, :], np.inf, score)
    order = np.argsort(-score, axis=-1, kind="stable")
    nv = mask.sum(1)
    positions = np.full((B, G, k), -1, dtype=np.int64)
    alpha = np.ones((B, G, per), dtype=np.float32)
    y = np.zeros((B, G, per, d), dtype=np.float32)
    for b in range(B):
        n = min(k, int(nv[b]))
        idx = order[b, :, :n]  # (G, n)
        positions[b, :, :n] = idx
        if reallocate:
            alpha[b] = np.take_along_axis(p[b], idx[:, None, :], axis=2).sum(-1)
        Kk = np.take_along_axis(K[b], idx[..., None], axis=1)  # (G, n, d)
        Vk = np.take_along_axis(V[b], idx[..., None], axis=1)
        w = _softmax(np.einsum("gpd,gnd->gpn", qg[b], Kk) / np.sqrt(np.float32(d)))
        y[b] = np.einsum("gpn,gnd->gpd", w, Vk)
    vm = np.repeat(v_mean, g, axis=1) if selection == "head" else v_mean
    out = alpha[..., None] * y + (1 - alpha[..., None]) * vm[:, :, None, :]
    return dict(components=i1, temperature=tau.reshape(B, H), approx_logits=s.reshape(B, H, S),
                positions=positions, alpha=alpha.reshape(B, H), v_mean=v_mean,
                y=y.reshape(B, H, d), out=out.reshape(B, H, d))  # fmt: skip
