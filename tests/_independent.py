"""An independent float32 SparQ implementation (batched NumPy, written apart from the
reference) to run through the checker, as a kernel author's implementation would be."""

from __future__ import annotations

import numpy as np


def _softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    w = np.exp(x - m)
    return w / w.sum(axis=axis, keepdims=True)


#: Plausible kernel bugs ``sparq_float32(bug=...)`` can plant, each one a test of the checker.
BUGS = (
    "indices-window",  # the last local_window *indices* forced, valid or not
    "window-off-by-one",  # one position too few in the local window
    "no-reallocation",  # alpha = 1 although reallocate=True
    "sqrt-d-temperature",  # tau = sqrt(d) instead of the L1 coverage rule
    "per-head-selection",  # each query head selects its own positions (group expected)
    "v-mean-unmasked",  # v_mean over all S slots, padding included
    "softmax-no-max",  # exp(x) / sum exp(x) without subtracting the max
    "unselected-not-masked",  # the k-row softmax also weights slots beyond the valid count
)


def _softmax_nomax(x, axis=-1):
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp(x)
        return w / w.sum(axis=axis, keepdims=True)


def _bucketed(score_row, valid, n_local, n_sel, num_buckets, k_per_bucket, interleaved):
    """Bucketed top-k of step 4 for one row (Key et al. 2024): buckets of the compacted
    non-local valid positions, each bucket's top k_b, then the top of those candidates."""
    nv = valid.size
    rest, local = valid[: nv - n_local], valid[nv - n_local :]
    need = n_sel - n_local
    if need <= 0 or n_sel >= nv:
        return np.concatenate([local, rest[np.argsort(-score_row[rest], kind="stable")[:need]]])
    b = min(num_buckets, rest.size)
    if interleaved:
        ids = np.arange(rest.size) % b
    else:
        base, rem = divmod(rest.size, b)
        ids = np.repeat(np.arange(b), [base + 1] * rem + [base] * (b - rem))
    cand = np.concatenate([
        rest[ids == j][np.argsort(-score_row[rest[ids == j]], kind="stable")[:k_per_bucket]]
        for j in range(b)
    ])  # fmt: skip
    cand.sort()
    return np.concatenate([local, cand[np.argsort(-score_row[cand], kind="stable")[:need]]])


def sparq_float32(q, k_cache, v_cache, mask, *, r, k, local_window, reallocate=True,
                  temperature="l1", group_score="logits", selection="group", topk="exact",
                  num_buckets=None, k_per_bucket=1, interleaved=True, window_bug=False,
                  bug=None):  # fmt: skip
    """Returns every step as a dict. ``bug`` plants one of :data:`BUGS` (``window_bug=True``
    is ``bug="indices-window"``)."""
    if window_bug:
        bug = "indices-window"
    assert bug is None or bug in BUGS, bug
    q, K, V = (np.asarray(x, dtype=np.float32) for x in (q, k_cache, v_cache))
    B, H, d = q.shape
    Hkv, S = K.shape[1], K.shape[2]
    g = H // Hkv
    if bug == "per-head-selection":
        selection = "head"
    if bug == "sqrt-d-temperature":
        temperature = "sqrt_d"
    wv = mask[:, None, :, None].astype(np.float32)
    if bug == "v-mean-unmasked":
        v_mean = V.mean(2)
    else:
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
    softmax = _softmax_nomax if bug == "softmax-no-max" else _softmax
    p = softmax(s)
    score = s.sum(2) if group_score == "logits" else p.sum(2)
    score = np.where(mask[:, None, :], score, -np.inf)
    if bug == "indices-window":
        local = mask & (np.arange(S) >= S - local_window)
    else:
        recent = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1]
        lw = local_window - 1 if bug == "window-off-by-one" else local_window
        local = mask & (recent <= lw)
    score = np.where(local[:, None, :], np.inf, score)
    order = np.argsort(-score, axis=-1, kind="stable")
    nv = mask.sum(1)
    kk = min(k, S)
    positions = np.full((B, G, kk), -1, dtype=np.int64)
    alpha = np.ones((B, G, per), dtype=np.float32)
    y = np.zeros((B, G, per, d), dtype=np.float32)
    for b in range(B):
        n = min(k, int(nv[b]))
        if topk == "bucketed":
            valid = np.flatnonzero(mask[b])
            n_local = min(local_window, valid.size)
            idx = np.stack([_bucketed(score[b, gi], valid, n_local, n, num_buckets,
                                      k_per_bucket, interleaved) for gi in range(G)])  # fmt: skip
        else:
            idx = order[b, :, :n]  # (G, n)
        positions[b, :, :n] = idx
        if reallocate and bug != "no-reallocation":
            alpha[b] = np.take_along_axis(p[b], idx[:, None, :], axis=2).sum(-1)
        if bug == "unselected-not-masked" and n < kk:
            # a kernel that always gathers k rows: the slots past the valid count point at
            # position 0 (often padding) and are not masked out of the softmax
            idx = np.concatenate([idx, np.zeros((G, kk - n), dtype=idx.dtype)], axis=1)
        Kk = np.take_along_axis(K[b], idx[..., None], axis=1)  # (G, n, d)
        Vk = np.take_along_axis(V[b], idx[..., None], axis=1)
        w = softmax(np.einsum("gpd,gnd->gpn", qg[b], Kk) / np.sqrt(np.float32(d)))
        y[b] = np.einsum("gpn,gnd->gpd", w, Vk)
    vm = np.repeat(v_mean, g, axis=1) if selection == "head" else v_mean
    out = alpha[..., None] * y + (1 - alpha[..., None]) * vm[:, :, None, :]
    return dict(components=i1, temperature=tau.reshape(B, H), approx_logits=s.reshape(B, H, S),
                positions=positions, alpha=alpha.reshape(B, H), v_mean=v_mean,
                y=y.reshape(B, H, d), out=out.reshape(B, H, d))  # fmt: skip
