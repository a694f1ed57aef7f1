"""The attention benchmark's helpers that decide what a prediction is priced with.

Oracle: profiles built by hand from one synthetic profile, each field moved up or down.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from costmodel.hardware import Hardware, hardware_from_spec


@pytest.fixture(scope="module")
def bench():
    """benchmarks/bench_attention.py as a module, without its OMP_WAIT_POLICY default
    leaking into this process's environment."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    before = os.environ.get("OMP_WAIT_POLICY")
    sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module("bench_attention")
    finally:
        sys.path.remove(str(root))
        if before is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = before
    return mod


def _host() -> Hardware:
    return hardware_from_spec(
        bandwidth_bytes_per_s=1e10, peak_flops_fp16=1e11, mem_efficiency=1.0,
        mem_transaction_bytes=64, topk_bytes_per_s=1e9, name="synthetic-host",
    ).replace(
        kind="cpu", threads=2, fma_f64_per_s=1e9, exp_per_s=1e8, gather_bytes_per_s=2e9,
        gather256_bytes_per_s=1.5e9, div_f64_per_s=4e8, widen_f32_per_s=2e9,
        widen_f16_per_s=1e9, widen_bf16_per_s=8e8, stream_fma_overlap=0.5,
        dense_call_s=1e-5, sparq_call_s=2e-5,
    )  # fmt: skip


def test_best_of_profiles_takes_the_larger_rate_and_the_smaller_call_cost(bench):
    a = _host()
    up = {f: getattr(a, f) * (0.9 if f.endswith("_call_s") else 1.1) for f in bench.RATE_FIELDS}
    up["stream_fma_overlap"] = min(1.0, a.stream_fma_overlap + 0.05)
    b = a.replace(**up)
    for x, y in ((a, b), (b, a)):  # symmetric
        c = bench.best_of_profiles(x, y)
        for f in bench.RATE_FIELDS:
            assert getattr(c, f) == getattr(b, f), f
    # a profile better in some fields and worse in others: each field chosen on its own
    mixed = a.replace(fma_f64_per_s=a.fma_f64_per_s * 2, dense_call_s=a.dense_call_s * 3)
    c = bench.best_of_profiles(mixed, b)
    assert c.fma_f64_per_s == mixed.fma_f64_per_s
    assert c.dense_call_s == b.dense_call_s
    assert c.exp_per_s == b.exp_per_s
    # fields outside the host model's rates are the first profile's
    assert c.name == mixed.name
