"""SparQ Attention (Ribar et al., ICML 2024, arXiv 2312.04985): float64 truth and Numba kernel.

Semantics follow ``../shared/spec/sparq.md`` and the public evaluation code
(``llminference/methods/ann_attention.py``), with the paper's counting of ``k``:
``k`` is the total number of positions kept and ``local_window`` counts the current token.
The evaluation code's ``Settings(k=K, local_k=L)`` equals ``k=K + 1, local_window=L + 1`` here.

Per (batch, selection group) — a group is the g query heads of one KV head (default,
``selection="group"``) or a single query head (``selection="head"``):

1. components ``i1`` = top-r of ``sum_h |q_h|`` (Alg. 1 line 1; eval code sums over the group)
2. temperature per head ``tau_h`` (L1 coverage by default, Alg. 1 line 3 / eval code)
3. approximate logits ``s_h = (q_h[i1] . K[:, i1]) / tau_h`` (Alg. 1 line 2), -inf where masked
4. positions ``i2`` = top-k of the group score with the local window forced (Alg. 1 line 4)
5. ``alpha_h = sum_{j in i2} softmax(s_h)_j`` (Alg. 1 line 5)
6. ``v_mean`` = masked mean of V (Alg. 1 line 6)
7. ``y_h = softmax(q_h . K[i2] / sqrt(d)) V[i2]`` (Alg. 1 line 7)
8. ``out_h = alpha_h y_h + (1 - alpha_h) v_mean`` (Alg. 1 line 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import prange

from reference._config import njit_parallel, njit_serial
from reference._validate import as_choice, as_float_array, as_int, check_attention_inputs
from reference.dense import _softmax_attend_row
from reference.precision import PRECISIONS, TRUTH, Precision
from reference.selection import bucketed_topk_row, bucketed_topk_twin, topk_naive, topk_row

TEMPERATURES = ("l1", "sqrt_d", "sqrt_r")
GROUP_SCORES = ("logits", "probs")
SELECTIONS = ("group", "head")
IMPLS = ("numba", "naive")
TOPKS = ("exact", "bucketed")


@dataclass(frozen=True)
class SparqSteps:
    """Every intermediate of one SparQ decode step (all float64 / int64).

    ``G`` below is ``Hkv`` with ``selection="group"`` and ``H`` with ``selection="head"``.

    Attributes
    ----------
    out : (B, H, d) output.
    components : (B, G, r) i1, ordered by score (sum of |q|) descending, ties to lower index.
    approx_logits : (B, H, S) approximate logits ``s_h`` (un-forced); -inf at masked positions.
    positions : (B, G, k) i2, ordered by selection score descending (forced local window first,
        since its score is +inf), ties to lower index; -1 in unused slots.
    alpha : (B, H) softmax mass of the approximate logits on i2 (1.0 if ``reallocate=False``).
    v_mean : (B, Hkv, d) mean of V over valid positions (or the caller's ``v_mean``).
    y : (B, H, d) exact attention over i2 alone (renormalised), before reallocation.
    temperature : (B, H) tau_h used for the approximate logits.
    """

    out: np.ndarray
    components: np.ndarray
    approx_logits: np.ndarray
    positions: np.ndarray
    alpha: np.ndarray
    v_mean: np.ndarray
    y: np.ndarray
    temperature: np.ndarray


# ---------------------------------------------------------------------------------------------
# Float64 NumPy twin: the ground truth, written to be read next to the paper.
# ---------------------------------------------------------------------------------------------


def _temperature_naive(qh: np.ndarray, i1: np.ndarray, mode: str) -> float:
    d = qh.shape[0]
    if mode == "sqrt_d":
        return math.sqrt(d)
    if mode == "sqrt_r":
        return math.sqrt(i1.shape[0])
    total = np.abs(qh).sum()
    coverage = np.abs(qh[i1]).sum() / total if total > 0 else 1.0
    return math.sqrt(d * coverage)


def _softmax_naive(x: np.ndarray) -> np.ndarray:
    w = np.exp(x - x.max())
    return w / w.sum()


def _select_naive(score, n_sel, n_local, bucketed):
    """Step 4's top-k over the compacted valid scores (the last ``n_local`` are forced).

    ``bucketed`` is None (exact) or ``(num_buckets, k_per_bucket, interleaved)``: then the
    forced window is kept and the other ``n_sel - n_local`` positions are a bucketed top-k of
    the non-local prefix (buckets laid over valid positions in index order)."""
    n_rest = score.shape[0] - n_local
    if bucketed is None or n_sel - n_local <= 0 or n_sel >= score.shape[0]:
        return topk_naive(score, n_sel)
    b, kb, interleaved = bucketed
    _, rest = bucketed_topk_twin(
        score[:n_rest], n_sel - n_local, num_buckets=min(b, n_rest), k_per_bucket=kb,
        interleaved=interleaved,
    )  # fmt: skip
    return np.concatenate([np.arange(n_rest, score.shape[0]), rest]).astype(np.int64)


def _sparq_group_naive(
    qg, K, V, valid, r, k, local_window, temperature, group_score, v_mean, bucketed, pr=TRUTH,
    inject_i1=None, inject_chosen=None,
):  # fmt: skip
    """One selection group: qg (G, d) query rows sharing one selection; K, V (S, d).

    ``pr`` says where to round: for the truth (float64) ``pr.store`` is the identity and
    ``pr.acc`` is float64; an emulated low precision stores in its dtype and accumulates in
    float32 (reference/precision.py). ``inject_i1`` / ``inject_chosen`` replace the outcome
    of step 1 / step 4 (index injection, so that later steps can be judged on their own)."""
    G, d = qg.shape
    S = K.shape[0]
    qg, K, V = (x.astype(pr.acc, copy=False) for x in (qg, K, V))
    # Step 1: components.
    i1 = topk_naive(pr.store(np.abs(qg).sum(axis=0)), r) if inject_i1 is None else inject_i1
    # Steps 2-3: temperature and approximate logits (masked positions -inf).
    tau = pr.store([_temperature_naive(qg[h], i1, temperature) for h in range(G)])
    s = np.full((G, S), -np.inf, dtype=pr.acc)
    for h in range(G):
        if tau[h] > 0:
            if pr.reorder:
                s[h, valid] = pr.store(K[np.ix_(valid, i1)] @ (qg[h, i1] / tau[h]))
            else:
                s[h, valid] = pr.store((K[np.ix_(valid, i1)] @ qg[h, i1]) / tau[h])
        else:  # q_h is zero on every kept component: approximate logits are 0 (convention)
            s[h, valid] = 0.0
    # Step 4: group score, forced local window, top-k among valid positions.
    if group_score == "logits":
        score = s[:, valid].sum(axis=0)
    else:
        score = np.array([_softmax_naive(s[h, valid]) for h in range(G)]).sum(axis=0)
    n_local = min(local_window, valid.shape[0])
    if n_local > 0:
        score[valid.shape[0] - n_local :] = np.inf  # the most recent valid positions
    n_sel = min(k, valid.shape[0])
    if inject_chosen is None:
        chosen = valid[_select_naive(score, n_sel, n_local, bucketed)]
    else:
        chosen = inject_chosen
    positions = np.full(k, -1, dtype=np.int64)
    positions[:n_sel] = chosen
    # Step 5: alpha = softmax mass of the approximate logits on the chosen positions.
    picked = np.isin(valid, chosen)
    if pr.reorder:
        alpha = pr.store([1 - _softmax_naive(s[h, valid])[~picked].sum() for h in range(G)])
    else:
        alpha = pr.store([_softmax_naive(s[h, valid])[picked].sum() for h in range(G)])
    # Steps 7-8: exact attention over the chosen positions, reallocation to v_mean.
    y = np.empty((G, d), dtype=pr.acc)
    for h in range(G):
        if pr.reorder:
            logits = pr.store(K[chosen] @ (qg[h] / math.sqrt(d)))
        else:
            logits = pr.store(K[chosen] @ qg[h] / math.sqrt(d))
        w = pr.store(_softmax_naive(logits))
        y[h] = pr.store(w @ V[chosen])
    if pr.reorder:
        out = pr.store(y + (1.0 - alpha[:, None]) * (v_mean[None, :] - y))
    else:
        out = pr.store(alpha[:, None] * y + (1.0 - alpha[:, None]) * v_mean[None, :])
    return out, i1, s, positions, alpha, y, tau


def sparq_attention_naive(
    q,
    k_cache,
    v_cache,
    *,
    r: int,
    k: int,
    local_window: int = 0,
    mask=None,
    reallocate: bool = True,
    temperature: str = "l1",
    group_score: str = "logits",
    selection: str = "group",
    v_mean=None,
    topk: str = "exact",
    num_buckets: int | None = None,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    precision: str = "float64",
    inject_components=None,
    inject_positions=None,
) -> SparqSteps:
    """Float64 NumPy twin of :func:`sparq_attention`; always returns :class:`SparqSteps`.

    ``inject_components`` (B, G, r) and ``inject_positions`` (B, G, k) (-1 in unused slots)
    replace the outcomes of steps 1 and 4 with another implementation's, so that the later
    steps can be judged on their own (index injection, as Quest's tests do; used by
    :mod:`reference.validation`). Each row must hold distinct in-range components and
    distinct valid positions (``min(k, valid count)`` of them, then -1s).

    ``precision="float64"`` (default) is the ground truth. ``"float32"``, ``"float16"`` or
    ``"bfloat16"`` emulate a naive implementation in that dtype (inputs and stored tensors
    rounded to it, accumulation and softmax in float32; ``reference/precision.py``): its
    deviation from the truth calibrates what error a kernel in that dtype may make. The
    returned arrays are float64 holding values of the emulated dtype. A
    :class:`reference.precision.Precision` may be passed instead of a name (e.g. with
    ``reorder=True``, the same computation by another rounding route).
    """
    if isinstance(precision, Precision):
        pr = precision
    else:
        pr = Precision(as_choice("precision", precision, PRECISIONS))
    q, K, V, mask, r, k, local_window, v_mean, bucketed = _check(
        q, k_cache, v_cache, mask, r, k, local_window, reallocate, temperature, group_score,
        selection, v_mean, topk, num_buckets, k_per_bucket, interleaved, pr=pr,
    )  # fmt: skip
    B, H, d = q.shape
    Hkv, S = K.shape[1], K.shape[2]
    g = H // Hkv
    G = Hkv if selection == "group" else H
    per = g if selection == "group" else 1  # query heads per selection group
    inj_c = _check_injected_components(inject_components, (B, G, r), d)
    inj_p = _check_injected_positions(inject_positions, (B, G, k), mask)
    out = np.empty((B, H, d))
    y = np.empty((B, H, d))
    comps = np.empty((B, G, r), dtype=np.int64)
    s_all = np.empty((B, H, S))
    pos = np.empty((B, G, k), dtype=np.int64)
    alpha = np.empty((B, H))
    tau = np.empty((B, H))
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for grp in range(G):
            heads = slice(grp * per, (grp + 1) * per)
            kv = (grp * per) // g
            o, i1, s, p, a, yy, t = _sparq_group_naive(
                q[b, heads], K[b, kv], V[b, kv], valid, r, k, local_window, temperature,
                group_score, v_mean[b, kv], bucketed, pr,
                None if inj_c is None else inj_c[b, grp],
                None if inj_p is None else inj_p[b, grp][inj_p[b, grp] >= 0],
            )  # fmt: skip
            if not reallocate:
                a = np.ones_like(a)
                o = yy
            out[b, heads], comps[b, grp], s_all[b, heads], pos[b, grp] = o, i1, s, p
            alpha[b, heads], y[b, heads], tau[b, heads] = a, yy, t
    with np.errstate(over="ignore", invalid="ignore"):
        _finite_result(out, pr.name)
    return SparqSteps(out, comps, s_all, pos, alpha, v_mean, y, tau)


def _as_index_array(name, x, shape):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {x.shape}")
    return x.astype(np.int64)


def _check_injected_components(x, shape, d):
    if x is None:
        return None
    x = _as_index_array("inject_components", x, shape)
    if ((x < 0) | (x >= d)).any():
        raise ValueError(
            f"inject_components: expected indices in [0, {d}), got {x.min()}..{x.max()}"
        )
    if (np.diff(np.sort(x, axis=-1), axis=-1) == 0).any():
        raise ValueError("inject_components: expected distinct components in every row")
    return x


def _check_injected_positions(x, shape, mask):
    if x is None:
        return None
    x = _as_index_array("inject_positions", x, shape)
    B, G, k = shape
    for b in range(B):
        nv = int(mask[b].sum())
        for grp in range(G):
            row = x[b, grp]
            n = min(k, nv)
            used = row[:n]
            if (row[n:] != -1).any() or (used < 0).any() or (used >= mask.shape[1]).any():
                raise ValueError(
                    f"inject_positions[{b}, {grp}]: expected {n} positions then -1s, got"
                    f" {row.tolist()}"
                )
            if not mask[b, used].all() or np.unique(used).size != n:
                raise ValueError(
                    f"inject_positions[{b}, {grp}]: expected distinct valid positions, got"
                    f" {used.tolist()}"
                )
    return x


# ---------------------------------------------------------------------------------------------
# Numba kernel: prange over (batch, selection group); serial row function per group.
# ---------------------------------------------------------------------------------------------

_TEMP_CODE = {"l1": 0, "sqrt_d": 1, "sqrt_r": 2}


@njit_serial
def _sparq_group_row(
    qg, K, V, maskrow, r, k, local_window, temp_code, probs, reallocate, vmean,
    nb, kb, interleaved, out, comps, s, pos, alpha, y, tau,
):  # fmt: skip
    G, d = qg.shape
    S = K.shape[0]
    # valid positions in order
    valid = np.empty(S, dtype=np.int64)
    nv = 0
    for j in range(S):
        if maskrow[j]:
            valid[nv] = j
            nv += 1
    # Step 1: components.
    a = np.zeros(d)
    for h in range(G):
        for c in range(d):
            a[c] += abs(qg[h, c])
    topk_row(a, r, comps)
    # Step 2: temperature.
    for h in range(G):
        if temp_code == 1:
            tau[h] = math.sqrt(d)
        elif temp_code == 2:
            tau[h] = math.sqrt(r)
        else:
            total = 0.0
            for c in range(d):
                total += abs(qg[h, c])
            kept = 0.0
            for t in range(r):
                kept += abs(qg[h, comps[t]])
            cov = kept / total if total > 0 else 1.0
            tau[h] = math.sqrt(d * cov)
    # Step 3: approximate logits; per-head max for the softmaxes.
    qs = np.empty((G, r))
    for h in range(G):
        for t in range(r):
            qs[h, t] = qg[h, comps[t]]
    for h in range(G):
        for j in range(S):
            s[h, j] = -np.inf
    smax = np.full(G, -np.inf)
    for t in range(nv):
        j = valid[t]
        for h in range(G):
            if tau[h] > 0:
                acc = 0.0
                for u in range(r):
                    acc += qs[h, u] * K[j, comps[u]]
                v = acc / tau[h]
            else:
                v = 0.0
            s[h, j] = v
            if v > smax[h]:
                smax[h] = v
    ssum = np.zeros(G)
    for h in range(G):
        for t in range(nv):
            ssum[h] += math.exp(s[h, valid[t]] - smax[h])
    # Step 4: group score over valid positions (compacted), forced local window, top-k.
    score = np.zeros(nv)
    for t in range(nv):
        j = valid[t]
        acc = 0.0
        for h in range(G):
            if probs:
                acc += math.exp(s[h, j] - smax[h]) / ssum[h]
            else:
                acc += s[h, j]
        score[t] = acc
    n_local = min(local_window, nv)
    for t in range(nv - n_local, nv):
        score[t] = np.inf
    n_sel = min(k, nv)
    sel = np.empty(n_sel, dtype=np.int64)
    n_rest = nv - n_local
    if nb > 0 and n_sel - n_local > 0 and n_sel < nv:
        # Bucketed top-k over the non-local prefix; the forced window (score +inf) first.
        for t in range(n_local):
            sel[t] = n_rest + t
        bucketed_topk_row(
            score[:n_rest], n_sel - n_local, min(nb, n_rest), kb, interleaved, sel[n_local:]
        )
    else:
        topk_row(score, n_sel, sel)
    for t in range(n_sel):
        sel[t] = valid[sel[t]]
        pos[t] = sel[t]
    for t in range(n_sel, k):
        pos[t] = -1
    # Step 5: alpha.
    for h in range(G):
        if reallocate:
            acc = 0.0
            for t in range(n_sel):
                acc += math.exp(s[h, sel[t]] - smax[h])
            alpha[h] = acc / ssum[h]
        else:
            alpha[h] = 1.0
    # Steps 7-8.
    scale = 1.0 / math.sqrt(d)
    for h in range(G):
        _softmax_attend_row(qg[h], K, V, sel, n_sel, scale, y[h])
        for c in range(d):
            out[h, c] = alpha[h] * y[h, c] + (1.0 - alpha[h]) * vmean[c]


@njit_parallel
def _sparq_kernel(
    q, K, V, mask, r, k, local_window, temp_code, probs, reallocate, per, vmean,
    nb, kb, interleaved, out, comps, s, pos, alpha, y, tau,
):  # fmt: skip
    B, H, d = q.shape
    Hkv = K.shape[1]
    g = H // Hkv
    G = H // per
    for row in prange(B * G):
        b = row // G
        grp = row % G
        h0 = grp * per
        kv = h0 // g
        _sparq_group_row(
            q[b, h0 : h0 + per], K[b, kv], V[b, kv], mask[b], r, k, local_window, temp_code,
            probs, reallocate, vmean[b, kv], nb, kb, interleaved, out[b, h0 : h0 + per],
            comps[b, grp],
            s[b, h0 : h0 + per], pos[b, grp], alpha[b, h0 : h0 + per], y[b, h0 : h0 + per],
            tau[b, h0 : h0 + per],
        )  # fmt: skip


@njit_parallel
def _masked_mean_kernel(V, mask, out):
    B, Hkv, S, d = V.shape
    for row in prange(B * Hkv):
        b = row // Hkv
        kv = row % Hkv
        n = 0
        for c in range(d):
            out[b, kv, c] = 0.0
        for j in range(S):
            if mask[b, j]:
                n += 1
                for c in range(d):
                    out[b, kv, c] += V[b, kv, j, c]
        for c in range(d):
            out[b, kv, c] /= n


def masked_mean_naive(v_cache: np.ndarray, mask: np.ndarray, pr=TRUTH) -> np.ndarray:
    """Mean of V over the valid positions: (B, Hkv, S, d), (B, S) -> (B, Hkv, d) float64.

    Accumulated in ``pr.acc`` and stored with ``pr.store`` (identity for the float64 truth)."""
    valid = mask[:, None, :, None]
    total = np.where(valid, np.asarray(v_cache).astype(pr.acc), 0).sum(axis=2)
    return pr.store(total / valid.sum(axis=2).astype(pr.acc)).astype(np.float64)


def _store_checked(pr, name, x, mask):
    """Round ``x`` to the emulated dtype; a valid entry that overflows it is an error (masked
    slots may overflow: they are never read)."""
    y = pr.store(x).astype(np.float64)
    bad = ~np.isfinite(y)
    if mask is not None:
        bad &= mask[:, None, :, None]
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: value {x[idx]:.6g} at index {idx} overflows {pr.name}; it cannot be"
            f" stored in the emulated precision"
        )
    return y


def _finite_result(out: np.ndarray, precision: str) -> np.ndarray:
    """Finite inputs can still overflow the logits (|q . k| beyond the dtype's range)."""
    if not np.isfinite(out).all():
        raise ValueError(
            f"q, k_cache: the attention logits overflow {precision} (|q . k| is too large for"
            " the dtype); scale q or k_cache down"
        )
    return out


def _check(
    q, k_cache, v_cache, mask, r, k, local_window, reallocate, temperature, group_score,
    selection, v_mean, topk, num_buckets, k_per_bucket, interleaved, naive=True, pr=TRUTH,
):  # fmt: skip
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    if pr.name != "float64":  # storage in the emulated dtype
        q = _store_checked(pr, "q", q, None)
        K = _store_checked(pr, "k_cache", K, mask)
        V = _store_checked(pr, "v_cache", V, mask)
    r = as_int("r", r, lo=1, hi=d, hi_name="the head dim d")
    k = as_int("k", k, lo=1)
    local_window = as_int("local_window", local_window, lo=0, hi=k, hi_name="k")
    if not isinstance(reallocate, (bool, np.bool_)):
        raise TypeError(f"reallocate: expected a bool, got {type(reallocate).__name__}")
    as_choice("temperature", temperature, TEMPERATURES)
    as_choice("group_score", group_score, GROUP_SCORES)
    as_choice("selection", selection, SELECTIONS)
    if v_mean is None:
        v_mean = masked_mean_naive(V, mask, pr) if naive else None
    else:
        v_mean = pr.store(as_float_array("v_mean", v_mean, 3)).astype(np.float64)
        if v_mean.shape != (B, Hkv, d):
            raise ValueError(
                f"v_mean: expected shape (B, Hkv, d) = {(B, Hkv, d)}, got {v_mean.shape}"
            )
    as_choice("topk", topk, TOPKS)
    bucketed = None
    if topk == "bucketed":
        if num_buckets is None:
            raise ValueError('num_buckets: required with topk="bucketed" (e.g. k - local_window)')
        nb = as_int("num_buckets", num_buckets, lo=1)
        kb = as_int("k_per_bucket", k_per_bucket, lo=1)
        if nb * kb < k - local_window:
            raise ValueError(
                f"num_buckets * k_per_bucket: expected >= k - local_window = {k - local_window}"
                f" (the non-local positions to select), got {nb} * {kb} = {nb * kb}"
            )
        if not isinstance(interleaved, (bool, np.bool_)):
            raise TypeError(f"interleaved: expected a bool, got {type(interleaved).__name__}")
        bucketed = (nb, kb, bool(interleaved))
    elif num_buckets is not None or k_per_bucket != 1 or interleaved is not True:
        raise ValueError(
            f"num_buckets, k_per_bucket, interleaved: only used with topk='bucketed', got"
            f" topk={topk!r} with num_buckets={num_buckets!r}, k_per_bucket={k_per_bucket!r},"
            f" interleaved={interleaved!r}"
        )
    return q, K, V, mask, r, k, local_window, v_mean, bucketed


def sparq_attention(
    q,
    k_cache,
    v_cache,
    *,
    r: int,
    k: int,
    local_window: int = 0,
    mask=None,
    reallocate: bool = True,
    return_steps: bool = False,
    temperature: str = "l1",
    group_score: str = "logits",
    selection: str = "group",
    v_mean=None,
    topk: str = "exact",
    num_buckets: int | None = None,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    precision: str = "float64",
    impl: str | None = None,
) -> np.ndarray | SparqSteps:
    """SparQ Attention for one decode step (float64 truth, Ribar et al. 2024, Alg. 1).

    Parameters
    ----------
    q : ndarray, shape (B, H, d)
        Queries of the token being generated (post-RoPE), float16/32/64.
    k_cache, v_cache : ndarray, shape (B, Hkv, S, d)
        Caches including the current token at the last valid position; ``H % Hkv == 0``.
    r : int
        Query components kept, ``1 <= r <= d``.
    k : int
        Positions kept in total (paper counting), ``k >= 1``; if ``k`` is at least the number of
        valid positions, every valid position is kept.
    local_window : int
        Most recent valid positions always kept (the current token counts), ``0 <= l <= k``.
    mask : ndarray of bool, shape (B, S), optional
        True = attend.  Masked positions may hold any finite values.
    reallocate : bool
        Mix in ``v_mean`` with weight ``1 - alpha`` (Alg. 1 line 8); False means alpha = 1.
    return_steps : bool
        Return a :class:`SparqSteps` with every intermediate instead of ``out`` alone.
    temperature : {"l1", "sqrt_d", "sqrt_r"}
        ``tau_h``: ``sqrt(d * L1 coverage)`` (evaluation code), ``sqrt(d)`` or ``sqrt(r)``.
    group_score : {"logits", "probs"}
        Sum over the group of approximate logits (evaluation code) or of their softmax
        probabilities (paper App. B).  Identical selections for g = 1.
    selection : {"group", "head"}
        One i1/i2 per KV head shared by its g query heads, or one per query head.
    v_mean : ndarray, shape (B, Hkv, d), optional
        Caller-supplied mean value (e.g. a running mean); default: masked mean of V.
    topk : {"exact", "bucketed"}
        Step 4's top-k. ``"bucketed"`` keeps the forced local window and chooses the other
        ``k - local_window`` positions with :func:`reference.bucketed_topk` over the
        non-local valid positions in index order (Key et al. 2024, applied to SparQ).
    num_buckets, k_per_bucket, interleaved
        Bucketed top-k parameters (``num_buckets * k_per_bucket >= k - local_window``). A row
        with fewer non-local valid positions ``n'`` than buckets uses ``n'`` buckets of one
        (the same result as empty buckets: exact).
    precision : {"float64", "float32", "float16", "bfloat16"}
        ``"float64"`` is the truth. The others emulate a naive implementation in that dtype
        (see :func:`sparq_attention_naive`); emulation runs on the NumPy twin.
    impl : {"numba", "naive"}, optional
        The Numba-parallel kernel (default for float64) or the NumPy twin (always used for an
        emulated precision).

    Returns
    -------
    out : ndarray of float64, shape (B, H, d), or :class:`SparqSteps` if ``return_steps``.
    """
    as_choice("precision", precision, PRECISIONS)
    if impl is None:
        impl = "numba" if precision == "float64" else "naive"
    as_choice("impl", impl, IMPLS)
    if impl == "numba" and precision != "float64":
        raise ValueError(
            f"impl: the Numba kernel computes the float64 truth only; emulating"
            f" precision={precision!r} needs impl='naive' (or leave impl unset), got impl='numba'"
        )
    if impl == "naive":
        steps = sparq_attention_naive(
            q, k_cache, v_cache, r=r, k=k, local_window=local_window, mask=mask,
            reallocate=reallocate, temperature=temperature, group_score=group_score,
            selection=selection, v_mean=v_mean, topk=topk, num_buckets=num_buckets,
            k_per_bucket=k_per_bucket, interleaved=interleaved, precision=precision,
        )  # fmt: skip
        return steps if return_steps else steps.out
    q, K, V, mask, r, k, local_window, v_mean, bucketed = _check(
        q, k_cache, v_cache, mask, r, k, local_window, reallocate, temperature, group_score,
        selection, v_mean, topk, num_buckets, k_per_bucket, interleaved, naive=False,
    )  # fmt: skip
    nb, kb, inter = bucketed if bucketed is not None else (0, 1, True)
    B, H, d = q.shape
    Hkv, S = K.shape[1], K.shape[2]
    if v_mean is None:
        v_mean = np.empty((B, Hkv, d))
        _masked_mean_kernel(V, mask, v_mean)
    per = H // Hkv if selection == "group" else 1
    G = H // per
    out = np.empty((B, H, d))
    y = np.empty((B, H, d))
    comps = np.empty((B, G, r), dtype=np.int64)
    s = np.empty((B, H, S))
    pos = np.empty((B, G, k), dtype=np.int64)
    alpha = np.empty((B, H))
    tau = np.empty((B, H))
    _sparq_kernel(
        q, K, V, mask, r, k, local_window, _TEMP_CODE[temperature], group_score == "probs",
        bool(reallocate), per, v_mean, nb, kb, inter, out, comps, s, pos, alpha, y, tau,
    )  # fmt: skip
    _finite_result(out, "float64")
    if not return_steps:
        return out
    return SparqSteps(out, comps, s, pos, alpha, v_mean, y, tau)
