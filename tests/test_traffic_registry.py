"""The byte-model registry of :mod:`costmodel.traffic` and each method's bytes by hand."""

from __future__ import annotations

import pytest

from costmodel.estimate import estimate_attention
from costmodel.traffic import (
    BYTE_MODELS,
    METHODS,
    AttentionCall,
    MethodBytes,
    Step,
    attention_traffic,
    byte_model,
)

# one small shape: B = 1, H = 4, Hkv = 2 (g = 2), S = 64, d = 16, float16 (e = 2),
# T = 32 B transactions, 8 B indices, one layer -> n_kv = B * Hkv * L = 2 KV-head instances
SHAPE = dict(batch=1, n_heads=4, n_kv_heads=2, seq_len=64, head_dim=16, dtype="float16")
RK = dict(r=4, k=8)


def test_registry_lists_dense_and_sparq():
    assert "dense" in BYTE_MODELS and "sparq" in BYTE_MODELS
    assert all(callable(fn) for fn in BYTE_MODELS.values())
    # peers keep the paper-formula fallback
    assert not {"h2o", "quest", "loki"} & set(BYTE_MODELS)


def test_dense_bytes_by_hand():
    t = attention_traffic("dense", **SHAPE)
    assert t.by_name() == {
        "kv_read": 2 * (2 * 64 * 16 * 2),  # n_kv * 2*S*d*e = 8192
        "kv_write": 2 * (2 * 16 * 2),  # n_kv * 2*d*e = 128
        "q_out": 2 * (2 * 2 * 16 * 2),  # n_kv * 2*g*d*e = 256
    }
    assert t.bytes == 8192 + 128 + 256
    assert t.flops == 2 * 2 * (4 * 64 * 16 + 5 * 64)  # n_kv * g * (4Sd + 5S) = 17664
    assert t.kernels == ("attention",)
    assert t.kv_cache_bytes == 8192
    assert t.paper_elements == 2 * (2 * 64 * 16 + 2 * 16)  # n_kv * Eq. 3 = 4160
    assert all(isinstance(s, Step) for s in t.steps)


def test_sparq_bytes_by_hand_k_twice_shared():
    t = attention_traffic("sparq", **SHAPE, **RK, transaction_bytes=32)
    # kv_row = ceil(d*e / T) * T = ceil(32 / 32) * 32 = 32
    assert t.by_name() == {
        "step1_columns": 2 * (4 * 128),  # n_kv * r * ceil(S*e/T)*T = 2 * 4 * 128 = 1024
        "step1_q_scores": 2 * (2 * 16 * 2 + 64 * 2),  # n_kv * (g*d*e + S*e) = 384
        "topk": 2 * (64 * 2 + 8 * 8),  # n_kv * (S*e + k*8) = 384
        "gather_kv": 2 * (2 * 8 * 32 + 8 * 8),  # n_kv * (2*k*kv_row + k*8) = 1152
        "v_mean": 2 * (2 * 16 * 2),  # n_kv * 2*d*e = 128
        "out_write": 2 * (2 * 16 * 2),  # n_kv * g*d*e = 128
        "kv_write": 2 * (2 * 16 * 2 + 16 * 32),  # n_kv * (2*d*e + d*T) = 1152
    }
    assert t.bytes == 1024 + 384 + 384 + 1152 + 128 + 128 + 1152  # 4352
    step1_flops = 2 * (2 * 64 * 4 * 2 + 64 * (2 - 1))  # n_kv * (2*S*r*g + S*(g-1)) = 2176
    step3_flops = 2 * 2 * (4 * 8 * 16 + 5 * 8 + 5 * 64)  # n_kv * g * (4kd + 5k + 5S) = 3488
    assert t.flops == step1_flops + step3_flops
    assert t.kernels == ("step1", "topk", "step3")
    assert t.kv_cache_bytes == 2 * 3 * 64 * 16 * 2  # K twice: n_kv * 3*S*d*e = 12288
    assert t.paper_elements == 2 * (64 * 4 + 2 * 8 * 16 + 4 * 16)  # n_kv * Eq. 11 = 1152


def test_sparq_bytes_by_hand_k_once_and_per_head():
    once = attention_traffic("sparq", **SHAPE, **RK, store_k_twice=False).by_name()
    # m = T // e = 16 elements per segment = d: one segment per row, always touched (E = 1)
    assert once["step1_columns"] == 2 * (64 * 1 * 32)  # n_kv * S * E * min(T, d*e) = 4096
    assert once["kv_write"] == 2 * (2 * 16 * 2)  # no strided d-major write = 128
    assert (
        attention_traffic("sparq", **SHAPE, **RK, store_k_twice=False).kv_cache_bytes
        == 2 * 2 * 64 * 16 * 2
    )  # n_kv * 2*S*d*e = 8192
    per = attention_traffic("sparq", **SHAPE, **RK, gqa_selection="per_head")
    # n_sel = g = 2 selections per KV head
    assert per.by_name()["step1_columns"] == 2 * 2 * (4 * 128)  # 2048
    assert per.by_name()["topk"] == 2 * 2 * (64 * 2 + 8 * 8)  # 768
    assert per.by_name()["gather_kv"] == 2 * 2 * (2 * 8 * 32 + 8 * 8)  # 2304
    assert per.paper_elements == 2 * 2 * 576


@pytest.mark.parametrize(
    ("method", "kwargs", "elems"),
    [
        ("loki", dict(r=4, k=8), 64 * 4 + 2 * 8 * 16),  # S*r + 2*k*d = 512
        ("h2o", dict(k=8), 2 * 8 * 16 + 2 * 16 + 2 * 64),  # 2kd + 2d + 2S = 416
        ("quest", dict(k=8, page_size=16), 2 * 16 * 4 + 2 * 16 * 8),  # 2d*ceil(S/P) + 2dk = 384
    ],
)
def test_fallback_bytes_by_hand(method, kwargs, elems):
    t = attention_traffic(method, **SHAPE, **kwargs)
    # one kernel, n_kv * g * elements * e = 2 * 2 * elems * 2
    assert t.by_name() == {"paper_formula": 2 * 2 * elems * 2}
    assert t.kernels == ("attention",)
    assert t.paper_elements == elems * 2 * 2
    assert t.kv_cache_bytes == 2 * 2 * 64 * 16 * 2


def test_toy_method_registered_in_a_test_is_priced():
    assert "toy" not in BYTE_MODELS and "toy" not in METHODS
    seen: list[AttentionCall] = []

    @byte_model("toy")
    def toy(c: AttentionCall) -> MethodBytes:
        seen.append(c)
        # read K and V once per KV head, like dense, in two kernels
        kv = c.n_kv * c.seq_len * c.head_dim * c.dtype_bytes
        return MethodBytes(
            steps=[
                Step(kernel="k_pass", name="k_read", bytes=kv, flops=0.0,
                     priced_as="memory", note="K once"),
                Step(kernel="v_pass", name="v_read", bytes=kv, flops=0.0,
                     priced_as="memory", note="V once"),
            ],
            kv_cache_bytes=2 * kv,
            paper_elements=0,
        )  # fmt: skip

    try:
        assert BYTE_MODELS["toy"] is toy
        kw = dict(hardware="h100-sxm", **SHAPE, resident=False)
        est = estimate_attention("toy", **kw)
        assert seen and seen[-1].g == 2 and seen[-1].n_kv == 2 and seen[-1].dtype_bytes == 2
        assert est.method == "toy"
        assert est.traffic.kernels == ("k_pass", "v_pass")
        assert est.bytes == 2 * (2 * 64 * 16 * 2)  # 4096 + 4096
        # two kernels of 4096 B cost more than the time of their bytes alone (two launches)
        assert est.time_s > 0 and len(est.kernels) == 2
        assert est.latency_s > estimate_attention("dense", **kw).latency_s
        # a byte model rejects the peers' paper arguments
        with pytest.raises(ValueError, match=r"does not use argument\(s\) \['page_size'\]"):
            attention_traffic("toy", **SHAPE, page_size=16)
    finally:
        del BYTE_MODELS["toy"]
    assert "toy" not in BYTE_MODELS
    with pytest.raises(ValueError, match="method: expected one of"):
        attention_traffic("toy", **SHAPE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_kv_heads=3), r"n_heads: expected a multiple of n_kv_heads \(3\), got 4"),
        (dict(gqa_selection="all"), "gqa_selection: expected 'shared' or 'per_head', got 'all'"),
        (dict(batch=0), "batch: expected an int >= 1, got 0"),
        (dict(dtype="int3"), "dtype: expected one of"),
        (dict(r=17, k=8), r"r: expected <= head_dim \(16\), got r=17"),
        (dict(r=4, k=65), r"k: expected <= seq_len \(64\), got k=65"),
    ],
)
def test_error_messages_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_traffic("sparq", **{**SHAPE, **kwargs})


def test_byte_model_name_checked():
    with pytest.raises(TypeError, match="name: expected a non-empty string"):
        byte_model("")
