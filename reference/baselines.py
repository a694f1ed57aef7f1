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
- :func:`h2o_decode` (with :func:`h2o_prefill_scores`): H2O heavy-hitter eviction, stateful
  across decode steps, as the public evaluation code's ``eviction_attention.py``
  (``strategy="sum_weight"``) does it.
"""

from __future__ import annotations

import math

import numpy as np

from reference._checks import (
    as_bool,
    as_float_array,
    as_int,
    check_attention_inputs,
    check_logit_range,
)
from reference.selection import topk_row_twin
from reference.sparq import _softmax  # the float64 twin's softmax, one for both


def _exact_logits(qh, Kh, valid):
    return Kh[valid] @ qh / math.sqrt(qh.shape[0])


def _run(q, k_cache, v_cache, mask, k, choose):
    """Apply ``choose(logits, valid) -> (chosen positions into valid, weights)`` per head."""
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    k = as_int("k", k, lo=1)
    g = H // Hkv
    out = np.empty((B, H, d))
    positions = np.full((B, H, min(k, S)), -1, dtype=np.int64)  # at most S can be kept
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for h in range(H):
            logits = _exact_logits(q[b, h], K[b, h // g], valid)
            chosen, w = choose(logits, min(k, valid.shape[0]))
            positions[b, h, : chosen.shape[0]] = valid[chosen]
            out[b, h] = w @ V[b, h // g][valid[chosen]]
    return out, positions


def oracle_topk_attention(q, k_cache, v_cache, *, k: int, mask=None, return_positions=False):
    """Exact top-k attention: softmax over the k highest exact scores only (renormalised).

    Returns ``out (B, H, d)`` float64, and ``positions (B, H, min(k, S))`` (score descending,
    ties to the lower index, -1 in unused slots) if ``return_positions``.
    """

    def choose(logits, n):
        chosen = topk_row_twin(logits, n)
        return chosen, _softmax(logits[chosen])

    return_positions = as_bool("return_positions", return_positions)
    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out


def flexgen_topk_attention(q, k_cache, v_cache, *, k: int, mask=None, return_positions=False):
    """FlexGen top-k: softmax over all valid positions, keep the k largest weights unnormalised.

    The kept weights sum to less than 1, so the output shrinks towards 0 (paper App. E).
    """

    def choose(logits, n):
        chosen = topk_row_twin(logits, n)
        return chosen, _softmax(logits)[chosen]

    return_positions = as_bool("return_positions", return_positions)
    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out


def lm_infinite_attention(
    q, k_cache, v_cache, *, k: int, sink: int = 16, mask=None, return_positions=False
):
    """LM-Infinite / StreamingLLM: the first ``sink`` valid positions and the most recent
    ``k - sink`` (renormalised softmax over them). ``0 <= sink <= k``; with ``k >=`` the number
    of valid positions every valid position is kept. Positions are returned in index order."""
    k = as_int("k", k, lo=1)
    sink = as_int("sink", sink, lo=0, hi=k, hi_name="k")

    def choose(logits, n):
        nv = logits.shape[0]
        chosen = (
            np.arange(nv) if n >= nv else np.r_[np.arange(sink), np.arange(nv - (n - sink), nv)]
        )
        return chosen, _softmax(logits[chosen])

    return_positions = as_bool("return_positions", return_positions)
    out, pos = _run(q, k_cache, v_cache, mask, k, choose)
    return (out, pos) if return_positions else out


def h2o_prefill_scores(q_prompt, k_cache, *, prompt_len: int, mask=None) -> np.ndarray:
    """Cumulative attention weight of each prompt position after the prefill (H2O's score).

    ``q_prompt (B, H, P, d)`` are the prompt's queries (``P = prompt_len``), ``k_cache (B, Hkv,
    S, d)`` with the prompt at positions ``0..P-1``. Causal softmax attention of every prompt
    query; the weights are averaged over the g heads of a KV group and summed over queries
    (evaluation code: ``weights.mean(group).sum(queries)``). Returns ``(B, Hkv, P)`` float64.
    """
    q_prompt = as_float_array("q_prompt", q_prompt, 4)  # dtype, rank and NaN/inf, named
    B, H, P, d = q_prompt.shape
    if P == 0:
        raise ValueError(
            f"q_prompt: expected at least one prompt query (P >= 1), got shape {q_prompt.shape}"
        )
    _, K, _, mask, _, _, Hkv, S, _ = check_attention_inputs(
        q_prompt[:, :, 0], k_cache, k_cache, mask
    )
    check_logit_range(q_prompt, K, mask)  # every query, not only the first
    if P != as_int("prompt_len", prompt_len, lo=1, hi=S):
        raise ValueError(f"q_prompt: expected P = prompt_len = {prompt_len} queries, got {P}")
    g = H // Hkv
    scores = np.zeros((B, Hkv, P))
    for b in range(B):
        for h in range(H):
            for t in range(P):
                if not mask[b, t]:
                    continue  # a padding query contributes nothing
                valid = np.flatnonzero(mask[b, : t + 1])
                w = _softmax(_exact_logits(q_prompt[b, h, t], K[b, h // g], valid))
                scores[b, h // g, valid] += w / g
    return scores


def h2o_decode(
    q_steps,
    k_cache,
    v_cache,
    *,
    k: int,
    local_window: int,
    prompt_len: int,
    prefill_scores=None,
    mask=None,
):
    """H2O (Zhang et al. 2023) over ``T`` decode steps, with permanent eviction.

    Step ``t`` generates the token at position ``p = prompt_len + t`` and attends to positions
    ``<= p`` that are valid and not yet evicted. Before attending, each (batch, KV head) keeps
    the top-``k`` of its live positions by cumulative attention weight, with the
    ``local_window`` most recent valid positions (the current token included) forced in;
    everything else is evicted for good. The step's attention weights (renormalised over the
    kept positions, averaged over the KV group) are then added to the cumulative scores.
    Counting of ``k`` and ``local_window`` is the paper's (the evaluation code's
    ``Settings(k=K, local_k=L)`` is ``k=K+1, local_window=L+1`` here), so ``local_window >= 1``
    (the current token is always attended, as in the evaluation code). Ties keep the lower
    index.

    Parameters
    ----------
    q_steps : (T, B, H, d) queries of the generated tokens.
    k_cache, v_cache : (B, Hkv, S, d) with ``S >= prompt_len + T``.
    prefill_scores : (B, Hkv, prompt_len), optional
        Cumulative scores after the prefill (:func:`h2o_prefill_scores`); default zeros.
    mask : (B, S) bool, optional (left padding of the prompt).

    Returns
    -------
    out : (T, B, H, d) float64
    kept : (T, B, Hkv, S) bool, the positions attended at each step
    """
    q_steps = as_float_array("q_steps", q_steps, 4)
    T = q_steps.shape[0]
    if T == 0:
        raise ValueError(
            f"q_steps: expected at least one decode step (T >= 1), got shape {q_steps.shape}"
        )
    # Shapes, dtypes and finiteness of the caches once (with the first step's queries) ...
    _, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q_steps[0], k_cache, v_cache, mask)
    check_logit_range(q_steps, K, mask)  # ... and the overflow bound over every step
    k = as_int("k", k, lo=1)
    local_window = as_int("local_window", local_window, lo=1, hi=k, hi_name="k")  # current token
    prompt_len = as_int("prompt_len", prompt_len, lo=0, hi=S - T)
    g = H // Hkv
    score = np.zeros((B, Hkv, S))
    if prefill_scores is not None:
        ps = as_float_array("prefill_scores", prefill_scores, 3)
        if ps.shape != (B, Hkv, prompt_len):
            raise ValueError(
                f"prefill_scores: expected shape (B, Hkv, prompt_len) = {(B, Hkv, prompt_len)},"
                f" got {ps.shape}"
            )
        score[:, :, :prompt_len] = ps
    alive = np.ones((B, Hkv, S), dtype=bool)
    out = np.empty((T, B, H, d))
    kept = np.zeros((T, B, Hkv, S), dtype=bool)
    for t in range(T):
        p = prompt_len + t
        for b in range(B):
            valid = np.flatnonzero(mask[b, : p + 1])
            local = valid[len(valid) - min(local_window, len(valid)) :]
            for kv in range(Hkv):
                live = valid[alive[b, kv, valid]]
                key = score[b, kv, live].copy()
                key[np.isin(live, local)] = np.inf
                keep = live[topk_row_twin(key, min(k, len(live)))]
                alive[b, kv, np.setdiff1d(live, keep)] = False
                kept[t, b, kv, keep] = True
                keep = np.sort(keep)
                for h in range(kv * g, (kv + 1) * g):
                    w = _softmax(_exact_logits(q_steps[t, b, h], K[b, kv], keep))
                    out[t, b, h] = w @ V[b, kv, keep]
                    score[b, kv, keep] += w / g
    return out, kept
