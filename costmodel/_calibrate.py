"""Measurements behind ``sparq hardware calibrate`` (needs PyTorch; a CUDA GPU for a GPU
profile). Imported lazily: the cost model itself never needs torch.

:func:`measure` runs the microbenchmarks and returns (and keeps rewriting to ``out``) one
JSON-able dict; :mod:`costmodel.calibration` fits a profile to it. Sections:

``host``
    Per framework op: host time to issue it (``host_s``: wall time of 400 back-to-back calls
    on tiny tensors, no synchronisation inside, divided by 400) and its device time
    (``device_s``: the same op replayed from a CUDA graph, so no host cost is in it). Also
    the wall time of an idle ``synchronize()`` and of one synchronised tiny op (``sync; t;
    op; sync; t``, the way the public SparQ microbenchmark times a call).
``read``
    ``x.sum(dtype=float32)`` over fp16 buffers of 1 MiB .. 8 GiB, device time.
``dense``
    Decode attention ``q (B,H,1,d)``, ``K, V (B,H,S,d)``, fp16, on a (batch, S) grid, for
    SDPA with each backend (default, cudnn, flash, efficient, math) and the op-by-op
    ``softmax(q K^T / sqrt(d)) V`` (4 ops). ``device_s``: CUDA-graph replay of 10 calls,
    cycling over enough copies of K, V to defeat L2; ``wall_s``: median wall time of
    individually synchronised calls on one copy (the public microbenchmark's timing).
``topk``
    ``torch.topk`` of fp16 rows (rows, n) for k = 128 and n / 16, device time.
``sparq``
    SparQ op by op as the public microbenchmark issues it (22 ops: see
    docs/costmodel.md, "eager"), with its step-1 kernel rewritten here (one Triton program
    per (batch, head) row gathering r rows of K^T in chunks of 512 columns), K stored twice
    and once, on a (batch, S) grid; ``wall_s`` as for dense; ``device_s`` (and
    ``step1_device_s``) CUDA-graph replay of 5 calls on one copy of K, V: unlike dense, L2 is
    not defeated, so points whose step-1 reads fit in L2 can read from it.

Every timed quantity is the median of its repetitions; the raw numbers are kept.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time

H, D = 32, 128
DENSE_BATCHES = (1, 2, 4, 8, 16, 32, 64)
DENSE_SEQS = (1024, 2048, 4096, 8192, 16384)
SPARQ_BATCHES = (1, 4, 16, 64)
SPARQ_SEQS = (1024, 4096, 16384)
SPARQ_R, SPARQ_K = 32, 128
#: (batches, sequence lengths) of the dense and SparQ grids, and their --quick versions
DENSE_GRID, SPARQ_GRID = (DENSE_BATCHES, DENSE_SEQS), (SPARQ_BATCHES, SPARQ_SEQS)
QUICK_DENSE_GRID, QUICK_SPARQ_GRID = ((1, 2), (64, 128)), ((1, 2), (256, 512))
TOPK_ROWS = (32, 512, 2048)
TOPK_NS = (1024, 4096, 16384, 65536)
#: bytes of K and V cycled through in device timing (> 4 x a 50 MB L2)
ROTATE_BYTES = 256 * 2**20
BACKENDS = ("default", "cudnn", "flash", "efficient", "math", "ops")

_gbmv_kernel = None


def _triton_gbmv():
    """The step-1 kernel: ``y[row, s] = sum_j q[row, i[row, j]] * Kt[row, i[row, j], s]``,
    one program per row looping over column chunks (the public kernel's decomposition)."""
    global _gbmv_kernel
    if _gbmv_kernel is not None:
        return _gbmv_kernel
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(
        q_ptr,
        kt_ptr,
        i_ptr,
        y_ptr,
        n_cols,
        q_s0,
        q_s1,
        kt_s0,
        kt_s1,
        kt_s2,
        i_s0,
        i_s1,
        R: tl.constexpr,
        CHUNK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)  # row * stride overflows int32 at B*H*d*S > 2**31
        idx = tl.load(i_ptr + row * i_s0 + tl.arange(0, R) * i_s1)
        qv = tl.load(q_ptr + row * q_s0 + idx * q_s1).to(tl.float32)
        for c in range(0, tl.cdiv(n_cols, CHUNK)):
            cols = c * CHUNK + tl.arange(0, CHUNK)
            m = cols < n_cols
            kv = tl.load(
                kt_ptr + row * kt_s0 + (idx * kt_s1)[:, None] + (cols * kt_s2)[None, :],
                mask=m[None, :],
                other=0.0,
            ).to(tl.float32)
            y = tl.sum(qv[:, None] * kv, 0)
            tl.store(y_ptr + row * n_cols + cols, y.to(y_ptr.dtype.element_ty), mask=m)

    _gbmv_kernel = kernel
    return kernel


def gather_bmv(q, kt, idx, chunk: int = 512):
    """``q (B,H,1,d)``, ``kt (B,H,d,S)`` (any strides), ``idx (B,H,1,r)`` -> ``(B,H,1,S)``."""
    import torch

    B, Hh, _, d = q.shape
    S = kt.shape[-1]
    r = idx.shape[-1]
    q2 = q.reshape(B * Hh, d)
    kt3 = kt.flatten(end_dim=1)
    i2 = idx.reshape(B * Hh, r)
    y = torch.empty((B * Hh, S), dtype=q.dtype, device=q.device)
    if q.device.type != "cuda":  # CPU path (dry run): same arithmetic with torch ops
        qg = torch.gather(q2, 1, i2)
        kg = torch.gather(kt3, 1, i2[:, :, None].expand(B * Hh, r, S))
        y = torch.bmm(qg[:, None, :].float(), kg.float())[:, 0].to(q.dtype)
        return y.view(B, Hh, 1, S)
    _triton_gbmv()[(B * Hh,)](
        q2,
        kt3,
        i2,
        y,
        S,
        q2.stride(0),
        q2.stride(1),
        kt3.stride(0),
        kt3.stride(1),
        kt3.stride(2),
        i2.stride(0),
        i2.stride(1),
        R=r,
        CHUNK=chunk,
    )
    return y.view(B, Hh, 1, S)


def sparq_ops(q, k1t, k2, v, v_mean, r: int, k: int):
    """SparQ decode attention, one framework op per line, as the public microbenchmark
    issues it (22 kernels: 7 for the scale, step 1, 2 for its softmax, top-k, 2 gathers, 4
    for attention, 5 for the interpolation)."""
    import torch

    d = q.shape[-1]
    absq = torch.abs(q)  # 1
    absq_r, i1 = torch.topk(absq, r, -1)  # 2
    scale = torch.sqrt(d * absq_r.sum(-1, keepdim=True) / absq.sum(-1, keepdim=True))  # 3-7
    s_hat = gather_bmv(q, k1t, i1)  # 8
    s_hat = torch.softmax(s_hat.div_(scale), dim=-1)  # 9, 10
    w, i2 = torch.topk(s_hat, k, -1)  # 11
    ikv = i2[..., 0, :, None].expand(*i2.shape[:2], k, d)
    kg, vg = k2.gather(-2, ikv), v.gather(-2, ikv)  # 12, 13
    att = torch.softmax((q @ kg.transpose(2, 3)).div_(d**0.5), dim=-1) @ vg  # 14-17
    alpha = w.sum(-1, keepdim=True)  # 18
    return alpha * att + (1 - alpha) * v_mean  # 19-22


SPARQ_KERNELS = 22


def dense_ops(q, k, v):
    """The op-by-op dense attention: matmul, in-place scale, softmax, matmul (4 kernels)."""
    import torch

    s = (q @ k.transpose(2, 3)).div_(q.shape[-1] ** 0.5)
    return torch.softmax(s, dim=-1) @ v


class _Timer:
    def __init__(self, torch, device):
        self.torch = torch
        self.cuda = device.type == "cuda"
        self.device = device

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def _per_call(self, run, n: int, reps: int, *, events: bool) -> float:
        """Median over ``reps`` runs of ``run()`` (``n`` calls each) of its time per call:
        CUDA events around it (``events``), else the host clock (then a synchronisation,
        untimed, after each run)."""
        ts = []
        for _ in range(reps):
            if events:
                a = self.torch.cuda.Event(enable_timing=True)
                b = self.torch.cuda.Event(enable_timing=True)
                a.record()
                run()
                b.record()
                self.torch.cuda.synchronize()
                ts.append(a.elapsed_time(b) * 1e-3 / n)  # elapsed_time is in ms
            else:
                t = time.perf_counter()
                run()
                ts.append((time.perf_counter() - t) / n)
                self.sync()
        return statistics.median(ts)

    def device_time(self, fn, n: int = 10, reps: int = 3) -> tuple[float, str]:
        """Device time per call of ``fn(i)``: CUDA-graph replay of ``n`` calls (events),
        median of ``reps`` replays; falls back to events around an eager loop (the second
        value says which, and why). On a CPU: wall time of the loop."""
        torch = self.torch

        def loop():
            for i in range(n):
                fn(i)

        if not self.cuda:
            fn(0)
            return self._per_call(loop, n, reps, events=False), "cpu loop"
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for i in range(2):
                    fn(i)
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                loop()
            g.replay()
            torch.cuda.synchronize()
            t = self._per_call(g.replay, n, reps, events=True)
            del g
            return t, "cuda graph"
        except Exception as exc:  # say why: an eager loop of small ops times the host
            torch.cuda.synchronize()
            fn(0)
            how = f"events around an eager loop (CUDA graph failed: {type(exc).__name__})"
            return self._per_call(loop, n, reps, events=True), how

    def wall_time(self, fn, reps: int = 10, prep=None) -> tuple[float, float, list]:
        """Median and minimum wall time of ``sync; t0; fn(); sync; t1`` (the public
        microbenchmark's timing; ``prep()`` runs before the first sync, untimed)."""
        for _ in range(2):
            if prep:
                prep()
            fn()
        ts = []
        for _ in range(reps):
            if prep:
                prep()
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts), min(ts), ts

    def host_time(self, fn, n: int = 400) -> float:
        """Host time per call of ``n`` back-to-back calls without synchronisation inside."""
        for _ in range(20):
            fn()
        self.sync()

        def loop():
            for _ in range(n):
                fn()

        return self._per_call(loop, n, 3, events=False)


def _sdpa_context(torch, backend: str):
    import contextlib

    if backend in ("default", "ops"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {
        "cudnn": "CUDNN_ATTENTION",
        "flash": "FLASH_ATTENTION",
        "efficient": "EFFICIENT_ATTENTION",
        "math": "MATH",
    }[backend]
    return sdpa_kernel(getattr(SDPBackend, be))


def measure(
    *,
    device: str = "cuda",
    out: str | None = None,
    max_seconds: float = 420.0,
    quick: bool = False,
    log=print,
) -> dict:
    """Run every section (see the module docstring); returns the measurements.

    ``quick`` shrinks every grid to tiny sizes (a syntax check on a CPU). ``out``: a JSON
    path rewritten after every section. Sections that fail record their error and the run
    goes on; sections not started before ``max_seconds`` are skipped.
    """
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cuda' or 'cpu', got {device!r}")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
        raise TypeError(f"max_seconds: expected a number of seconds, got {max_seconds!r}")
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds: expected a positive finite number, got {max_seconds!r}")
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected a bool, got {quick!r}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected a path or None, got {out!r}")
    if not callable(log):
        raise TypeError(f"log: expected a callable, got {log!r}")
    import torch
    import torch.nn.functional as F

    t_start = time.time()
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    timer = _Timer(torch, dev)
    res: dict = {
        "format": "sparq hardware calibrate measurements, version 1",
        "device": device,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host_cpu": platform.processor() or platform.machine(),
        "quick": quick,
        "errors": {},
    }
    if cuda:
        props = torch.cuda.get_device_properties(dev)
        res.update(
            device_name=props.name,
            total_memory_bytes=props.total_memory,
            sm_count=props.multi_processor_count,
            l2_bytes=getattr(props, "L2_cache_size", None),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            import triton

            res["triton"] = triton.__version__
        except Exception as exc:  # pragma: no cover
            res["errors"]["triton"] = repr(exc)
    else:
        res.update(device_name=f"cpu ({platform.machine()})", threads=torch.get_num_threads())

    def save():
        res["elapsed_s"] = time.time() - t_start
        if out:
            with open(out, "w", encoding="utf-8") as f:
                json.dump(res, f, indent=1)

    def section(name, fn):
        if time.time() - t_start > max_seconds:
            res["errors"][name] = "skipped: out of time"
            log(f"[calibrate] {name}: skipped (out of time)")
            return
        t = time.time()
        try:
            fn()
        except Exception as exc:  # keep the other sections
            res["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            log(f"[calibrate] {name}: FAILED {exc!r}"[:500])
        if cuda:
            torch.cuda.empty_cache()
        log(f"[calibrate] {name}: {time.time() - t:.1f} s")
        save()

    f16 = torch.float16 if cuda else torch.float32
    res["dtype"] = str(f16).removeprefix("torch.")
    esize = 2 if cuda else 4

    # ---------------------------------------------------------------- host side
    def host():
        q = torch.randn(1, H, 1, D, dtype=f16, device=dev)
        kk = torch.randn(1, H, 64, D, dtype=f16, device=dev)
        vv = torch.randn(1, H, 64, D, dtype=f16, device=dev)
        s = torch.randn(1, H, 1, 64, dtype=f16, device=dev)
        s1k = torch.randn(1, H, 1, 1024, dtype=f16, device=dev)
        idx = torch.topk(s, 16, -1).indices[..., 0, :, None].expand(1, H, 16, D)
        x = torch.randn(1024, dtype=f16, device=dev)
        ops = {
            "add": lambda: x + 1,
            "mul": lambda: x * x,
            "div": lambda: x / 3.0,
            "abs": lambda: torch.abs(x),
            "sqrt": lambda: torch.sqrt(x),
            "rsub": lambda: 1 - x,
            "sum": lambda: q.sum(-1, keepdim=True),
            "softmax": lambda: torch.softmax(s, -1),
            "matmul": lambda: q @ kk.transpose(2, 3),
            "topk_d": lambda: torch.topk(q, 32, -1),
            "topk_1k": lambda: torch.topk(s1k, 128, -1),
            "gather": lambda: kk.gather(-2, idx),
            "view": lambda: q.transpose(2, 3),
            "sdpa_default": lambda: F.scaled_dot_product_attention(q, kk, vv),
        }
        if cuda:
            ops["gather_bmv"] = lambda: gather_bmv(
                q, kk.transpose(2, 3), torch.zeros(1, H, 1, 32, dtype=torch.int64, device=dev)
            )
        rows = {}
        for name, fn in ops.items():
            try:
                row = {"host_s": timer.host_time(fn)}
                if name != "view":
                    row["device_s"], row["device_timing"] = timer.device_time(
                        lambda i, fn=fn: fn(), n=20
                    )
                rows[name] = row
            except Exception as exc:
                rows[name] = {"error": repr(exc)[:300]}
        for be in ("cudnn", "flash", "efficient", "math"):
            try:
                with _sdpa_context(torch, be):
                    rows[f"sdpa_{be}"] = {
                        "host_s": timer.host_time(lambda: F.scaled_dot_product_attention(q, kk, vv))
                    }
            except Exception as exc:
                rows[f"sdpa_{be}"] = {"error": repr(exc)[:300]}
        try:

            def enter_exit():
                with _sdpa_context(torch, "flash"):
                    pass

            rows["sdpa_kernel_context"] = {"host_s": timer.host_time(enter_exit)}
        except Exception as exc:
            rows["sdpa_kernel_context"] = {"error": repr(exc)[:300]}
        res["host_ops"] = rows
        # idle synchronisation and one synchronised tiny op (wall clock)
        sync_ts, rt_ts, empty_ts = [], [], []
        for _ in range(300):
            timer.sync()
            t = time.perf_counter()
            timer.sync()
            sync_ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            x.add(1)
            timer.sync()
            rt_ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            empty_ts.append(time.perf_counter() - t)
        res["host_sync"] = {
            "idle_sync_s": statistics.median(sync_ts),
            "tiny_op_round_trip_s": statistics.median(rt_ts),
            "tiny_op_round_trip_min_s": min(rt_ts),
            "timer_overhead_s": statistics.median(empty_ts),
        }

    section("host", host)

    # ---------------------------------------------------------------- read bandwidth
    def read():
        rows = []
        hi = 23 if quick else 34
        for p in range(20, hi):
            nbytes = 2**p
            a = torch.ones(nbytes // esize, dtype=f16, device=dev)
            t, how = timer.device_time(lambda i, a=a: a.sum(dtype=torch.float32), n=10)
            rows.append({"bytes": nbytes, "time_s": t, "bytes_per_s": nbytes / t, "timing": how})
            del a
        res["read"] = rows

    section("read", read)

    def grid_section(name, grid, budget, point):
        """Section ``name``: one row ``point(B, S)`` per point of the ``(batches, seqs)``
        grid, until ``budget`` x ``max_seconds`` has passed (then noted in ``errors``); the
        tensors of a point are freed (and the file saved) before the next."""

        def run():
            rows = []
            res[name] = rows
            for B in grid[0]:
                for S in grid[1]:
                    if time.time() - t_start > max_seconds * budget:
                        res["errors"][name] = f"stopped at B={B} S={S}: out of time"
                        return
                    rows.append(point(B, S))
                    if cuda:
                        torch.cuda.empty_cache()
                    save()

        section(name, run)

    def point_row(B, S, **extra):
        return {"batch": B, "heads": H, "head_dim": D, "seq_len": S, **extra}

    def kv(B, S):
        return torch.randn(B, H, S, D, dtype=f16, device=dev)

    def wall(call, q, reps):
        """``timer.wall_time`` of ``call(0)`` with a fresh ``q`` before each call."""
        return timer.wall_time(
            lambda: call(0), reps=reps, prep=lambda: torch.randn(*q.shape, out=q)
        )

    # ---------------------------------------------------------------- dense grid
    def dense_point(B, S):
        kv_bytes = 2 * B * H * S * D * esize
        nbuf = max(1, min(8, math.ceil(ROTATE_BYTES / kv_bytes)))
        ks = [kv(B, S) for _ in range(nbuf)]
        vs = [kv(B, S) for _ in range(nbuf)]
        q = torch.randn(B, H, 1, D, dtype=f16, device=dev)
        row = point_row(B, S, kv_bytes=kv_bytes, buffers=nbuf)
        for be in BACKENDS:
            if be == "cudnn" and not cuda:
                continue
            try:
                if be == "ops":

                    def call(i, ks=ks, vs=vs, q=q):
                        return dense_ops(q, ks[i % len(ks)], vs[i % len(vs)])
                else:

                    def call(i, ks=ks, vs=vs, q=q):
                        return F.scaled_dot_product_attention(q, ks[i % len(ks)], vs[i % len(vs)])

                with _sdpa_context(torch, be):
                    dev_t, how = timer.device_time(call, n=10)
                    wall_s, wall_min, _ = wall(call, q, 7 if kv_bytes > 2**31 else 12)
                row[f"{be}_device_s"] = dev_t
                row[f"{be}_wall_s"] = wall_s
                row[f"{be}_wall_min_s"] = wall_min
                row[f"{be}_device_timing"] = how
            except Exception as exc:
                row[f"{be}_error"] = f"{type(exc).__name__}: {exc}"[:200]
        return row

    grid_section("dense", QUICK_DENSE_GRID if quick else DENSE_GRID, 0.55, dense_point)

    # ---------------------------------------------------------------- top-k
    def topk():
        rows = []
        for R in (32, 64) if quick else TOPK_ROWS:
            for n in (1024,) if quick else TOPK_NS:
                s = torch.randn(R, n, dtype=f16, device=dev)
                for kk in sorted({128, n // 16}):
                    t, how = timer.device_time(lambda i, s=s, kk=kk: torch.topk(s, kk, -1), n=10)
                    rows.append(
                        {
                            "rows": R,
                            "n": n,
                            "k": kk,
                            "time_s": t,
                            "input_bytes_per_s": s.numel() * esize / t,
                            "timing": how,
                        }
                    )
                del s
        res["topk"] = rows

    section("topk", topk)

    # ---------------------------------------------------------------- SparQ op by op
    r, kk = (8, 32) if quick else (SPARQ_R, SPARQ_K)

    def sparq_point(B, S):
        k, v = kv(B, S), kv(B, S)
        kt = k.transpose(2, 3).contiguous()  # (B, H, d, S): the second copy of K
        v_mean = v.mean(dim=-2, keepdim=True)
        q = torch.randn(B, H, 1, D, dtype=f16, device=dev)
        kv_bytes = 2 * B * H * S * D * esize
        row = point_row(B, S, r=r, k=kk, kv_bytes=kv_bytes, kernels=SPARQ_KERNELS)
        for mode, k1t in (("twice", kt), ("once", k.transpose(2, 3))):
            try:

                def call(i, k1t=k1t):
                    return sparq_ops(q, k1t, k, v, v_mean, r, kk)

                wall_s, wall_min, samples = wall(call, q, 30)
                row[f"{mode}_wall_s"] = wall_s
                row[f"{mode}_wall_min_s"] = wall_min
                row[f"{mode}_wall_samples_s"] = samples
                row[f"{mode}_host_s"] = timer.host_time(lambda call=call: call(0), n=20)
                dev_t, how = timer.device_time(call, n=5)
                row[f"{mode}_device_s"] = dev_t
                row[f"{mode}_device_timing"] = how
                # step 1 alone (the gather-matmul kernel), device time
                i1 = torch.topk(q.abs(), r, -1).indices
                t1, _ = timer.device_time(lambda i, k1t=k1t, i1=i1: gather_bmv(q, k1t, i1), n=5)
                row[f"{mode}_step1_device_s"] = t1
            except Exception as exc:
                row[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return row

    grid_section("sparq", QUICK_SPARQ_GRID if quick else SPARQ_GRID, 0.95, sparq_point)
    res["finished"] = True
    save()
    return res


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file for the measurements")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=420.0)
    a = ap.parse_args()
    measure(device=a.device, out=a.out, quick=a.quick, max_seconds=a.max_seconds)
