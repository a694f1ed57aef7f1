"""SparQ attention: hand-computed cases, degenerate-case oracles, twin vs kernel."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import dense_attention, sparq_attention, sparq_attention_twin
from reference.selection import topk_row_twin
from tests._cases import random_case

OPTIONS = [
    dict(selection=sel, group_score=gs, reallocate=re, temperature=t)
    for sel in ("group", "head")
    for gs in ("logits", "probs")
    for re in (True, False)
    for t in ("l1", "sqrt_d")
]


def both(*args, **kw):
    """The Numba kernel's and the twin's steps for the same call."""
    return (
        sparq_attention(*args, return_steps=True, **kw),
        sparq_attention(*args, return_steps=True, impl="twin", **kw),
    )


# --- hand-computed -------------------------------------------------------------------------


def test_gqa_hand_case_components_and_logits():
    # Worked by hand: g = 2 heads per KV head, d = 2; sum |q| per group picks the component
    # (group 0: |1|+|-20| = 21 vs |10|+|2| = 12 -> component 0; group 1: 34 vs 43 -> 1).
    q = np.array([[[1.0, 10.0], [-20.0, 2.0], [30.0, 3.0], [4.0, 40.0]]])
    K = np.array([[[[1.0, 10.0]], [[20.0, 2.0]]]])  # (B=1, Hkv=2, S=1, d=2)
    V = np.ones_like(K)
    coverage = np.array([1 / 11, 20 / 22, 3 / 33, 40 / 44])
    tau = np.sqrt(2 * coverage)
    expected = np.array([1.0, -20.0, 6.0, 80.0]) / tau
    for st_ in both(q, K, V, r=1, k=1):
        assert st_.components[0, :, 0].tolist() == [0, 1]
        np.testing.assert_allclose(st_.temperature[0], tau, rtol=1e-15)
        np.testing.assert_allclose(st_.approx_logits[0, :, 0], expected, rtol=1e-15)


def test_hand_case_selection_alpha_and_output():
    # g = 1, d = 2, r = 1, S = 3, k = 1. q = (3, 1): component 0, coverage 3/4, tau = sqrt(1.5).
    q = np.array([[[3.0, 1.0]]])
    K = np.array([[[[1.0, 0.0], [2.0, 5.0], [-1.0, 0.0]]]])
    V = np.array([[[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]]])
    tau = math.sqrt(1.5)
    s = np.array([3.0, 6.0, -3.0]) / tau  # approximate logits
    alpha = math.exp(s[1]) / np.exp(s).sum()
    v_mean = np.array([4.0, 4.0]) / 3
    y = V[0, 0, 1]  # a single selected position: softmax over it is 1
    for st_ in both(q, K, V, r=1, k=1):
        assert st_.positions[0, 0].tolist() == [1]
        np.testing.assert_allclose(st_.approx_logits[0, 0], s, rtol=1e-15)
        assert st_.alpha[0, 0] == pytest.approx(alpha, rel=1e-14)
        np.testing.assert_allclose(st_.v_mean[0, 0], v_mean, rtol=1e-15)
        np.testing.assert_allclose(st_.out[0, 0], alpha * y + (1 - alpha) * v_mean, rtol=1e-14)


def test_zero_coverage_head_gets_zero_logits():
    # Head 1 is zero on the group's component 0 (tau = 0): its approximate logits are 0 at
    # valid positions (documented convention), -inf at masked ones, never NaN.
    q = np.array([[[5.0, 0.0], [0.0, 1.0]]])
    rng = np.random.default_rng(4)
    K = rng.normal(size=(1, 1, 4, 2))
    V = rng.normal(size=(1, 1, 4, 2))
    mask = np.array([[False, True, True, True]])
    for st_ in both(q, K, V, r=1, k=2, mask=mask):
        assert st_.temperature[0, 1] == 0.0
        assert st_.approx_logits[0, 1].tolist() == [-np.inf, 0.0, 0.0, 0.0]
        assert st_.alpha[0, 1] == pytest.approx(2 / 3, rel=1e-14)  # uniform softmax, 2 of 3
        assert np.isfinite(st_.out).all()


# --- oracles from docs/sparq.md -----------------------------------------------------------------


@pytest.mark.parametrize("opts", OPTIONS)
def test_full_rank_full_k_equals_dense(opts):
    q, K, V, mask = random_case(5, B=2, H=6, Hkv=2, S=19, d=8)
    dense = dense_attention(q, K, V, mask=mask)
    for st_ in both(q, K, V, r=8, k=19, mask=mask, **opts):
        np.testing.assert_allclose(st_.out, dense, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(st_.alpha, 1.0, rtol=1e-14)


def test_full_rank_approx_logits_equal_exact_logits():
    q, K, V, mask = random_case(6, B=1, H=4, Hkv=4, S=11, d=16)
    exact = np.einsum("bhd,bhsd->bhs", q, K) / 4.0
    exact[~np.broadcast_to(mask[:, None], exact.shape)] = -np.inf
    for temperature in ("l1", "sqrt_d"):
        for st_ in both(q, K, V, r=16, k=3, mask=mask, temperature=temperature):
            np.testing.assert_allclose(st_.approx_logits, exact, rtol=1e-12, atol=1e-14)


def test_sqrt_r_temperature():
    q, K, V, _ = random_case(7, B=1, H=1, Hkv=1, S=5, d=8, pad=False)
    for st_ in both(q, K, V, r=3, k=2, temperature="sqrt_r"):
        i1 = st_.components[0, 0]
        np.testing.assert_allclose(
            st_.approx_logits[0, 0], K[0, 0][:, i1] @ q[0, 0, i1] / math.sqrt(3), rtol=1e-13
        )


@pytest.mark.parametrize("seed", range(8))
def test_local_window_always_selected_alpha_in_unit_interval(seed):
    rng = np.random.default_rng(seed)
    S = int(rng.integers(5, 60))
    k = int(rng.integers(1, S))
    lw = int(rng.integers(0, k + 1))
    q, K, V, mask = random_case(seed, B=3, H=4, Hkv=1, S=S, d=8, holes=seed % 2 == 1)
    K[..., -1, :] *= 0  # the current token has a poor score, yet it must be kept when lw >= 1
    for st_ in both(q, K, V, r=2, k=k, local_window=lw, mask=mask):
        for b in range(3):
            valid = np.flatnonzero(mask[b])
            local = set(valid[len(valid) - min(lw, len(valid)) :].tolist())
            chosen = set(st_.positions[b, 0].tolist()) - {-1}
            assert local <= chosen
            assert len(chosen) == min(k, len(valid))
            assert chosen <= set(valid.tolist())
        assert ((st_.alpha >= 0) & (st_.alpha <= 1 + 1e-15)).all()


def test_k_at_least_valid_count_takes_all_and_pads_with_minus_one():
    q, K, V, mask = random_case(8, B=2, H=2, Hkv=2, S=10, d=4)
    for st_ in both(q, K, V, r=2, k=12, mask=mask):
        for b in range(2):
            valid = np.flatnonzero(mask[b])
            for g in range(2):
                p = st_.positions[b, g]
                assert sorted(p[: len(valid)].tolist()) == valid.tolist()
                assert (p[len(valid) :] == -1).all()
        np.testing.assert_allclose(st_.alpha, 1.0, rtol=1e-14)


def test_positions_ordered_by_score_then_index():
    q, K, V, mask = random_case(9, B=1, H=1, Hkv=1, S=40, d=8, pad=False)
    st_ = sparq_attention(q, K, V, r=3, k=10, local_window=2, return_steps=True)
    s = st_.approx_logits[0, 0].copy()
    s[-2:] = np.inf
    assert st_.positions[0, 0].tolist() == topk_row_twin(s, 10).tolist()


def test_permutation_invariance_without_local_window():
    q, K, V, mask = random_case(10, B=1, H=4, Hkv=2, S=30, d=8)
    perm = np.random.default_rng(10).permutation(30)
    a = sparq_attention(q, K, V, r=3, k=7, mask=mask, return_steps=True)
    b = sparq_attention(
        q, K[:, :, perm], V[:, :, perm], r=3, k=7, mask=mask[:, perm], return_steps=True
    )
    np.testing.assert_allclose(b.out, a.out, rtol=1e-12)
    for g in range(2):
        assert set(perm[b.positions[0, g]].tolist()) == set(a.positions[0, g].tolist())


@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_masked_garbage_has_no_effect(impl):
    # Masked positions may hold any finite garbage: K filled with 1e9, V with 1e30 there.
    q, K, V, mask = random_case(11, B=3, H=4, Hkv=2, S=25, d=8)
    kw = dict(r=3, k=6, local_window=2, mask=mask, return_steps=True, impl=impl)
    ref = sparq_attention(q, K, V, **kw)
    bad = ~np.broadcast_to(mask[:, None, :, None], K.shape)
    K2, V2 = K.copy(), V.copy()
    K2[bad], V2[bad] = 1e9, 1e30
    got = sparq_attention(q, K2, V2, **kw)
    np.testing.assert_array_equal(got.out, ref.out)
    np.testing.assert_array_equal(got.positions, ref.positions)


def test_left_padding_equals_unpadded_per_row():
    q, K, V, mask = random_case(12, B=3, H=4, Hkv=2, S=31, d=8)
    kw = dict(r=3, k=9, local_window=3, return_steps=True)
    batched = sparq_attention(q, K, V, mask=mask, **kw)
    for b in range(3):
        start = int(np.argmax(mask[b]))
        one = sparq_attention(q[b : b + 1], K[b : b + 1, :, start:], V[b : b + 1, :, start:], **kw)
        np.testing.assert_allclose(batched.out[b], one.out[0], rtol=1e-13, atol=1e-15)
        p = one.positions[0]
        np.testing.assert_array_equal(batched.positions[b], np.where(p >= 0, p + start, -1))


def test_per_head_selection_equals_group_selection_with_repeated_kv():
    q, K, V, mask = random_case(13, B=2, H=6, Hkv=2, S=21, d=8)
    a = sparq_attention(q, K, V, r=2, k=5, local_window=1, mask=mask, selection="head",
                        return_steps=True)  # fmt: skip
    Kr, Vr = np.repeat(K, 3, axis=1), np.repeat(V, 3, axis=1)
    b = sparq_attention(q, Kr, Vr, r=2, k=5, local_window=1, mask=mask, return_steps=True)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.components, b.components)
    np.testing.assert_allclose(a.out, b.out, rtol=1e-13)


def test_probs_and_logits_select_the_same_for_g1():
    q, K, V, mask = random_case(14, B=2, H=3, Hkv=3, S=40, d=8)
    a = sparq_attention(q, K, V, r=2, k=6, mask=mask, group_score="probs", return_steps=True)
    b = sparq_attention(q, K, V, r=2, k=6, mask=mask, group_score="logits", return_steps=True)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_reallocate_false_output_is_y_and_alpha_one():
    q, K, V, mask = random_case(15)
    st_ = sparq_attention(q, K, V, r=2, k=4, mask=mask, reallocate=False, return_steps=True)
    np.testing.assert_array_equal(st_.out, st_.y)
    assert (st_.alpha == 1.0).all()


def test_caller_v_mean():
    q, K, V, mask = random_case(16)
    a = sparq_attention(q, K, V, r=2, k=4, mask=mask, return_steps=True)
    vm = np.random.default_rng(16).normal(size=a.v_mean.shape)
    b = sparq_attention(q, K, V, r=2, k=4, mask=mask, v_mean=vm, return_steps=True)
    g = 2
    expected = a.out + (1 - a.alpha[..., None]) * (np.repeat(vm, g, 1) - np.repeat(a.v_mean, g, 1))
    np.testing.assert_allclose(b.out, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(b.v_mean, vm)


def _eval_code_selection(q, K, mask, r, k_eval, local_k):
    """Transcription of the public evaluation code's counting (ann_attention.py, AnnAttention):
    top-(k+1) of the group-summed scores with the `local_k + 1` most recent valid positions set
    to the dtype's max (the current token "comes for free"). Single batch row, one KV head."""
    valid = np.flatnonzero(mask)
    comps = np.argsort(-np.abs(q).sum(0), kind="stable")[:r]
    cov = np.abs(q[:, comps]).sum(1) / np.abs(q).sum(1)
    scale = np.sqrt(q.shape[1] * cov)
    score = (K[valid][:, comps] @ q[:, comps].T / scale).T  # (g, n_valid)
    causal_index = np.arange(len(valid))[::-1]  # 0 = current token
    score[:, causal_index < local_k + 1] = np.finfo(np.float64).max
    with np.errstate(over="ignore"):  # finfo.max summed over the group overflows to inf
        total = score.sum(0)
    n = min(k_eval + 1, len(valid))
    return set(valid[np.argsort(-total, kind="stable")[:n]].tolist())


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("k_eval,local_k", [(4, 0), (7, 2), (15, 3), (40, 5)])
def test_mapping_to_evaluation_code_counting(k_eval, local_k, holes):
    # evaluation code (k=K, local_k=L) == reference (k=K+1, local_window=L+1)
    q, K, V, mask = random_case(17, B=2, H=2, Hkv=1, S=37, d=8, holes=holes)
    st_ = sparq_attention(q, K, V, r=3, k=k_eval + 1, local_window=local_k + 1, mask=mask,
                          return_steps=True)  # fmt: skip
    for b in range(2):
        expected = _eval_code_selection(q[b], K[b, 0], mask[b], 3, k_eval, local_k)
        assert set(st_.positions[b, 0].tolist()) - {-1} == expected


# --- twin vs kernel --------------------------------------------------------------------------


@given(
    S=st.sampled_from([1, 2, 3, 7, 64, 113, 1023]),
    g=st.integers(1, 8),
    Hkv=st.integers(1, 2),
    d=st.sampled_from([1, 2, 5, 16, 64, 256]),
    data=st.data(),
)
def test_kernel_matches_twin(S, g, Hkv, d, data):
    r = data.draw(st.integers(1, d), label="r")
    k = data.draw(st.integers(1, S + 2), label="k")
    lw = data.draw(st.integers(0, k), label="local_window")
    opts = dict(data.draw(st.sampled_from(OPTIONS), label="opts"))
    if data.draw(st.booleans(), label="bucketed"):
        kb = data.draw(st.integers(1, 3), label="k_per_bucket")
        nb = data.draw(st.integers(max(1, -(-(k - lw) // kb)), S + 3), label="num_buckets")
        opts.update(topk="bucketed", num_buckets=nb, k_per_bucket=kb,
                    interleaved=data.draw(st.booleans(), label="interleaved"))  # fmt: skip
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    q, K, V, mask = random_case(seed, B=2, H=g * Hkv, Hkv=Hkv, S=S, d=d)
    a, b = both(q, K, V, r=r, k=k, local_window=lw, mask=mask, **opts)
    np.testing.assert_array_equal(a.components, b.components)
    if not np.array_equal(a.positions, b.positions):
        # Tie-safe: the kernel sums in another order than the twin's BLAS, so a near-tie at
        # the selection boundary may go either way. Accept it only if every differing
        # position's twin score is within 1e-9 (relative) of one the twin kept, then judge
        # the later steps with the kernel's positions injected into the twin.
        assert_near_tie(b, a.positions, mask, opts.get("group_score", "logits"))
        b = sparq_attention_twin(q, K, V, r=r, k=k, local_window=lw, mask=mask,
                                 inject_positions=a.positions, **opts)  # fmt: skip
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_allclose(a.approx_logits, b.approx_logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.v_mean, b.v_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.out, b.out, rtol=1e-11, atol=1e-12)


def assert_near_tie(twin, positions, mask, group_score):
    """Every position in one selection and not the other scores (by the twin's group score
    over the selection group's heads) within 1e-9 relative of the weakest common choice."""
    B, G, _ = positions.shape
    per = twin.approx_logits.shape[1] // G
    for b in range(B):
        for grp in range(G):
            mine = set(positions[b, grp][positions[b, grp] >= 0].tolist())
            theirs = set(twin.positions[b, grp][twin.positions[b, grp] >= 0].tolist())
            if mine == theirs:
                continue
            s = twin.approx_logits[b, grp * per : (grp + 1) * per][:, mask[b]]
            if group_score == "probs":
                e = np.exp(s - s.max(axis=1, keepdims=True))
                s = e / e.sum(axis=1, keepdims=True)
            score = np.full(mask.shape[1], -np.inf)
            score[mask[b]] = s.sum(axis=0)
            diff = np.array(sorted(mine ^ theirs))
            common = np.array(sorted(mine & theirs - {int(np.flatnonzero(mask[b])[-1])}))
            ref = score[common].min() if common.size else score[diff].max()
            assert np.all(np.abs(score[diff] - ref) <= 1e-9 * max(1.0, abs(ref))), (b, grp)


def test_low_precision_inputs_are_widened_exactly():
    # Widening is exact and the sums run in the same order for both dtypes, so the results
    # agree to rounding. Not asserted bit for bit: the two dtypes run separately compiled
    # specialisations, and when one of them comes from the disk cache of another process
    # LLVM may have compiled a vectorised loop's tail differently (seen: approximate logits
    # 1 ulp apart in the last positions of a block).
    q, K, V, mask = random_case(18, dtype=np.float16)
    a = sparq_attention(q, K, V, r=3, k=5, mask=mask)
    b = sparq_attention(q.astype(np.float64), K.astype(np.float64), V.astype(np.float64), r=3,
                        k=5, mask=mask)  # fmt: skip
    assert a.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_inputs_not_modified():
    q, K, V, mask = random_case(19)
    copies = [x.copy() for x in (q, K, V, mask)]
    sparq_attention(q, K, V, r=3, k=5, local_window=2, mask=mask, return_steps=True)
    for x, c in zip((q, K, V, mask), copies, strict=True):
        np.testing.assert_array_equal(x, c)


def test_bit_identical_across_thread_counts():
    import numba

    from reference import get_num_threads, set_num_threads

    q, K, V, mask = random_case(20, B=4, H=8, Hkv=4, S=300, d=32)
    before = get_num_threads()
    try:
        set_num_threads(1)
        one = sparq_attention(q, K, V, r=5, k=30, local_window=4, mask=mask, return_steps=True)
        d1 = dense_attention(q, K, V, mask=mask)
        set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = sparq_attention(q, K, V, r=5, k=30, local_window=4, mask=mask, return_steps=True)
        d2 = dense_attention(q, K, V, mask=mask)
    finally:
        set_num_threads(before)
    for name in ("out", "approx_logits", "positions", "alpha", "v_mean"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    np.testing.assert_array_equal(d1, d2)


def test_output_does_not_depend_on_return_steps():
    # Without return_steps the kernel skips ranking the kept positions (it only needs them
    # in index order); alpha and the gathers visit them in index order either way, so the
    # output is the same to the bit. S and k large enough for the top-k's sampled path;
    # padding and holes exercise the compacted positions; K once and K twice.
    from reference import transpose_keys

    q, K, V, mask = random_case(31, B=2, H=8, Hkv=2, S=5000, d=16, holes=True)
    for kw in (dict(r=4, k=640, local_window=32), dict(r=16, k=4000, local_window=0)):
        for kt in (None, transpose_keys(K)):
            st_ = sparq_attention(q, K, V, mask=mask, k_cache_t=kt, return_steps=True, **kw)
            out = sparq_attention(q, K, V, mask=mask, k_cache_t=kt, **kw)
            np.testing.assert_array_equal(out, st_.out)
            # and the ranked positions are a permutation of the kept set of the twin
            tw = sparq_attention_twin(q, K, V, mask=mask, **kw)
            for b in range(2):
                for grp in range(2):
                    assert sorted(st_.positions[b, grp]) == sorted(tw.positions[b, grp])


def test_kernel_params_survive_packing():
    # The parallel kernel takes its parameters as one int64 array; every field, bools
    # included, must come back as it went in (a field order slip would silently change
    # the algorithm).
    from reference.sparq import SparqParams, _unpack_params

    cases = [
        SparqParams.build(d=64, r=5, k=40, local_window=3),
        SparqParams.build(
            d=64,
            r=64,
            k=9,
            reallocate=False,
            temperature="sqrt_r",
            group_score="probs",
            selection="head",
        ),  # fmt: skip
        SparqParams.build(
            d=16,
            r=2,
            k=30,
            local_window=6,
            topk="bucketed",
            num_buckets=8,
            k_per_bucket=3,
            interleaved=False,
        ),  # fmt: skip
    ]
    for p in cases:
        for g in (1, 4):
            kp = p.kernel(g, 100)._replace(phase_limit=3, ordered=False)
            back = _unpack_params(kp.packed())
            assert back == kp
            assert [type(v) for v in back] == [type(v) for v in kp]


# --- bucketed top-k in step 4 (Key et al. 2024 applied to SparQ) ----------------------------


def _nonlocal_scores(st_, mask, b, grp, g, lw):
    """Group-summed approximate logits of the non-local valid positions, in index order."""
    valid = np.flatnonzero(mask[b])
    s = st_.approx_logits[b, grp * g : (grp + 1) * g][:, valid].sum(0)
    n_local = min(lw, len(valid))
    return valid[: len(valid) - n_local], s[: len(valid) - n_local], valid[len(valid) - n_local :]


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("kb", [1, 2])
def test_bucketed_selection_is_bucketed_topk_of_nonlocal_scores(interleaved, kb):
    from reference.selection import bucketed_topk

    q, K, V, mask = random_case(21, B=3, H=4, Hkv=2, S=90, d=8)
    k, lw, nb = 20, 4, 9 if kb == 2 else 16
    kw = dict(r=3, k=k, local_window=lw, mask=mask, topk="bucketed",
              num_buckets=nb, k_per_bucket=kb, interleaved=interleaved)  # fmt: skip
    for st_ in both(q, K, V, **kw):
        for b in range(3):
            for grp in range(2):
                pos, score, local = _nonlocal_scores(st_, mask, b, grp, 2, lw)
                n_sel = min(k, len(pos) + len(local))
                if n_sel >= len(pos) + len(local):
                    continue
                _, idx = bucketed_topk(score, n_sel - len(local), num_buckets=min(nb, len(pos)),
                                       k_per_bucket=kb, interleaved=interleaved)  # fmt: skip
                expected = local.tolist() + pos[idx].tolist()
                assert st_.positions[b, grp, :n_sel].tolist() == expected


def test_bucketed_degenerate_cases_equal_exact():
    q, K, V, mask = random_case(22, B=2, H=4, Hkv=2, S=60, d=8)
    exact = sparq_attention(q, K, V, r=3, k=12, local_window=2, mask=mask, return_steps=True)
    for nb, kb in [(60, 1), (1, 10), (200, 1)]:  # buckets of one element; one bucket, k_b = k'
        st_ = sparq_attention(q, K, V, r=3, k=12, local_window=2, mask=mask, return_steps=True,
                              topk="bucketed", num_buckets=nb, k_per_bucket=kb)  # fmt: skip
        np.testing.assert_array_equal(st_.positions, exact.positions)
        np.testing.assert_array_equal(st_.out, exact.out)


def test_bucketed_can_miss_what_exact_finds():
    # The two best non-local positions share interleaved bucket 0 of 4: k_b = 1 keeps one.
    q = np.array([[[1.0, 0.0]]])
    K = np.zeros((1, 1, 9, 2))
    K[0, 0, [0, 4], 0] = [5.0, 4.0]  # positions 0 and 4 are both in bucket 0 (b = 4)
    K[0, 0, [1, 2, 3], 0] = [1.0, 2.0, 3.0]
    V = np.zeros_like(K)
    exact = sparq_attention(q, K, V, r=1, k=3, local_window=1, return_steps=True)
    buck = sparq_attention(q, K, V, r=1, k=3, local_window=1, return_steps=True,
                           topk="bucketed", num_buckets=4)  # fmt: skip
    assert exact.positions[0, 0].tolist() == [8, 0, 4]
    assert buck.positions[0, 0].tolist() == [8, 0, 3]


def test_bucketed_parameter_errors():
    q, K, V, mask = random_case(23)
    with pytest.raises(ValueError, match="num_buckets: required"):
        sparq_attention(q, K, V, r=2, k=5, topk="bucketed")
    with pytest.raises(ValueError, match="expected >= k - local_window = 3"):
        sparq_attention(q, K, V, r=2, k=5, local_window=2, topk="bucketed", num_buckets=2)
    with pytest.raises(ValueError, match="only used with topk='bucketed'"):
        sparq_attention(q, K, V, r=2, k=5, num_buckets=4)
    with pytest.raises(ValueError, match="topk: expected one of"):
        sparq_attention(q, K, V, r=2, k=5, topk="approx")


def test_all_zero_query_row_has_unit_coverage_and_zero_logits():
    # Convention (docs/sparq.md): sum |q_h| = 0 -> coverage 1, tau = sqrt(d); logits all 0, so
    # the softmax is uniform and alpha = (number selected) / (number valid).
    q = np.zeros((1, 1, 4))
    rng = np.random.default_rng(24)
    K, V = rng.normal(size=(2, 1, 1, 6, 4))
    mask = np.array([[False, True, True, True, True, True]])
    for st_ in both(q, K, V, r=2, k=2, mask=mask):
        assert st_.temperature[0, 0] == 2.0
        assert st_.approx_logits[0, 0, 1:].tolist() == [0.0] * 5
        assert st_.positions[0, 0].tolist() == [1, 2]  # ties to the lower index
        assert st_.alpha[0, 0] == pytest.approx(2 / 5, rel=1e-14)


def test_hand_case_g2_logit_sum_and_probability_sum_select_differently():
    # d = 1, r = 1, g = 2 with q = +1 and -1: tau = 1 for both heads; keys 0, 1, -2.
    # Logits: head 0 (0, 1, -2), head 1 (0, -1, 2); their sum is 0 everywhere -> a three-way
    # tie, the lower index wins: position 0. Probabilities: softmax(0, 1, -2) +
    # softmax(0, -1, 2) is largest at position 2.
    q = np.array([[[1.0], [-1.0]]])
    K = np.array([[[[0.0], [1.0], [-2.0]]]])
    V = np.array([[[[10.0], [20.0], [30.0]]]])
    z0 = 1 + math.e + math.exp(-2)
    z1 = 1 + math.exp(-1) + math.exp(2)
    assert (
        (1 / z0 + 1 / z1)
        < (math.e / z0 + math.exp(-1) / z1)
        < (math.exp(-2) / z0 + math.exp(2) / z1)
    )
    for st_ in both(q, K, V, r=1, k=1, group_score="logits"):
        assert st_.positions[0, 0].tolist() == [0]
        np.testing.assert_allclose(st_.alpha[0], [1 / z0, 1 / z1], rtol=1e-14)
    for st_ in both(q, K, V, r=1, k=1, group_score="probs"):
        assert st_.positions[0, 0].tolist() == [2]
        np.testing.assert_allclose(st_.alpha[0], [math.exp(-2) / z0, math.exp(2) / z1], rtol=1e-14)
        np.testing.assert_allclose(st_.y[0, :, 0], [30.0, 30.0], rtol=1e-15)
        mean = 20.0
        expected = [a * 30 + (1 - a) * mean for a in (math.exp(-2) / z0, math.exp(2) / z1)]
        np.testing.assert_allclose(st_.out[0, :, 0], expected, rtol=1e-14)


def test_deprecated_naive_names_still_work_and_warn():
    from reference import dense_attention_naive, dense_attention_twin, sparq_attention_twin
    from reference import sparq_attention_naive as old_sparq

    q, K, V, mask = random_case(77)
    with pytest.warns(DeprecationWarning, match="dense_attention_twin"):
        np.testing.assert_array_equal(
            dense_attention_naive(q, K, V, mask), dense_attention_twin(q, K, V, mask)
        )
    with pytest.warns(DeprecationWarning, match="sparq_attention_twin"):
        old = old_sparq(q, K, V, r=2, k=4, mask=mask)
    np.testing.assert_array_equal(old.out, sparq_attention_twin(q, K, V, r=2, k=4, mask=mask).out)
    with pytest.warns(DeprecationWarning, match="impl='twin'"):
        a = sparq_attention(q, K, V, r=2, k=4, mask=mask, impl="naive")
    np.testing.assert_array_equal(a, old.out)
