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
        widen_fma_overlap=0.4, widen_f16_fma_overlap=0.2, widen_bf16_fma_overlap=0.1,
        gather_fma_overlap=0.3, sweep_fma_per_s=5e8, attend_fma_per_s=6e8,
        attend1_fma_per_s=2e8, exp_sum_per_s=1.6e8, thread_bandwidth_bytes_per_s=6e9,
        thread_gather_bytes_per_s=1.2e9, thread_fma_per_s=8e8, dense_call_s=1e-5,
        sparq_call_s=2e-5, column_copy_per_s=3e8, dense_fma_per_s=7e8, dense_f16_fma_per_s=6e8,
        dense1_fma_per_s=2.5e8, dense1_f16_fma_per_s=2.6e8,
    )  # fmt: skip


def test_in_core_rates_are_the_better_of_the_two_profiles(bench):
    a = _host()
    up = {f: getattr(a, f) * (0.9 if f.endswith("_call_s") else 1.1) for f in bench.RATE_FIELDS}
    up["stream_fma_overlap"] = min(1.0, a.stream_fma_overlap + 0.05)
    up["widen_fma_overlap"] = a.widen_fma_overlap + 0.05  # more overlap: less in-core time
    up["gather_fma_overlap"] = a.gather_fma_overlap + 0.05
    b = a.replace(**up)
    incore = [f for f in bench.RATE_FIELDS if f not in bench.MEMORY_STATE_FIELDS]
    assert "fma_f64_per_s" in incore and "dense_call_s" in incore and "topk_bytes_per_s" in incore
    assert "widen_fma_overlap" in incore and "widen_f16_fma_overlap" in incore
    assert "widen_bf16_fma_overlap" in incore and "exp_sum_per_s" in incore
    assert "column_copy_per_s" in incore
    for x, y in ((a, b), (b, a)):  # symmetric
        c = bench.best_of_profiles(x, y, bw=a.mem_bandwidth_bytes_per_s)
        for f in incore:
            assert getattr(c, f) == getattr(b, f), f
    # better in some fields and worse in others: each in-core field chosen on its own
    mixed = a.replace(fma_f64_per_s=a.fma_f64_per_s * 2, dense_call_s=a.dense_call_s * 3)
    c = bench.best_of_profiles(mixed, b, bw=a.mem_bandwidth_bytes_per_s)
    assert c.fma_f64_per_s == mixed.fma_f64_per_s
    assert c.dense_call_s == b.dense_call_s
    assert c.exp_per_s == b.exp_per_s
    assert c.name == mixed.name  # fields outside the host model's rates: the first profile's
    # a profile without the widen/FMA overlap (written before it was measured): the other's
    old = a.replace(widen_fma_overlap=None)
    for x, y in ((old, b), (b, old)):
        c = bench.best_of_profiles(x, y, bw=a.mem_bandwidth_bytes_per_s)
        assert c.widen_fma_overlap == b.widen_fma_overlap
    assert bench.best_of_profiles(old, old, bw=1e10).widen_fma_overlap is None
    # nor the rate of the exps summed: the other's
    old = a.replace(exp_sum_per_s=None)
    for x, y in ((old, b), (b, old)):
        assert bench.best_of_profiles(x, y, bw=1e10).exp_sum_per_s == b.exp_sum_per_s
    assert bench.best_of_profiles(old, old, bw=1e10).exp_sum_per_s is None


def test_fmt_rates_prints_the_exp_sum_rate_when_present(bench):
    a = _host()  # exp 1e8, exps summed 1.6e8 /s
    assert ", exp summed 0.16 G/s" in bench.fmt_rates(bench.host_rates(a))
    assert "exp summed" not in bench.fmt_rates(bench.host_rates(a.replace(exp_sum_per_s=None)))
    # a row's rates saved before the field existed
    old = {f: v for f, v in bench.host_rates(a).items() if f != "exp_sum_per_s"}
    assert "exp summed" not in bench.fmt_rates(old)


def test_memory_rates_come_from_the_profile_in_the_rows_memory_state(bench):
    slow = _host()  # streaming read 10 GB/s
    fast = slow.replace(
        mem_bandwidth_bytes_per_s=1.8e10, gather_bytes_per_s=2.6e9,
        gather256_bytes_per_s=1.9e9, stream_fma_overlap=0.3, gather_fma_overlap=0.6,
        thread_bandwidth_bytes_per_s=9e9, thread_gather_bytes_per_s=1.5e9,
    )  # fmt: skip
    # what one thread reaches follows the memory state too
    assert {"thread_bandwidth_bytes_per_s", "thread_gather_bytes_per_s"} <= set(
        bench.MEMORY_STATE_FIELDS
    )
    for bw, want in ((1.1e10, slow), (0.9e10, slow), (1.6e10, fast), (2.5e10, fast)):
        for x, y in ((slow, fast), (fast, slow)):
            c = bench.best_of_profiles(x, y, bw=bw)
            for f in bench.MEMORY_STATE_FIELDS:
                assert getattr(c, f) == getattr(want, f), (bw, f)
    # nearer by ratio: 13.4 GB/s (the geometric mean of 10 and 18) is the boundary
    assert bench.best_of_profiles(slow, fast, bw=1.3e10).gather_bytes_per_s == 2e9
    assert bench.best_of_profiles(slow, fast, bw=1.4e10).gather_bytes_per_s == 2.6e9
    assert "gather_fma_overlap" in bench.MEMORY_STATE_FIELDS
    # a profile measured before the gathers' overlap was: None from the profile in the state
    old = slow.replace(gather_fma_overlap=None)
    assert bench.best_of_profiles(old, fast, bw=1.1e10).gather_fma_overlap is None
    assert bench.best_of_profiles(old, fast, bw=1.7e10).gather_fma_overlap == 0.6


def test_in_core_slowdowns_and_slowed_profile(bench):
    # each round's probe time over the best: 2, 1, 1.5 ms -> 2, 1, 1.5
    assert bench.in_core_slowdowns([2e-3, 1e-3, 1.5e-3]) == [2.0, 1.0, 1.5]
    a = _host()
    assert set(bench.IN_CORE_RATE_FIELDS) == {
        "fma_f64_per_s", "exp_per_s", "div_f64_per_s", "topk_bytes_per_s", "widen_f32_per_s",
        "widen_f16_per_s", "widen_bf16_per_s", "sweep_fma_per_s", "attend_fma_per_s",
        "attend1_fma_per_s", "exp_sum_per_s", "thread_fma_per_s", "column_copy_per_s",
        "dense_fma_per_s", "dense_f16_fma_per_s", "dense1_fma_per_s", "dense1_f16_fma_per_s",
    }  # fmt: skip
    b = bench.slowed_profile(a, 2.0)
    for f in bench.IN_CORE_RATE_FIELDS:
        assert getattr(b, f) == getattr(a, f) / 2.0, f
    # the memory rates, the overlaps and the fixed costs are the round's own or measured
    for f in ("mem_bandwidth_bytes_per_s", "gather_bytes_per_s", "stream_fma_overlap",
              "widen_fma_overlap", "gather_fma_overlap", "dense_call_s", "threads"):  # fmt: skip
        assert getattr(b, f) == getattr(a, f), f
    assert bench.slowed_profile(a, 1.0) == a
    # a profile without the optional in-core rates (measured before they were): still None
    old = a.replace(
        sweep_fma_per_s=None,
        exp_sum_per_s=None,
        attend_fma_per_s=None,
        attend1_fma_per_s=None,
        column_copy_per_s=None,
    )
    c = bench.slowed_profile(old, 2.0)
    assert c.sweep_fma_per_s is None and c.exp_sum_per_s is None and c.attend_fma_per_s is None
    assert c.attend1_fma_per_s is None and c.column_copy_per_s is None
    assert c.exp_per_s == 5e7 and c.fma_f64_per_s == 5e8


def test_round_profile_prices_a_round_at_its_probes(bench):
    # hand values: the round's streaming read 5e9 B/s, in-core slowdown 2, gather slowdown 4
    a = _host()
    r = bench.round_profile(a, 5e9, 2.0, 4.0)
    assert r.mem_bandwidth_bytes_per_s * r.mem_efficiency == 5e9
    assert r.gather_bytes_per_s == 5e8 and r.gather256_bytes_per_s == 3.75e8
    assert r.fma_f64_per_s == 5e8 and r.exp_per_s == 5e7 and r.widen_f16_per_s == 5e8
    assert r.sweep_fma_per_s == 2.5e8 and r.exp_sum_per_s == 8e7
    assert r.attend_fma_per_s == 3e8 and r.attend1_fma_per_s == 1e8
    # the overlaps and the fixed costs are the profile's
    for f in ("stream_fma_overlap", "gather_fma_overlap", "widen_fma_overlap", "sparq_call_s"):
        assert getattr(r, f) == getattr(a, f), f
    assert set(bench.GATHER_RATE_FIELDS) == {"gather_bytes_per_s", "gather256_bytes_per_s"}
    assert not set(bench.GATHER_RATE_FIELDS) & set(bench.IN_CORE_RATE_FIELDS)
    # a profile without the 256-byte rate keeps None
    r = bench.round_profile(a.replace(gather256_bytes_per_s=None), 5e9, 1.0, 2.0)
    assert r.gather256_bytes_per_s is None and r.gather_bytes_per_s == 1e9
    # a round at its best (slowdowns 1) at the profile's own read is the profile
    bw = a.mem_bandwidth_bytes_per_s * a.mem_efficiency
    assert bench.round_profile(a, bw, 1.0, 1.0) == a


def test_fastest_gathers_takes_both_rates_from_the_faster_profile(bench):
    # a gathers 512-byte rows at 2e9 (256-byte 1.5e9), b at 3e9 (1e9): both of b's, even
    # though a's 256-byte rate is the larger (one memory state for the line through the two)
    a = _host()
    b = a.replace(gather_bytes_per_s=3e9, gather256_bytes_per_s=1e9, fma_f64_per_s=7e9)
    for x, y in ((a, b), (b, a)):
        h = bench.fastest_gathers(a, x, y)
        assert h.gather_bytes_per_s == 3e9 and h.gather256_bytes_per_s == 1e9
        assert h.fma_f64_per_s == a.fma_f64_per_s  # the rest is the first argument's
    old = a.replace(gather256_bytes_per_s=None)
    assert bench.fastest_gathers(a, old, b).gather256_bytes_per_s == 1e9
    assert bench.fastest_gathers(a, b, old).gather256_bytes_per_s == 1e9
    assert bench.fastest_gathers(a, old, a).gather256_bytes_per_s is None  # a tie: the first
    assert bench.fastest_gathers(a, a, old).gather256_bytes_per_s == 1.5e9


def test_gather_probe_gathers_the_profile_microkernels_rows(bench):
    # the probe sums GATHER_PROBE_ROWS rows of ones (128 float32 each) per thread
    import numba
    import numpy as np

    from costmodel._hostbench import GATHER_ROW

    assert bench.GATHER_PROBE_ROW_BYTES == GATHER_ROW * 4  # the profile's 512-byte rows
    out = np.zeros(numba.get_num_threads(), dtype=np.float32)
    bench.gather_probe_fn(out)()
    assert (out == bench.GATHER_PROBE_ROWS * 128).all()


def test_llc_size_skips_entries_without_a_size(bench, tmp_path, monkeypatch):
    # A sysfs cache folder as a KVM guest showed it: index0..index3 and a `uevent` file.
    # Whatever order the folder lists them in, the largest size is the last-level cache;
    # the order that broke it (`uevent` first) is forced here, the other one too.
    for name, size in (("index0", "48K"), ("index1", "32K"), ("index2", "2048K"),
                       ("index3", "307200K")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(size + "\n")
    (tmp_path / "uevent").write_text("")
    (tmp_path / "index9").mkdir()  # a folder without a size file
    listed = sorted(os.listdir(tmp_path), key=lambda n: n != "uevent")
    assert listed[0] == "uevent"
    real = os.listdir
    for order in (listed, listed[::-1]):
        monkeypatch.setattr(
            bench.os, "listdir", lambda p, order=order: order if p == str(tmp_path) else real(p)
        )
        assert bench._llc_bytes(str(tmp_path)) == 307200 * 1024
    monkeypatch.setattr(bench.os, "listdir", real)
    (tmp_path / "index3" / "size").write_text("bogus\n")
    assert bench._llc_bytes(str(tmp_path)) == 2048 * 1024
    assert bench._llc_bytes(str(tmp_path / "missing")) == 32 << 20  # the documented default


def test_evict_mb_must_be_positive(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--evict-mb", "0", "--quick"])
    assert "--evict-mb: expected a positive number of MiB, got 0" in capsys.readouterr().err
