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


# ------------------------------------------------ parts of DENSE_PART positions per row
# The kernel attends each row in parts of DENSE_PART (4096) positions and combines them; the
# twin does not split. These cases put positions in several parts.
def test_part_length_is_4096():
    from reference.dense import DENSE_PART

    assert DENSE_PART == 4096  # the cases below place values by it


def test_hand_computed_across_parts():
    # d = 1, q = 2: keys 0 on part 0 (positions 0..4095) and ln(3)/2 on part 1 (4096..8191):
    # logits 0 and ln 3, so each part-1 position weighs 3 times a part-0 one; V = 4 and 8:
    # out = (4096 * 4 + 3 * 4096 * 8) / (4 * 4096) = 7.
    q = np.array([[[2.0]]])
    K = np.zeros((1, 1, 8192, 1))
    K[0, 0, 4096:] = math.log(3) / 2
    V = np.full((1, 1, 8192, 1), 4.0)
    V[0, 0, 4096:] = 8.0
    assert dense_attention(q, K, V)[0, 0, 0] == pytest.approx(7.0, rel=1e-13)
    # part 1's logits 1000 below part 0's: its weight exp(-1000) is 0 in float64, and the
    # output is part 0's values exactly (the twin agrees)
    K[0, 0, 4096:] = -500.0
    assert dense_attention(q, K, V)[0, 0, 0] == 4.0
    assert dense_attention_twin(q, K, V)[0, 0, 0] == 4.0


@pytest.mark.parametrize("S", [4097, 3 * 4096 + 5])
def test_kernel_matches_twin_across_parts(S):
    q, K, V, mask = random_case(21, 2, 4, 2, S, 8, holes=True)
    np.testing.assert_allclose(
        dense_attention(q, K, V, mask=mask), dense_attention_twin(q, K, V, mask), rtol=1e-12,
        atol=1e-13,
    )  # fmt: skip


def test_one_used_part_is_that_part_alone():
    # Only positions of part 1 valid: the row's output is that part's attention as it is,
    # bit for bit the call on the cache cut down to part 1's positions (one part there too).
    q, K, V, _ = random_case(22, 1, 4, 2, 3 * 4096, 8)
    mask = np.zeros((1, 3 * 4096), dtype=bool)
    mask[0, 4096 + 7 : 8192 : 3] = True
    part = slice(4096, 8192)
    np.testing.assert_array_equal(
        dense_attention(q, K, V, mask=mask),
        dense_attention(q, K[:, :, part], V[:, :, part], mask=mask[:, part]),
    )


def test_parts_bit_identical_across_thread_counts():
    import numba

    from reference import get_num_threads, set_num_threads

    q, K, V, mask = random_case(23, 1, 8, 2, 2 * 4096 + 300, 16, holes=True)
    before = get_num_threads()
    runs = []
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS),
                         numba.config.NUMBA_NUM_THREADS}):  # fmt: skip
            set_num_threads(n)
            runs.append(dense_attention(q, K, V, mask=mask))
    finally:
        set_num_threads(before)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("masked", [False, True])
def test_nonfinite_in_a_later_part_is_named(masked):
    # a NaN in part 2 of row (0, kv 1), at a valid position or (check_finite) a masked one
    q, K, V, _ = random_case(24, 1, 4, 2, 3 * 4096, 8)
    mask = np.ones((1, 3 * 4096), dtype=bool)
    j = 2 * 4096 + 11
    V[0, 1, j, 3] = np.nan
    if masked:
        mask[0, j] = False
    with pytest.raises(
        ValueError, match=rf"v_cache: contains NaN \(first at index \(0, 1, {j}, 3\)\)"
    ):
        dense_attention(q, K, V, mask=mask)
    if masked:  # not read without the check: the valid positions give the output
        out = dense_attention(q, K, V, mask=mask, check_finite=False)
        V0 = V.copy()
        V0[0, 1, j, 3] = 0.0  # (the twin rejects NaN anywhere; masked, it has no influence)
        np.testing.assert_allclose(out, dense_attention_twin(q, K, V0, mask), rtol=1e-12,
                                   atol=1e-13)  # fmt: skip


def test_overflow_of_the_combined_parts_is_reported():
    # V at the float64 maximum in three parts (one valid position each): each part's output
    # is that maximum, and their convex combination, rounded, can exceed it. The call must
    # report it as the one-part call does, not return inf. (Weights for which it overflows
    # here: logits 0, -1.7436..., -0.4751... from K with q = 1, d = 1.)
    big = np.finfo(np.float64).max
    S = 3 * 4096
    q = np.ones((1, 1, 1))
    K = np.zeros((1, 1, S, 1))
    V = np.full((1, 1, S, 1), big)
    mask = np.zeros((1, S), dtype=bool)
    pos = [4095, 8191, 12287]
    mask[0, pos] = True
    K[0, 0, pos, 0] = [0.0, -1.7436120513360094, -0.4751486107644167]
    try:
        out = dense_attention(q, K, V, mask=mask)
    except ValueError as err:
        assert "v_cache: the attention output overflows float64" in str(err)
    else:  # no overflow on this host's rounding: then the output is the maximum itself
        assert np.isfinite(out).all() and out[0, 0, 0] == pytest.approx(big, rel=1e-15)
    # the same positions in one part (the cache cut to 3 rows) are reported or finite too
    Kc, Vc = K[:, :, pos], V[:, :, pos]
    try:
        out1 = dense_attention(q, Kc, Vc)
    except ValueError as err:
        assert "overflows float64" in str(err)
    else:
        assert np.isfinite(out1).all()


def test_logit_overflow_in_a_later_part_is_reported():
    # q . k overflows float64 at one valid position of part 2 only
    q, K, V, _ = random_case(25, 1, 4, 2, 3 * 4096, 8)
    K[0, 1, 2 * 4096 + 5] = 1e300
    q[0, 2:] = 1e300  # the query heads of KV head 1
    with pytest.raises(ValueError, match=r"the attention logits overflow float64"):
        dense_attention(q, K, V)


def test_empty_middle_part():
    # part 1 (positions 4096..8191) fully masked between two used parts
    q, K, V, _ = random_case(26, 2, 4, 2, 3 * 4096 - 7, 8)
    mask = np.ones((2, 3 * 4096 - 7), dtype=bool)
    mask[:, 4096:8192] = False
    np.testing.assert_allclose(
        dense_attention(q, K, V, mask=mask), dense_attention_twin(q, K, V, mask), rtol=1e-12,
        atol=1e-13,
    )  # fmt: skip
