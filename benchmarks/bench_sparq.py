"""Time the SparQ reference three ways, side by side in one run.

    python benchmarks/bench_sparq.py            # B=1 H=32 Hkv=8 S=32768 d=128 r=16 k=512
    python benchmarks/bench_sparq.py --quick    # a small shape, for a smoke run

1. ``sparq_attention`` (Numba-parallel kernel over (batch, KV head) rows, float64)
2. ``sparq_attention_twin`` (the float64 NumPy twin: loops over rows, readable)
3. a plain vectorised NumPy version written here (batched gathers and einsums, float64)

The vectorised version is checked against the kernel before timing (same output to 1e-10),
so the three rows time the same computation.  Times are the best of ``--repeat`` runs after
one warm-up call (which also compiles the kernel).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from reference import get_num_threads, sparq_attention, sparq_attention_twin


def sparq_vectorised(q, K, V, mask, r, k, local_window):
    """SparQ (group selection, logit scores, L1 temperature) with batched NumPy operations."""
    B, H, d = q.shape
    Hkv = K.shape[1]
    g = H // Hkv
    qg = q.reshape(B, Hkv, g, d)
    i1 = np.argsort(-np.abs(qg).sum(2), axis=-1, kind="stable")[..., :r]  # (B, Hkv, r)
    qs = np.take_along_axis(qg, i1[:, :, None, :], axis=3)  # (B, Hkv, g, r)
    Ks = np.take_along_axis(K, i1[:, :, None, :], axis=3)  # (B, Hkv, S, r)
    tau = np.sqrt(d * np.abs(qs).sum(-1) / np.abs(qg).sum(-1))  # (B, Hkv, g)
    s = np.einsum("bkgr,bksr->bkgs", qs, Ks) / tau[..., None]
    s = np.where(mask[:, None, None, :], s, -np.inf)
    score = s.sum(2)  # (B, Hkv, S)
    recent = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1]  # valid positions at or after j
    score = np.where((mask & (recent <= local_window))[:, None, :], np.inf, score)
    i2 = np.argpartition(-score, k - 1, axis=-1)[..., :k]  # (B, Hkv, k)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    alpha = np.take_along_axis(p, i2[:, :, None, :], axis=3).sum(-1)  # (B, Hkv, g)
    Kk = np.take_along_axis(K, i2[..., None], axis=2)  # (B, Hkv, k, d)
    Vk = np.take_along_axis(V, i2[..., None], axis=2)
    logits = np.einsum("bkgd,bksd->bkgs", qg, Kk) / math.sqrt(d)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    y = np.einsum("bkgs,bksd->bkgd", w, Vk)
    w_mask = mask[:, None, :, None]
    v_mean = (V * w_mask).sum(2) / w_mask.sum(2)  # (B, Hkv, d)
    out = alpha[..., None] * y + (1 - alpha[..., None]) * v_mean[:, :, None, :]
    return out.reshape(B, H, d)


def best_of(fn, repeat):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shape for a smoke run")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats, best of (3)")
    a = ap.parse_args(argv)
    B, H, Hkv, S, d, r, k, lw = (1, 8, 2, 2048, 64, 8, 64, 16) if a.quick else (
        1, 32, 8, 32768, 128, 16, 512, 128)  # fmt: skip
    rng = np.random.default_rng(0)
    q = rng.normal(size=(B, H, d))
    K = rng.normal(size=(B, Hkv, S, d))
    V = rng.normal(size=(B, Hkv, S, d))
    mask = np.ones((B, S), dtype=bool)
    kw = dict(r=r, k=k, local_window=lw, mask=mask)

    ref = sparq_attention(q, K, V, **kw)
    vec = sparq_vectorised(q, K, V, mask, r, k, lw)
    diff = float(np.abs(ref - vec).max())
    assert diff < 1e-10, f"vectorised NumPy version disagrees with the kernel: {diff}"

    t_numba = best_of(lambda: sparq_attention(q, K, V, **kw), a.repeat)
    t_vec = best_of(lambda: sparq_vectorised(q, K, V, mask, r, k, lw), a.repeat)
    t_twin = best_of(lambda: sparq_attention_twin(q, K, V, **kw), max(1, a.repeat // 3))

    print(f"SparQ B={B} H={H} Hkv={Hkv} S={S} d={d} r={r} k={k} local_window={lw}, float64")
    print(f"numba threads: {get_num_threads()}; max |kernel - vectorised| = {diff:.1e}")
    print(f"{'implementation':<34}{'time (ms)':>12}{'kernel speed-up':>18}")
    for name, t in (
        ("Numba kernel (sparq_attention)", t_numba),
        ("plain NumPy, vectorised", t_vec),
        ("float64 twin (sparq_attention_twin)", t_twin),
    ):
        print(f"{name:<34}{t * 1e3:>12.2f}{t / t_numba:>17.1f}x")


if __name__ == "__main__":
    main()
