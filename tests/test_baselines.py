import math

import numpy as np
import pytest

from reference import dense_attention, sparq_attention
from reference.baselines import (
    flexgen_topk_attention,
    h2o_decode,
    h2o_prefill_scores,
    lm_infinite_attention,
    oracle_topk_attention,
)
from tests._cases import random_case

BASELINES = [oracle_topk_attention, flexgen_topk_attention, lm_infinite_attention]


@pytest.mark.parametrize("fn", BASELINES)
def test_keeping_everything_equals_dense(fn):
    q, K, V, mask = random_case(30, B=2, H=4, Hkv=2, S=23, d=8)
    np.testing.assert_allclose(
        fn(q, K, V, k=23, mask=mask), dense_attention(q, K, V, mask=mask), rtol=1e-12, atol=1e-14
    )


def test_oracle_equals_sparq_with_all_components_per_head_no_reallocation():
    # r = d makes SparQ's approximate logits exact, so its per-head top-k is the oracle's.
    q, K, V, mask = random_case(31, B=2, H=6, Hkv=3, S=40, d=8)
    out, pos = oracle_topk_attention(q, K, V, k=7, mask=mask, return_positions=True)
    st = sparq_attention(q, K, V, r=8, k=7, mask=mask, selection="head", reallocate=False,
                         return_steps=True)  # fmt: skip
    np.testing.assert_array_equal(pos, st.positions)
    np.testing.assert_allclose(out, st.out, rtol=1e-12)


def test_flexgen_hand_case():
    # d = 1, q = 1, keys 0, ln 2, ln 4 -> weights 1/7, 2/7, 4/7; k = 2 keeps 4/7 and 2/7 of V.
    q = np.array([[[1.0]]])
    K = np.array([[[[0.0], [math.log(2)], [math.log(4)]]]])
    V = np.array([[[[7.0], [14.0], [21.0]]]])
    out, pos = flexgen_topk_attention(q, K, V, k=2, return_positions=True)
    assert pos[0, 0].tolist() == [2, 1]
    assert out[0, 0, 0] == pytest.approx(4 / 7 * 21 + 2 / 7 * 14, rel=1e-14)
    oracle = oracle_topk_attention(q, K, V, k=2)
    assert oracle[0, 0, 0] == pytest.approx((4 * 21 + 2 * 14) / 6, rel=1e-14)


def test_lm_infinite_positions_with_left_padding():
    q, K, V, _ = random_case(32, B=1, H=2, Hkv=1, S=30, d=4)
    mask = np.zeros((1, 30), dtype=bool)
    mask[0, 5:] = True  # valid positions 5..29
    _, pos = lm_infinite_attention(q, K, V, k=6, sink=2, mask=mask, return_positions=True)
    assert pos[0, 0].tolist() == [5, 6, 26, 27, 28, 29]
    with pytest.raises(ValueError, match="sink: expected an int <= k = 6"):
        lm_infinite_attention(q, K, V, k=6, sink=7)


def _causal_dense(q_steps, K, V, prompt_len, mask):
    T = q_steps.shape[0]
    return np.stack([
        dense_attention(q_steps[t], K[:, :, : prompt_len + t + 1], V[:, :, : prompt_len + t + 1],
                        mask=mask[:, : prompt_len + t + 1])
        for t in range(T)
    ])  # fmt: skip


def test_h2o_keeping_everything_equals_causal_dense():
    rng = np.random.default_rng(33)
    T, P = 4, 9
    q_steps = rng.normal(size=(T, 2, 4, 8))
    _, K, V, mask = random_case(33, B=2, H=4, Hkv=2, S=P + T, d=8)
    mask[:, P:] = True  # generated tokens are valid
    out, kept = h2o_decode(q_steps, K, V, k=P + T, local_window=1, prompt_len=P, mask=mask)
    np.testing.assert_allclose(out, _causal_dense(q_steps, K, V, P, mask), rtol=1e-12, atol=1e-14)
    for t in range(T):
        visible = mask[:, None, :] & (np.arange(P + T) <= P + t)
        np.testing.assert_array_equal(kept[t], np.broadcast_to(visible, kept[t].shape))


def test_h2o_eviction_is_permanent_local_window_kept_budget_respected():
    rng = np.random.default_rng(34)
    T, P, k, lw = 6, 20, 7, 3
    q_steps = rng.normal(size=(T, 2, 4, 8))
    _, K, V, mask = random_case(34, B=2, H=4, Hkv=2, S=P + T, d=8)
    mask[:, P:] = True
    prefill = rng.random((2, 2, P))
    _, kept = h2o_decode(q_steps, K, V, k=k, local_window=lw, prompt_len=P,
                         prefill_scores=prefill, mask=mask)  # fmt: skip
    for t in range(T):
        for b in range(2):
            valid = np.flatnonzero(mask[b, : P + t + 1])
            for kv in range(2):
                now = set(np.flatnonzero(kept[t, b, kv]).tolist())
                assert len(now) == min(k, len(valid))
                assert set(valid[-lw:].tolist()) <= now
                if t > 0:  # nothing comes back: kept now is within kept before plus the new token
                    assert now <= set(np.flatnonzero(kept[t - 1, b, kv]).tolist()) | {P + t}


def test_h2o_hand_case():
    # d = 1, q = 1. Prompt keys 0, 0, 0 with prefill scores 0.5, 0.1, 0.4; generated keys ln 4
    # (position 3) and 0 (position 4). Step 0 (p = 3), k = 2, window 1: keep {3, 0} (0.5 beats
    # 0.4 and 0.1), evict 1 and 2 for good; weights over {0, 3}: 1/5, 4/5. Step 1 (p = 4):
    # cumulative 0.5 + 0.2 = 0.7 for position 0 and 0.8 for position 3 -> keep {4, 3}.
    q_steps = np.ones((2, 1, 1, 1))
    K = np.array([0.0, 0.0, 0.0, math.log(4), 0.0]).reshape(1, 1, 5, 1)
    V = np.array([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 5, 1)
    out, kept = h2o_decode(q_steps, K, V, k=2, local_window=1, prompt_len=3,
                           prefill_scores=np.array([[[0.5, 0.1, 0.4]]]))  # fmt: skip
    assert np.flatnonzero(kept[0, 0, 0]).tolist() == [0, 3]
    assert np.flatnonzero(kept[1, 0, 0]).tolist() == [3, 4]
    assert out[0, 0, 0, 0] == pytest.approx(1 / 5 * 1 + 4 / 5 * 4, rel=1e-14)
    assert out[1, 0, 0, 0] == pytest.approx((4 * 4 + 1 * 5) / 5, rel=1e-14)


def test_h2o_prefill_scores_hand_case():
    # Prompt of 2, d = 1, q = 1, keys 0 and ln 3: query 0 sees only position 0 (weight 1);
    # query 1 weights 1/4, 3/4. Two heads in one KV group, the second with q = 0 (uniform
    # weights 1/2, 1/2), averaged over the group.
    q_prompt = np.array([[[[1.0], [1.0]], [[0.0], [0.0]]]])  # (B=1, H=2, P=2, d=1)
    K = np.array([0.0, math.log(3)]).reshape(1, 1, 2, 1)
    scores = h2o_prefill_scores(q_prompt, K, prompt_len=2)
    np.testing.assert_allclose(scores[0, 0], [(1 + 0.25 + 1 + 0.5) / 2, (0.75 + 0.5) / 2],
                               rtol=1e-14)  # fmt: skip


def test_h2o_bad_input():
    q = np.zeros((2, 1, 1, 4))
    K = np.zeros((1, 1, 5, 4))
    with pytest.raises(ValueError, match="local_window: expected an int >= 1"):
        h2o_decode(q, K, K, k=2, local_window=0, prompt_len=3)
    with pytest.raises(ValueError, match="prompt_len: expected an int <= 3"):
        h2o_decode(q, K, K, k=2, local_window=1, prompt_len=4)
    with pytest.raises(ValueError, match="prefill_scores: expected shape"):
        h2o_decode(q, K, K, k=2, local_window=1, prompt_len=3, prefill_scores=np.zeros((1, 1, 2)))
