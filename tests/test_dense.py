import math

import numpy as np
import pytest

from reference import dense_attention, dense_attention_twin
from tests._cases import random_case


def test_hand_computed_two_positions():
    # d = 1, q = 2, keys 0 and ln(3)/2: logits 0 and ln 3 -> weights 1/4, 3/4; V = 4, 8 -> 7.
    q = np.array([[[2.0]]])
    K = np.array([[[[0.0], [math.log(3) / 2]]]])
    V = np.array([[[[4.0], [8.0]]]])
    for impl in (dense_attention, lambda *a: dense_attention_twin(*a)):
        assert impl(q, K, V)[0, 0, 0] == pytest.approx(7.0, rel=1e-14)


def test_equal_keys_give_mean_of_valid_values():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 3, 4))
    K = np.broadcast_to(rng.normal(size=4), (1, 1, 9, 4)).copy()
    V = rng.normal(size=(1, 1, 9, 4))
    mask = np.array([[False, False, True, True, True, True, True, True, True]])
    out = dense_attention(q, K, V, mask=mask)
    np.testing.assert_allclose(out[0], np.repeat(V[0, 0, 2:].mean(0)[None], 3, 0), rtol=1e-13)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 8, 2, 113, 16), (3, 4, 4, 1, 5)])
def test_kernel_matches_twin(shape):
    B, H, Hkv, S, d = shape
    q, K, V, mask = random_case(2, B, H, Hkv, S, d)
    np.testing.assert_allclose(
        dense_attention(q, K, V, mask=mask), dense_attention_twin(q, K, V, mask), rtol=1e-12,
        atol=1e-13,
    )  # fmt: skip


def test_masked_garbage_has_no_effect():
    q, K, V, mask = random_case(3, 2, 4, 2, 20, 8)
    ref = dense_attention(q, K, V, mask=mask)
    K2, V2 = K.copy(), V.copy()
    K2[~np.broadcast_to(mask[:, None, :, None], K.shape)] = 1e9
    V2[~np.broadcast_to(mask[:, None, :, None], V.shape)] = 1e30
    np.testing.assert_array_equal(dense_attention(q, K2, V2, mask=mask), ref)
