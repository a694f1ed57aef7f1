"""Benchmark: exact and bucketed top-k vs numpy.argpartition + sort and torch.topk (CPU).

Run ``python benchmarks/bench_topk.py`` (``--quick`` for a smoke run). Every method runs
side by side in one process on the same float32 standard-normal input (fixed seed); each
is warmed up (Numba compiled) first and timed as the best of several repeats.

Methods (all return the k indices per row in sorted order):

- ``topk``: :func:`reference.topk` (exact; Numba, parallel over rows).
- ``bucketed``: :func:`reference.bucketed_topk` with ``k_per_bucket=1``,
  ``num_buckets=k``, interleaved (approximate; Numba, parallel over rows).
- ``argpart``: ``np.argpartition(x, n - k)`` then a sort of the k survivors (one thread).
- ``torch``: ``torch.topk(x, k, sorted=True)`` on CPU, when torch imports.

Ratios: ``argpart/topk`` (target >= 1: exact topk no slower than argpartition + sort);
``ext/bucketed``: the faster of argpart and torch over bucketed; ``exact/bucketed``: the
fastest exact method including this package's own ``topk`` over bucketed (target >= 3 at
n >= 16384).

A second table times the selection SparQ's kernel makes, on one thread: ``topk_set_into``
of a row of 32768 float64 scores (N(0, 9), the last 512 set to +inf: the forced local
window) at k = S/8 and S/16, per row; and the rank selection of that row's strided sample
(4096 values, every 8th) by the value-only quickselect the kernel uses
(``reference._topk_exact._value_at_rank``) against the pair introselect on (value, index)
(``reference._pairsort._select``, which selected it before), with their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

# Numba (OpenMP layer) and torch each bring an OpenMP runtime; on a 2-core box their idle
# threads spin against each other unless told to sleep. Set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Numba's OpenMP layer loses most of its 2-thread speed-up on this shared 2-core box when
# other processes run (a descheduled worker stalls the whole prange); the workqueue layer
# does not. Override with NUMBA_THREADING_LAYER=omp to compare.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from reference._config import get_num_threads, njit_serial  # noqa: E402
from reference._pairsort import _select  # noqa: E402
from reference._topk_exact import _value_at_rank  # noqa: E402
from reference.selection import (  # noqa: E402
    bucketed_topk,
    topk,
    topk_buffer_size,
    topk_set_into,
)

try:
    import torch
except ImportError:  # pragma: no cover - optional
    torch = None


def _argpart_sort(x: np.ndarray, k: int) -> np.ndarray:
    n = x.shape[-1]
    part = np.argpartition(x, n - k, axis=-1)[:, n - k :]
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.argsort(vals, axis=-1, kind="stable")[:, ::-1]
    return np.take_along_axis(part, order, axis=-1)


def _best_times(fns: dict, repeats: int) -> dict:
    """Best-of-``repeats`` time of each function, timed round-robin (so that load from
    other processes on this shared box hits every method alike); one warm-up call each."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, np.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@njit_serial
def _set_rows(x, k, out, bv, bi, reps):
    for _ in range(reps):
        topk_set_into(x, k, out, bv, bi)


@njit_serial
def _rank_by_value(sv, rank, w, reps):
    v = 0.0
    for _ in range(reps):
        v = _value_at_rank(sv, sv.shape[0], rank, w)
    return v


@njit_serial
def _rank_by_pairs(sv, rank, reps):
    v = 0.0
    for _ in range(reps):
        a = sv.copy()
        idx = np.arange(a.shape[0])
        _select(a, idx, 0, a.shape[0], rank)
        v = a[rank]
    return v


def sparq_selection_table(rng: np.random.Generator, repeats: int, reps: int = 50) -> None:
    """Print the second table (see the module docstring): microseconds per call, best of
    ``repeats`` round-robin rounds of ``reps`` calls each."""
    n = 32768
    x = rng.standard_normal(n) * 3.0
    x[-512:] = np.inf
    sv = np.ascontiguousarray(x[::8])
    w = np.empty((3, sv.size))
    print("\n# SparQ's selection, one thread, a row of 32768 float64 scores; us per call")
    print("| what | k | us | pair/value |")
    print("|---|---|---|---|")
    for div in (8, 16):
        k = n // div
        cap = topk_buffer_size(n, k)
        bv, bi, out = np.empty(cap), np.empty(cap, dtype=np.int64), np.empty(k, dtype=np.int64)
        t = _best_times(
            {"set": lambda k=k, bv=bv, bi=bi, out=out: _set_rows(x, k, out, bv, bi, reps)}, repeats
        )
        print(f"| topk_set_into | S/{div} | {1e6 * t['set'] / reps:.1f} | - |", flush=True)
    for rank in (127, 319, 2047):
        t = _best_times(
            {
                "value": lambda rank=rank: _rank_by_value(sv, rank, w, reps),
                "pairs": lambda rank=rank: _rank_by_pairs(sv, rank, reps),
            },
            repeats,
        )
        assert _rank_by_value(sv, rank, w, 1) == _rank_by_pairs(sv, rank, 1)
        print(
            f"| rank {rank} of the 4096-value sample: value quickselect / pair introselect "
            f"| - | {1e6 * t['value'] / reps:.1f} / {1e6 * t['pairs'] / reps:.1f} "
            f"| {t['pairs'] / t['value']:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer cases, 1 repeat")
    ap.add_argument(
        "--repeat",
        "--repeats",
        dest="repeat",
        type=int,
        default=None,
        help="timed repeats, best of (as in the other benchmarks; --repeats: old spelling)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.quick:
        shapes = [(1, 65536), (16, 16384), (2, 262144)]
        ks = [16, 1024]
        repeats = args.repeat or 1
    else:
        shapes = [(1, 65536), (256, 16384), (32, 262144)]
        ks = [16, 256, 1024]
        repeats = args.repeat or 7

    rng = np.random.default_rng(args.seed)
    tinfo = f"{torch.__version__} ({torch.get_num_threads()} threads)" if torch else "absent"
    print(
        f"# bench_topk: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"numba {get_num_threads()} threads ({os.environ.get('NUMBA_THREADING_LAYER')}), "
        f"torch {tinfo}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, float32 N(0,1), "
        f"best of {repeats} round-robin; times in ms"
    )
    cols = [
        "rows x n",
        "k",
        "topk",
        "bucketed",
        "argpart",
        "torch",
        "argpart/topk",
        "ext/bucketed",
        "exact/bucketed",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for rows, n in shapes:
        x = rng.standard_normal((rows, n), dtype=np.float32)
        xt = torch.from_numpy(x) if torch is not None else None
        for k in ks:
            # Sanity: the exact methods agree on the selected values.
            ref_vals = np.take_along_axis(x, _argpart_sort(x, k), axis=-1)
            assert np.array_equal(topk(x, k)[0], ref_vals), "topk disagrees with argpartition"

            fns = {
                "topk": lambda x=x, k=k: topk(x, k),
                "bucketed": lambda x=x, k=k: bucketed_topk(x, k, num_buckets=k),
                "argpart": lambda x=x, k=k: _argpart_sort(x, k),
            }
            if xt is not None:
                fns["torch"] = lambda xt=xt, k=k: torch.topk(xt, k, dim=-1)
            t = _best_times(fns, repeats)
            t_topk, t_buck, t_arg = t["topk"], t["bucketed"], t["argpart"]
            t_torch = t.get("torch", np.inf)
            best_ext = min(t_arg, t_torch)
            best_exact = min(t_topk, best_ext)
            cells = [
                f"{rows} x {n}",
                str(k),
                f"{1e3 * t_topk:.3f}",
                f"{1e3 * t_buck:.3f}",
                f"{1e3 * t_arg:.3f}",
                f"{1e3 * t_torch:.3f}" if np.isfinite(t_torch) else "-",
                f"{t_arg / t_topk:.2f}",
                f"{best_ext / t_buck:.2f}",
                f"{best_exact / t_buck:.2f}",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
    sparq_selection_table(rng, repeats, reps=5 if args.quick else 50)
    return 0


if __name__ == "__main__":
    sys.exit(main())
