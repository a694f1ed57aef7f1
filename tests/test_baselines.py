import math

import numpy as np
import pytest

from reference import dense_attention, sparq_attention
from reference.baselines import (
    flexgen_topk_attention,
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
    with pytest.raises(ValueError, match="sink: expected an int <= 6"):
        lm_infinite_attention(q, K, V, k=6, sink=7)
