"""Regression tests for extreme and malformed inputs to the reference (top-k, SparQ, dense,
baselines, configuration). Each expected value comes from an independent route: a
degenerate case with a known answer (constant V, k >= S), the exact top-k for bucket
parameters that make the bucketed top-k exact, or linearity of attention in V."""

import os
import subprocess
import sys

import numpy as np
import pytest

import reference as R
from reference import baselines
from reference._config import _threads_from_env
from reference.validation import adversarial_cases, check_sparq

HUGE = [2**32, 2**40, 2**63 - 1, 2**63, np.uint64(2**64 - 1), 2**70]


def _qkv(rng, B=2, H=4, Hkv=2, S=64, d=16):
    return (
        rng.normal(size=(B, H, d)),
        rng.normal(size=(B, Hkv, S, d)),
        rng.normal(size=(B, Hkv, S, d)),
    )


# --- bucketed top-k with k_per_bucket beyond any bucket --------------------------------------


@pytest.mark.parametrize("kb", HUGE)
@pytest.mark.parametrize("interleaved", [True, False])
def test_bucketed_topk_huge_k_per_bucket_is_exact_topk(kb, interleaved):
    # k_per_bucket >= k makes every bucket hand over its own top k, so the union holds the
    # overall top k: the answer is the exact top-k, on every row.
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, 100))
    v, i = R.bucketed_topk(x, 10, num_buckets=4, k_per_bucket=kb, interleaved=interleaved)
    v2, i2 = R.topk_twin(x, 10)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(v, v2)
    v3, i3 = R.bucketed_topk_twin(x, 10, num_buckets=4, k_per_bucket=kb, interleaved=interleaved)
    np.testing.assert_array_equal(i3, i2)


@pytest.mark.parametrize("nb", [2**63, np.uint64(2**64 - 1), 101])
def test_bucketed_topk_too_many_buckets_named(nb):
    x = np.arange(100.0)
    with pytest.raises(ValueError, match="num_buckets: expected 1 <= num_buckets <= n = 100"):
        R.bucketed_topk(x, 3, num_buckets=nb)
    with pytest.raises(ValueError, match="num_buckets"):
        R.bucketed_topk_twin(x, 3, num_buckets=nb)


@pytest.mark.parametrize("kb", [2**32, 2**63 - 1, np.uint64(2**64 - 1), 2**70])
@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_sparq_bucketed_huge_k_per_bucket_equals_exact(kb, impl):
    # As above: k_per_bucket >= k - local_window makes the bucketed selection exact.
    rng = np.random.default_rng(12)
    q, K, V = _qkv(rng)
    common = dict(r=4, k=16, local_window=4, return_steps=True, impl=impl)
    b = R.sparq_attention(q, K, V, topk="bucketed", num_buckets=4, k_per_bucket=kb, **common)
    e = R.sparq_attention(q, K, V, topk="exact", **common)
    np.testing.assert_array_equal(b.positions, e.positions)
    np.testing.assert_array_equal(b.out, e.out)


# --- k, local_window, num_buckets beyond S -----------------------------------------------------


@pytest.mark.parametrize("k", [64, 65, 10**8, 2**70])
@pytest.mark.parametrize("impl", ["numba", "twin"])
def test_sparq_k_beyond_S_keeps_all_and_positions_have_S_columns(k, impl):
    # k >= S keeps every valid position: alpha = 1 and the output is dense attention.
    rng = np.random.default_rng(13)
    q, K, V = _qkv(rng)
    lw = min(k, 2**65)
    st = R.sparq_attention(q, K, V, r=4, k=k, local_window=lw, impl=impl, return_steps=True)
    assert st.positions.shape == (2, 2, 64)
    assert (np.sort(st.positions, axis=-1) == np.arange(64)).all()
    np.testing.assert_allclose(st.out, R.dense_attention_twin(q, K, V), rtol=0, atol=1e-14)
    bucketed = dict(topk="bucketed", num_buckets=2**64, k_per_bucket=2**64)
    st = R.sparq_attention(q, K, V, r=4, k=k, local_window=3, impl=impl, **bucketed)
    np.testing.assert_allclose(st, R.dense_attention_twin(q, K, V), rtol=0, atol=1e-14)


def test_sparq_without_steps_does_not_allocate_k_columns():
    rng = np.random.default_rng(14)
    q, K, V = _qkv(rng)
    out = R.sparq_attention(q, K, V, r=4, k=10**12, local_window=4)  # (B, G, 10**12) would fail
    np.testing.assert_allclose(out, R.dense_attention_twin(q, K, V), rtol=0, atol=1e-14)


@pytest.mark.parametrize("fn", ["oracle_topk_attention", "flexgen_topk_attention",
                                "lm_infinite_attention"])  # fmt: skip
def test_baselines_positions_have_min_k_S_columns(fn):
    rng = np.random.default_rng(15)
    q, K, V = _qkv(rng)
    out, pos = getattr(baselines, fn)(q, K, V, k=10**12, return_positions=True)
    assert pos.shape == (2, 4, 64)
    assert (np.sort(pos, axis=-1) == np.arange(64)).all()
    if fn != "flexgen_topk_attention":  # every position kept, renormalised: dense attention
        np.testing.assert_allclose(out, R.dense_attention_twin(q, K, V), rtol=0, atol=1e-14)


def test_checker_accepts_k_columns_padded_with_minus_one():
    case = next(c for c in adversarial_cases("float32") if c.name == "k-ge-S")
    S, k = case.inputs["k_cache"].shape[2], case.params["k"]
    assert k > S
    pos = case.expected.positions
    assert pos.shape[-1] == S
    padded = np.concatenate([pos, np.full(pos.shape[:-1] + (k - S,), -1)], axis=-1)
    assert check_sparq(case, {"positions": pos}).passed
    assert check_sparq(case, {"positions": padded}).passed
    junk = padded.copy()
    junk[..., -1] = 0
    report = check_sparq(case, {"positions": junk})
    assert not report.passed


# --- V near the float64 maximum ------------------------------------------------------------


@pytest.mark.parametrize("impl", ["dense", "numba", "twin", "dense_twin"])
def test_huge_constant_v_gives_v(impl):
    # Softmax weights sum to 1: a constant V row comes out unchanged (mean of V too).
    rng = np.random.default_rng(16)
    q, K, _ = _qkv(rng)
    V = np.full(K.shape, 1.7e308)
    if impl == "dense":
        out = R.dense_attention(q, K, V)
    elif impl == "dense_twin":
        out = R.dense_attention_twin(q, K, V)
    else:
        out = R.sparq_attention(q, K, V, r=4, k=16, local_window=4, impl=impl)
    np.testing.assert_allclose(out, 1.7e308, rtol=1e-14)


@pytest.mark.parametrize("impl", ["dense", "numba", "twin"])
def test_alternating_huge_v_by_linearity(impl):
    # Attention is linear in V and scaling by 2**-64 is exact: the reference on V * 2**-64,
    # scaled back, is the answer for V.
    rng = np.random.default_rng(17)
    q, K, _ = _qkv(rng)
    V = np.where(rng.random(K.shape) < 0.5, 1e308, -1e308)
    if impl == "dense":
        got = R.dense_attention(q, K, V)
        want = R.dense_attention_twin(q, K, V * 2.0**-64) * 2.0**64
    else:
        got = R.sparq_attention(q, K, V, r=4, k=16, local_window=4, impl=impl)
        want = R.sparq_attention_twin(q, K, V * 2.0**-64, r=4, k=16, local_window=4).out * 2.0**64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * 1e308)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_emulated_overflow_of_v_names_v_cache(precision):
    # In float32 a naive sum of 64 values of 1e38 overflows: the emulation says so, naming V.
    rng = np.random.default_rng(18)
    q, K, _ = _qkv(rng)
    V = np.full(K.shape, 1e38)
    with pytest.raises(ValueError, match=r"^v_cache: the mean of V"):
        R.sparq_attention(q, K, V, r=4, k=16, local_window=4, precision=precision)


def test_logit_overflow_still_names_q_and_k():
    rng = np.random.default_rng(19)
    q, K, V = _qkv(rng)
    q[0, 0, :] = 1e160
    K[0, 0, :, :] = 1e160
    for call in (
        lambda: R.dense_attention(q, K, V),
        lambda: R.sparq_attention(q, K, V, r=4, k=16, local_window=4),
    ):
        with pytest.raises(ValueError, match=r"^q, k_cache: the attention logits overflow"):
            call()


# --- baselines: H2O ----------------------------------------------------------------------------


def _h2o_inputs(rng, B=1, H=2, Hkv=1, P=6, T=2, d=8):
    S = P + T
    return (
        rng.normal(size=(B, H, P, d)),
        rng.normal(size=(T, B, H, d)),
        rng.normal(size=(B, Hkv, S, d)),
        rng.normal(size=(B, Hkv, S, d)),
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_h2o_prefill_rejects_nonfinite_in_any_query(bad):
    rng = np.random.default_rng(20)
    qp, _, K, _ = _h2o_inputs(rng)
    qp[0, 1, 3, 2] = bad  # not query 0
    with pytest.raises(ValueError, match=r"^q_prompt: contains .* index \(0, 1, 3, 2\)"):
        baselines.h2o_prefill_scores(qp, K, prompt_len=6)


@pytest.mark.parametrize("qp", [np.ones((1, 2, 6, 8), complex), np.ones((1, 2, 6, 8), int),
                                np.full((1, 2, 6, 8), "a")])  # fmt: skip
def test_h2o_prefill_rejects_non_float(qp):
    K = np.zeros((1, 1, 8, 8))
    with pytest.raises(TypeError, match="^q_prompt: expected a float"):
        baselines.h2o_prefill_scores(qp, K, prompt_len=6)


def test_h2o_empty_prompt_and_empty_steps_named():
    rng = np.random.default_rng(21)
    qp, qs, K, V = _h2o_inputs(rng)
    with pytest.raises(ValueError, match=r"^q_prompt: expected at least one prompt query"):
        baselines.h2o_prefill_scores(qp[:, :, :0], K, prompt_len=6)
    with pytest.raises(ValueError, match=r"^q_steps: expected at least one decode step"):
        baselines.h2o_decode(qs[:0], K, V, k=4, local_window=1, prompt_len=6)


@pytest.mark.parametrize(
    "scores, err, msg",
    [
        (np.full((1, 1, 6), np.nan), ValueError, "^prefill_scores: contains NaN"),
        (np.full((1, 1, 6), np.inf), ValueError, r"^prefill_scores: contains \+/-inf"),
        (np.ones((1, 1, 6), complex), TypeError, "^prefill_scores: expected a float"),
        (np.full((1, 1, 6), "x"), TypeError, "^prefill_scores: expected a float"),
    ],
)
def test_h2o_decode_validates_prefill_scores(scores, err, msg):
    rng = np.random.default_rng(22)
    _, qs, K, V = _h2o_inputs(rng)
    with pytest.raises(err, match=msg):
        baselines.h2o_decode(qs, K, V, k=4, local_window=1, prompt_len=6, prefill_scores=scores)


# --- flags and small helpers ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["False", None, 1, 0.0, np.int64(1)])
def test_top_k_flags_must_be_bools(value):
    x = np.arange(10.0)
    with pytest.raises(TypeError, match="^topk: largest: expected a bool"):
        R.topk(x, 3, largest=value)
    with pytest.raises(TypeError, match="^topk: sorted: expected a bool"):
        R.topk(x, 3, sorted=value)
    with pytest.raises(TypeError, match="^topk_twin: largest: expected a bool"):
        R.topk_twin(x, 3, largest=value)
    with pytest.raises(TypeError, match="^bucketed_topk: interleaved: expected a bool"):
        R.bucketed_topk(x, 3, num_buckets=3, interleaved=value)
    with pytest.raises(TypeError, match="^bucketed_topk_twin: interleaved: expected a bool"):
        R.bucketed_topk_twin(x, 3, num_buckets=3, interleaved=value)


def test_numpy_bools_are_bools():
    x = np.arange(10.0)
    np.testing.assert_array_equal(R.topk(x, 2, largest=np.bool_(False))[1], [0, 1])


@pytest.mark.parametrize("n, b", [(10, 10**9), (10, 11), (0, 1)])
def test_bucket_sizes_rejects_more_buckets_than_elements(n, b):
    with pytest.raises(ValueError, match="^bucket_sizes: (num_buckets|n): expected"):
        R.bucket_sizes(n, b)


def test_bucket_sizes_small_case_by_hand():
    np.testing.assert_array_equal(R.bucket_sizes(10, 3), [4, 3, 3])
    np.testing.assert_array_equal(R.bucket_sizes(10, 10), [1] * 10)


@pytest.mark.parametrize("k_mult", [np.inf, -np.inf, np.nan, np.float32(np.inf)])
def test_bucket_params_from_public_nonfinite_named(k_mult):
    with pytest.raises(ValueError, match="^bucket_params_from_public: k_mult: expected a finite"):
        R.bucket_params_from_public(4, 2, k_mult)


def test_bucket_params_from_public_numpy_floats_exact():
    # np.float32(2.0) is exactly 2: b = 2 * 4 / 2 = 4; np.float32(1.1) is not 1.1 exactly.
    assert R.bucket_params_from_public(4, 2, np.float32(2.0)) == (4, 2)
    with pytest.raises(ValueError, match="^bucket_params_from_public: k_mult: expected k_mult"):
        R.bucket_params_from_public(4, 2, np.float32(1.1))
    with pytest.raises(TypeError, match="^bucket_params_from_public: k_mult: expected a number"):
        R.bucket_params_from_public(4, 2, np.bool_(True))


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5", "2x"])
def test_thread_variable_rejected_with_its_name(value):
    with pytest.raises(ValueError, match="^SPARQ_NUM_THREADS: expected a positive integer"):
        _threads_from_env(value)


def test_thread_variable_parsed():
    assert _threads_from_env(None) is None
    assert _threads_from_env("") is None
    assert _threads_from_env(" 3 ") == 3


def test_thread_variable_error_at_import():
    env = {**os.environ, "SPARQ_NUM_THREADS": "abc"}
    res = subprocess.run([sys.executable, "-c", "import reference"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0
    assert "SPARQ_NUM_THREADS: expected a positive integer" in res.stderr


@pytest.mark.parametrize("fn", ["oracle_topk_attention", "flexgen_topk_attention",
                                "lm_infinite_attention"])  # fmt: skip
def test_baselines_return_positions_must_be_bool(fn):
    rng = np.random.default_rng(23)
    q, K, V = _qkv(rng)
    with pytest.raises(TypeError, match="^return_positions: expected a bool"):
        getattr(baselines, fn)(q, K, V, k=4, sink=0, return_positions="no") if fn.startswith(
            "lm"
        ) else getattr(baselines, fn)(q, K, V, k=4, return_positions="no")


def test_thread_variable_error_in_the_cli():
    env = {**os.environ, "SPARQ_NUM_THREADS": "abc"}
    res = subprocess.run([sys.executable, "-m", "sparq_cli", "--version"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("sparq: error: SPARQ_NUM_THREADS: expected a positive integer")


_SNIPPET = """
import numpy as np, reference as R
rng = np.random.default_rng(0)
q = rng.normal(size=(1, 4, 16))
K, V = rng.normal(size=(1, 2, 64, 16)), rng.normal(size=(1, 2, 64, 16))
R.sparq_attention(q, K, V, r=4, k=8)
R.dense_attention(q, K, V)
R.sparq_attention(q, K, V, r=4, k=8)
"""


@pytest.mark.slow  # compiles the kernels from scratch (no disk cache): 20-60 s
def test_first_compile_note_once_on_stderr():
    env = {**os.environ, "SPARQ_NUMBA_CACHE": "0", "SPARQ_QUIET": ""}
    res = subprocess.run([sys.executable, "-c", _SNIPPET], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    n = res.stderr.count("sparq-reference: compiling the Numba kernels once")
    assert n == 1, res.stderr


# the note's own logic on a dispatcher that has never compiled (no kernel compile needed):
# printed once per process, never with SPARQ_QUIET=1
_NOTE_SNIPPET = """
import numba
from reference._config import note_first_compile
f = numba.njit(lambda x: x)
note_first_compile(f)
note_first_compile(f)
"""


@pytest.mark.parametrize("quiet", ["", "0", "1"])
def test_compile_note_is_silenced_by_sparq_quiet(quiet):
    env = {**os.environ, "SPARQ_NUMBA_CACHE": "0", "SPARQ_QUIET": quiet}
    res = subprocess.run([sys.executable, "-c", _NOTE_SNIPPET], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    n = res.stderr.count("sparq-reference: compiling the Numba kernels once")
    assert n == (1 if quiet in ("", "0") else 0), res.stderr
