"""Tests of costmodel.traffic: transfers as the papers count them, byte-level accounting, bad input.

Sources: "paper" = Ribar et al., SparQ Attention, ICML 2024 (arXiv 2312.04985v6); "blog" =
the authors' blog post on SparQ (Llama 2 7B on A100 latency table); "H100 run" = this repo's
benchmarks/gpu_decode_attention.py on an NVIDIA H100 80GB HBM3 (SXM), stored in
docs/costmodel_h100_measurements.json. Hand calculations are written out in the tests.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costmodel.traffic import (
    attention_traffic,
    compression_ratio,
    expected_touched_segments,
    transfers,
)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- formulas
@pytest.mark.parametrize(
    ("method", "kwargs", "expected"),
    [
        # paper Eq. 3: 2*S*d + 2*d = 2*4096*128 + 256
        ("dense", {}, 1_048_832),
        # paper Eq. 11: S*r + 2*k*d + 4*d = 131072 + 32768 + 512
        ("sparq", {"r": 32, "k": 128}, 164_352),
        # the paper's public plot notebook: S*r + 2*k*d + 5*d with reallocation = ... + 640
        ("sparq", {"r": 32, "k": 128, "variant": "notebook"}, 164_480),
        # ... 3*d without reallocation = ... + 384
        ("sparq", {"r": 32, "k": 128, "variant": "notebook", "reallocation": False}, 164_224),
        # paper App. G, H2O: 2*k*d + 2*d + 2*S = 32768 + 256 + 8192
        ("h2o", {"k": 128}, 41_216),
        # LM-Infinite: 2*k*d + 2*d = 32768 + 256
        ("lm_infinite", {"k": 128}, 33_024),
        # FlexGen: S*d + k*d + 2*d = 524288 + 16384 + 256
        ("flexgen", {"k": 128}, 540_928),
        # Quest (its paper): 2*d*ceil(S/P) + 2*d*k = 2*128*256 + 32768 with P = 16
        ("quest", {"k": 128, "page_size": 16}, 98_304),
        # DoubleSparsity (its paper): S*r*(bits/16) + 2*k*d, 4-bit labels: 32768 + 32768
        ("double_sparsity", {"r": 32, "k": 128, "bits": 4}, 65_536),
        # Loki (its paper): S*r + 2*k*d
        ("loki", {"r": 32, "k": 128}, 163_840),
    ],
)
def test_transfers_paper_formulas(method, kwargs, expected):
    got = transfers(method, seq_len=4096, head_dim=128, **kwargs)
    assert isinstance(got, int)
    assert got == expected


def test_quest_rounds_pages_up():
    # hand: S = 10, P = 3 -> ceil = 4 pages; 2*d*4 + 2*d*k with d = 8, k = 2 -> 64 + 32
    assert transfers("quest", seq_len=10, head_dim=8, k=2, page_size=3) == 96


def test_table4_theoretical_speedup_6_4():
    # paper Table 4 "theoretical speed-up" 6.4x: 2*S*d / (r*S + 2*k*d), S 4096, r 32, k 128, d 128
    S, d, r, k = 4096, 128, 32, 128
    ratio = 2 * S * d / (transfers("sparq", seq_len=S, head_dim=d, r=r, k=k) - 4 * d)
    assert ratio == pytest.approx(6.4, abs=1e-12)
    # with the write terms of Eq. 3/11 the ratio is 6.38, still 6.4 to 2 significant digits
    assert round(1 / compression_ratio("sparq", seq_len=S, head_dim=d, r=r, k=k), 1) == 6.4


def test_ipu_theoretical_speedup_7_53():
    # paper §6: IPU theoretical 7.53x at S = 16384, r 32, k 128, d 128
    S, d, r, k = 16384, 128, 32, 128
    ratio = 2 * S * d / (transfers("sparq", seq_len=S, head_dim=d, r=r, k=k) - 4 * d)
    assert round(ratio, 2) == 7.53


@given(
    S=st.integers(1, 1 << 18),
    d=st.integers(1, 512),
    kfrac=st.floats(0.0, 1.0),
)
def test_flexgen_never_below_half_of_dense(S, d, kfrac):
    # FlexGen top-k is "never below 1/2 of dense" (it reads all of K)
    k = max(1, min(S, int(kfrac * S)))
    assert 2 * transfers("flexgen", seq_len=S, head_dim=d, k=k) >= transfers(
        "dense", seq_len=S, head_dim=d
    )


@given(S=st.integers(16, 1 << 17), d=st.sampled_from([64, 80, 128, 256]))
def test_sparq_compression_roughly_r_over_2d_plus_k_over_s(S, d):
    # compression ratio ~ r/(2d) + k/S; exact algebra: (S*r + 2kd + 4d)/(2Sd + 2d)
    r, k = max(1, d // 8), max(1, S // 16)
    c = compression_ratio("sparq", seq_len=S, head_dim=d, r=r, k=k)
    approx = r / (2 * d) + k / S
    assert abs(c - approx) <= 4 * d / (2 * S * d) + approx * 2 / (2 * S) + 1e-12


# ------------------------------------------------------------------ byte-level accounting
def test_expected_touched_segments_matches_enumeration():
    # independent route: enumerate every r-subset of d components and count segments hit
    for d, m, r in [(4, 2, 2), (8, 2, 3), (12, 4, 5), (10, 3, 4), (9, 9, 2)]:
        segs = [set(range(i, min(i + m, d))) for i in range(0, d, m)]
        subsets = list(itertools.combinations(range(d), r))
        brute = sum(sum(1 for s in segs if s & set(c)) for c in subsets) / len(subsets)
        assert expected_touched_segments(head_dim=d, r=r, elems_per_segment=m) == pytest.approx(
            brute, rel=1e-12
        )
    # hand: d = 4, m = 2, r = 2 -> each segment missed w.p. C(2,2)/C(4,2) = 1/6 -> 2 * 5/6
    assert expected_touched_segments(head_dim=4, r=2, elems_per_segment=2) == pytest.approx(5 / 3)
    # r = 1 touches exactly one segment
    assert expected_touched_segments(head_dim=128, r=1, elems_per_segment=16) == pytest.approx(1)


GQA = dict(batch=1, n_heads=8, n_kv_heads=2, seq_len=64, head_dim=16, r=4, k=8)


def test_gqa_shared_vs_per_head_by_hand():
    # Hand calculation: B 1, H 8, Hkv 2 (g = 4), S 64, d 16, r 4, k 8, fp16 (e = 2), T 32 B.
    # K twice: step 1 reads r rows of the d-major copy, each S*e = 128 B = 4 transactions:
    #   per selection 4 * 128 = 512 B. Shared: 1 selection per KV head -> 2 * 512 = 1024 B;
    #   per-query-head: g = 4 selections per KV head -> 4096 B.
    # Gathers: 2*k rows of d*e = 32 B (one transaction each) + k int64 indices:
    #   2*8*32 + 8*8 = 576 B per selection -> shared 1152 B, per-head 4608 B.
    # Scores: written n_sel*S*e (128 B per selection) plus q read g*d*e = 128 B per KV head.
    shared = attention_traffic("sparq", **GQA, transaction_bytes=32).by_name()
    per = attention_traffic(
        "sparq", **GQA, transaction_bytes=32, gqa_selection="per_head"
    ).by_name()
    assert shared["step1_columns"] == 1024
    assert per["step1_columns"] == 4096
    assert shared["gather_kv"] == 1152
    assert per["gather_kv"] == 4608
    assert shared["step1_q_scores"] == 2 * (128 + 128)
    assert per["step1_q_scores"] == 2 * (128 + 4 * 128)
    # top-k input: scores n_sel*S*e + k indices * 8 B
    assert shared["topk"] == 2 * (128 + 64)
    assert per["topk"] == 2 * 4 * (128 + 64)
    # v_mean read + write 2*d*e per KV head, output g*d*e per KV head: same in both modes
    assert shared["v_mean"] == per["v_mean"] == 2 * 64
    assert shared["out_write"] == per["out_write"] == 2 * 4 * 32
    # dense reads each KV head once: 2*S*d*e = 4096 B per KV head -> 8192 B
    dense_t = attention_traffic("dense", batch=1, n_heads=8, n_kv_heads=2, seq_len=64, head_dim=16)
    dense = dense_t.by_name()
    # paper elements (Eq. 3, 2*S*d + 2*d = 2080) once per KV head, like the bytes
    assert dense_t.paper_elements == 2 * 2080
    # Eq. 11 (S*r + 2*k*d + 4*d = 256 + 256 + 64 = 576) once per selection
    assert attention_traffic("sparq", **GQA).paper_elements == 2 * 576
    assert attention_traffic("sparq", **GQA, gqa_selection="per_head").paper_elements == 8 * 576
    assert dense["kv_read"] == 8192
    assert dense["kv_write"] == 2 * 2 * 16 * 2
    assert dense["q_out"] == 2 * 2 * 4 * 16 * 2


def test_store_k_once_vs_twice_by_hand():
    # K twice: cache 3*S*d*e instead of 2*S*d*e (+50%), and each new k is also written
    # strided into the d-major copy: d transactions of T bytes.
    # Hand (B 1, H = Hkv 1, S 64, d 16, e 2, T 32): twice kv_write = 2*16*2 + 16*32 = 576 B
    kw = dict(batch=1, n_heads=1, n_kv_heads=1, seq_len=64, head_dim=16, r=4, k=8)
    twice = attention_traffic("sparq", **kw, transaction_bytes=32)
    once = attention_traffic("sparq", **kw, transaction_bytes=32, store_k_twice=False)
    assert twice.kv_cache_bytes == 3 * 64 * 16 * 2
    assert once.kv_cache_bytes == 2 * 64 * 16 * 2
    assert twice.by_name()["kv_write"] == 576
    assert once.by_name()["kv_write"] == 64
    # K once, d*e = 32 B = one transaction per row: any r >= 1 reads the whole row: S*32 B
    assert once.by_name()["step1_columns"] == 64 * 32
    # K twice: r rows of S*e = 128 B: 4 * 128
    assert twice.by_name()["step1_columns"] == 4 * 128


def test_store_k_once_d128_r1_reads_one_sector_per_row():
    # hand: d 128 fp16 = 256 B = 8 sectors of 32 B; r = 1 touches one sector per row -> S*32
    t = attention_traffic(
        "sparq",
        batch=1,
        n_heads=1,
        seq_len=1000,
        head_dim=128,
        r=1,
        k=10,
        n_kv_heads=1,
        store_k_twice=False,
        transaction_bytes=32,
    )
    assert t.by_name()["step1_columns"] == pytest.approx(1000 * 32)


def test_dense_bytes_equal_eq3_times_dtype():
    # Eq. 3 in bytes: (2*S*d + 2*d) * e per head, plus q read and output write (2*d*e)
    t = attention_traffic(
        "dense", batch=3, n_heads=4, n_kv_heads=4, seq_len=100, head_dim=8, dtype="float32"
    )
    assert t.bytes == 3 * 4 * ((2 * 100 * 8 + 2 * 8) * 4 + 2 * 8 * 4)


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(seq_len=-5), ValueError, "seq_len: expected an int >= 1, got -5"),
        (dict(head_dim=0), ValueError, "head_dim: expected an int >= 1"),
        (dict(r=200), ValueError, r"r: expected <= head_dim \(128\), got r=200"),
        (dict(k=5000), ValueError, r"k: expected <= seq_len \(4096\), got k=5000"),
        (dict(r=0), ValueError, "r: expected an int >= 1"),
        (dict(seq_len=4096.0), TypeError, "seq_len: expected an int"),
        (dict(r=None), ValueError, "r .* is required"),
    ],
)
def test_transfers_bad_input(kwargs, exc, match):
    base = dict(seq_len=4096, head_dim=128, r=32, k=128)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        transfers("sparq", **base)


@pytest.mark.parametrize(
    ("method", "kwargs", "bad"),
    [
        ("dense", dict(r=8), "r"),
        ("dense", dict(k=8), "k"),
        ("h2o", dict(r=8, k=8), "r"),
        ("sparq", dict(r=8, k=8, page_size=16), "page_size"),
        ("loki", dict(r=8, k=8, bits=4), "bits"),
        ("flexgen", dict(k=8, variant="notebook"), "variant"),
    ],
)
def test_transfers_rejects_arguments_the_method_does_not_use(method, kwargs, bad):
    with pytest.raises(ValueError, match=f"does not use argument.*'{bad}'"):
        transfers(method, seq_len=64, head_dim=16, **kwargs)


def test_dtype_bytes_change_traffic():
    kw = dict(batch=1, n_heads=2, seq_len=128, head_dim=64)
    b16 = attention_traffic("dense", n_kv_heads=2, dtype="bfloat16", **kw).bytes
    b8 = attention_traffic("dense", n_kv_heads=2, dtype="fp8", **kw).bytes
    b32 = attention_traffic("dense", n_kv_heads=2, dtype="float32", **kw).bytes
    assert b16 == 2 * b8 and b32 == 2 * b16
    assert math.isclose(b16, 2 * (2 * 128 * 64 * 2 + 2 * 64 * 2 + 2 * 64 * 2))


# --- robustness: bounds and types of the byte-model arguments ----------------------------------

_CALL = dict(batch=1, n_heads=8, n_kv_heads=8, seq_len=1024, head_dim=128, r=16, k=64)


@pytest.mark.parametrize(
    "over, err, msg",
    [
        (dict(batch=10**400), ValueError, r"^batch: expected an int <= 9007199254740992"),
        (dict(seq_len=2**53 + 1), ValueError, r"^seq_len: expected an int <="),
        (dict(head_dim=5000), ValueError, r"^head_dim: expected an int <= MAX_HEAD_DIM"),
        (dict(store_k_twice="no"), TypeError, r"^store_k_twice: expected a bool"),
        (dict(store_k_twice=None), TypeError, r"^store_k_twice: expected a bool"),
        (dict(transaction_bytes=33), ValueError, r"^transaction_bytes: expected a power of two"),
        (dict(transaction_bytes=2**21), ValueError, r"^transaction_bytes: expected an int <="),
        (dict(index_bytes=10**9), ValueError, r"^index_bytes: expected an int <= 16"),
    ],
)
def test_attention_traffic_rejects_out_of_range(over, err, msg):
    with pytest.raises(err, match=msg):
        attention_traffic("sparq", **{**_CALL, **over})


def test_attention_traffic_method_type_named():
    with pytest.raises(TypeError, match=r"^method: expected a str"):
        attention_traffic(["sparq"], **_CALL)
    with pytest.raises(TypeError, match=r"^method: expected a str"):
        transfers(["dense"], seq_len=8, head_dim=4)


def test_largest_sizes_give_finite_bytes():
    t = attention_traffic("dense", **{**_CALL, "batch": 2**53, "seq_len": 2**53, "r": None,
                                      "k": None})  # fmt: skip
    # dense reads K and V: 2 * S * d * e per (sequence, KV head), by hand
    assert math.isfinite(t.bytes) and t.bytes >= 2.0 * 2**53 * 2**53 * 8 * 128 * 2
