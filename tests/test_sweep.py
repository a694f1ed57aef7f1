"""The permanent robustness sweep: every public function and CLI command, wide arguments.

Hypothesis draws arguments from wide strategies (mostly valid values, so that the deep
paths run, mixed with huge, negative, non-integer, NaN/inf, wrong-typed and empty ones)
and each call runs in one long-lived worker process (``tests/_sweep_worker.py``) under a
time cap and a memory cap. Every call must end in

* the right answer (checked in the worker against an independent route where one exists:
  the NumPy twin, an invariant of the result), or
* a ``ValueError`` / ``TypeError`` whose message names one of the arguments passed, or
* for the CLI: exit status 0, or 2 with an ``error:`` line naming an option or command,
  and never a traceback.

A ``MemoryError`` (the worker's ``RLIMIT_DATA``), a peak resident memory above
:data:`MEM_CAP_BYTES` for the call, a call that runs past :data:`TIME_CAP_S`, any other
exception or a wrong answer fails the test with the arguments that caused it.

Slow-marked: it runs in CI (``CI=true pytest``) and with ``--runslow``. The number of calls
is :data:`EXAMPLES` per target (``SPARQ_SWEEP_EXAMPLES`` overrides it).
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# (a safety net against a hang, not a speed check: a worker's first call compiles its
# kernels, and under pytest-xdist another worker may be compiling beside it)
TIME_CAP_S = 120.0
MEM_CAP_BYTES = 2 * 2**30
EXAMPLES = int(os.environ.get("SPARQ_SWEEP_EXAMPLES", "200"))
CALLS: dict[str, int] = {}


# --- the worker -----------------------------------------------------------------------------


class Worker:
    """One long-lived worker process; restarted after a crash or a timeout."""

    def __init__(self):
        self.proc = None

    def _start(self):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_sweep_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(root),
        )  # fmt: skip

    def call(self, target: str, kwargs: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = pickle.dumps((target, kwargs))
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()
        out = self.proc.stdout
        t0 = time.monotonic()
        buf = b""
        need = 8
        size = None
        while len(buf) < need:
            left = TIME_CAP_S - (time.monotonic() - t0)
            ready, _, _ = select.select([out], [], [], max(left, 0))
            if not ready:
                self.kill()
                return {"kind": "timeout", "message": f"no answer within {TIME_CAP_S} s"}
            chunk = os.read(out.fileno(), 1 << 20)
            if not chunk:
                code = self.proc.wait()
                self.proc = None
                return {"kind": "died", "message": f"worker exited with status {code}"}
            buf += chunk
            if size is None and len(buf) >= 8:
                (size,) = struct.unpack("<Q", buf[:8])
                need = 8 + size
        reply = pickle.loads(buf[8:need])
        reply["seconds"] = time.monotonic() - t0
        return reply

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.kill()
    total = sum(CALLS.values())
    sys.stderr.write(f"\nrobustness sweep: {total} calls over {len(CALLS)} targets\n")


def _short(kwargs) -> str:
    def one(v):
        if isinstance(v, np.ndarray):
            return f"array(shape={v.shape}, dtype={v.dtype})"
        r = repr(v)
        return r if len(r) < 80 else r[:77] + "..."

    return ", ".join(f"{k}={one(v)}" for k, v in kwargs.items())


def _names(kwargs) -> list[str]:
    """What an error may name: an argument, or the file/profile name it was given (a loader
    reports "<path>: not valid TOML")."""
    return list(kwargs) + [v for v in kwargs.values() if isinstance(v, str) and len(v) > 1]


def judge(worker: Worker, target: str, kwargs: dict) -> dict:
    """Run one call and fail the test unless it ended in an accepted way."""
    CALLS[target] = CALLS.get(target, 0) + 1
    reply = worker.call(target, kwargs)
    where = f"{target}({_short(kwargs)})"
    kind = reply["kind"]
    if kind in ("timeout", "died"):
        pytest.fail(f"{where}: {reply['message']}")
    extra = reply["peak_rss"] - reply["base_rss"]
    if extra > MEM_CAP_BYTES:
        pytest.fail(f"{where}: peak memory grew by {extra / 2**30:.2f} GiB")
    if kind == "crash":
        pytest.fail(f"{where}: {reply['type']}\n{reply['message']}")
    if kind == "wrong":
        pytest.fail(f"{where}: wrong answer: {reply['message']}")
    if kind == "error":
        msg = reply["message"]
        if not any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", msg) for n in _names(kwargs)):
            pytest.fail(f"{where}: {reply['type']} names no argument: {msg!r}")
    return reply


# --- strategies ------------------------------------------------------------------------------

SPECIAL_INTS = [0, 1, -1, 2, 3, 7, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**12,
                10**30]  # fmt: skip
wide_int = st.one_of(
    st.integers(-3, 80),
    st.sampled_from(SPECIAL_INTS),
    st.sampled_from([v for v in SPECIAL_INTS if 0 <= v < 2**64]).map(np.uint64),
    st.sampled_from([v for v in SPECIAL_INTS if -(2**31) <= v < 2**31]).map(np.int32),
)
bad_scalar = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.just([1, 2]),
    st.just(np.float32(1.5)),
    st.just(2 + 1j),
)
wide = st.one_of(wide_int, bad_scalar)


def maybe(valid, bad=wide):
    """Mostly ``valid`` (3 in 4 draws at first), else anything."""
    return st.one_of(valid, valid, valid, bad)


def small_ints(lo, hi):
    return maybe(st.integers(lo, hi))


DTYPES = ["float64", "float32", "float16", "bfloat16", "float64", "float32", "int32",
          "complex128", "bool", "float16"]  # fmt: skip


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            return a.astype(np.float32)
        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


@st.composite
def attention(draw, *, want_v=True):
    """q, k_cache, v_cache, mask with occasional corruption (dtype, shape, NaN/inf, scale)."""
    B = draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 2))
    g = draw(st.sampled_from([1, 2, 3]))
    H, S, d = Hkv * g, draw(st.integers(1, 40)), draw(st.sampled_from([1, 2, 4, 8, 16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.normal(size=(B, H, d))
    K = rng.normal(size=(B, Hkv, S, d))
    V = rng.normal(size=(B, Hkv, S, d))
    V *= draw(st.sampled_from([1.0, 1.0, 1.0, 1e-300, 1e30, 1e300, 1.7e308]))
    K *= draw(st.sampled_from([1.0, 1.0, 1.0, 1e-30, 1e150, 1e300]))
    mask = None
    if draw(st.booleans()):
        mask = rng.random((B, S)) < draw(st.sampled_from([0.3, 0.8, 1.0]))
        mask[:, -1] = draw(st.sampled_from([True, True, True, False]))
    corrupt = draw(st.sampled_from(["none"] * 8 + ["nan_q", "inf_k", "nan_v", "nan_masked_k",
                                                   "shape_q", "shape_v", "rank_k", "mask_int",
                                                   "mask_shape", "strided"]))  # fmt: skip
    if corrupt == "nan_q":
        q[0, 0, 0] = np.nan
    elif corrupt == "inf_k":
        K[0, 0, -1, 0] = np.inf
    elif corrupt == "nan_v":
        V[-1, -1, 0, -1] = np.nan
    elif corrupt == "nan_masked_k" and mask is not None and not mask[0].all():
        K[0, 0, int(np.flatnonzero(~mask[0])[0]), 0] = np.nan
    elif corrupt == "shape_q":
        q = q[:, :, : max(d - 1, 0)]
    elif corrupt == "shape_v":
        V = V[:, :, : max(S - 1, 0)]
    elif corrupt == "rank_k":
        K = K[0]
    elif corrupt == "mask_int" and mask is not None:
        mask = mask.astype(np.int64)
    elif corrupt == "mask_shape":
        mask = np.ones((B, S + 1), dtype=bool)
    elif corrupt == "strided":
        K = np.repeat(K, 2, axis=-1)[..., ::2]
    dt = draw(st.sampled_from(DTYPES))
    with np.errstate(over="ignore", invalid="ignore"):
        q, K, V = _cast(q, dt), _cast(K, draw(st.sampled_from(DTYPES))), _cast(V, dt)
    kw = {"q": q, "k_cache": K}
    if want_v:
        kw["v_cache"] = V
    if mask is not None:
        kw["mask"] = mask
    return kw, (B, H, Hkv, S, d)


def _sweep(strategy, n=None):
    """``@given(strategy)`` with the sweep's example count and the CI profile's settings."""

    def deco(f):
        return settings(
            max_examples=n or EXAMPLES,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.function_scoped_fixture,
            ],  # fmt: skip
        )(given(strategy)(f))

    return deco


# --- reference --------------------------------------------------------------------------------


@st.composite
def topk_args(draw, bucketed):
    shape = draw(st.lists(st.integers(0, 12), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=shape) * draw(st.sampled_from([1.0, 1e300, 1e-300]))
    if draw(st.booleans()):
        x = np.round(x)  # ties
    if x.size and draw(st.integers(0, 6)) == 0:
        x.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    x = _cast(x, draw(st.sampled_from(DTYPES + ["int64", "uint8"])))
    n = shape[-1]
    kw = {"x": x, "k": draw(small_ints(0, n))}
    if draw(st.booleans()):
        kw["axis"] = draw(maybe(st.integers(-len(shape), len(shape) - 1)))
    if bucketed:
        kw["num_buckets"] = draw(small_ints(1, max(n, 1)))
        if draw(st.booleans()):
            kw["k_per_bucket"] = draw(maybe(st.integers(1, 20)))
        if draw(st.booleans()):
            kw["interleaved"] = draw(maybe(st.booleans()))
    elif draw(st.booleans()):
        kw["largest"] = draw(maybe(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        kw["sorted"] = draw(maybe(st.booleans()))
    return kw


@_sweep(topk_args(False))
def test_sweep_topk(worker, kw):
    judge(worker, "topk", kw)


@_sweep(topk_args(True))
def test_sweep_bucketed_topk(worker, kw):
    judge(worker, "bucketed_topk", kw)


@_sweep(st.fixed_dictionaries({"n": small_ints(1, 50), "num_buckets": small_ints(1, 50)}))
def test_sweep_bucket_sizes(worker, kw):
    judge(worker, "bucket_sizes", kw)


@_sweep(st.fixed_dictionaries({"k": small_ints(1, 64), "j": small_ints(1, 16),
                               "k_mult": maybe(st.sampled_from([1, 2, 4, 1.5, 8]))}))  # fmt: skip
def test_sweep_bucket_params_from_public(worker, kw):
    judge(worker, "bucket_params_from_public", kw)


@_sweep(st.fixed_dictionaries({"name": st.just("value"), "value": wide},
                              optional={"lo": maybe(st.integers(-5, 5)),
                                        "hi": maybe(st.integers(-5, 100))}))  # fmt: skip
def test_sweep_check_int(worker, kw):
    # check_int's own error names the argument it checks ("value"), passed as ``name``
    judge(worker, "check_int", kw)


@_sweep(st.tuples(attention(), st.one_of(st.none(), maybe(st.booleans()))))
def test_sweep_dense_attention(worker, drawn):
    (kw, _), cf = drawn
    if cf is not None:
        kw["check_finite"] = cf
    judge(worker, "dense_attention", kw)


@st.composite
def sparq_args(draw):
    kw, (B, H, Hkv, S, d) = draw(attention())
    kw["r"] = draw(small_ints(1, d))
    kw["k"] = draw(small_ints(1, S + 4))
    if draw(st.booleans()):
        k = kw["k"] if isinstance(kw["k"], int) else 4
        kw["local_window"] = draw(maybe(st.integers(0, max(min(k, 10**6), 0))))
    if draw(st.integers(0, 2)) == 0:
        kw["topk"] = "bucketed"
        kw["num_buckets"] = draw(small_ints(1, S + 2))
        if draw(st.booleans()):
            kw["k_per_bucket"] = draw(maybe(st.integers(1, S + 2)))
        if draw(st.booleans()):
            kw["interleaved"] = draw(maybe(st.booleans()))
    elif draw(st.integers(0, 5)) == 0:
        kw["topk"] = draw(maybe(st.sampled_from(["exact"])))
    for name, values in (
        ("reallocate", st.booleans()),
        ("temperature", st.sampled_from(["l1", "sqrt_d", "sqrt_r"])),
        ("group_score", st.sampled_from(["logits", "probs"])),
        ("selection", st.sampled_from(["group", "head"])),
        ("return_steps", st.booleans()),
        ("check_finite", st.booleans()),
        ("impl", st.sampled_from(["numba", "twin"])),
        ("precision", st.sampled_from(["float64", "float64", "float32", "float16", "bfloat16"])),
    ):
        if draw(st.integers(0, 2)) == 0:
            kw[name] = draw(maybe(values))
    if draw(st.integers(0, 5)) == 0:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        kw["v_mean"] = rng.normal(size=draw(st.sampled_from([(B, Hkv, d), (B, H, d)])))
    if draw(st.integers(0, 5)) == 0 and kw["k_cache"].ndim == 4:
        kc = kw["k_cache"]
        kw["k_cache_t"] = np.ascontiguousarray(np.swapaxes(kc, 2, 3))
        if draw(st.booleans()):
            kw["k_cache_t"] = kw["k_cache_t"][..., ::-1].copy()  # mismatched copy
    return kw


@_sweep(sparq_args(), n=2 * EXAMPLES)
def test_sweep_sparq_attention(worker, kw):
    judge(worker, "sparq_attention", kw)


@_sweep(attention(want_v=False))
def test_sweep_transpose_keys(worker, drawn):
    kw, _ = drawn
    judge(worker, "transpose_keys", {"k_cache": kw["k_cache"]})


@_sweep(st.tuples(attention(), st.sampled_from(["oracle_topk_attention", "flexgen_topk_attention",
                                                "lm_infinite_attention"]),
                  small_ints(1, 45), st.one_of(st.none(), small_ints(0, 8)),
                  st.one_of(st.none(), maybe(st.booleans()))))  # fmt: skip
def test_sweep_topk_baselines(worker, drawn):
    (kw, _), fn, k, sink, rp = drawn
    kw["k"] = k
    if fn == "lm_infinite_attention" and sink is not None:
        kw["sink"] = sink
    if rp is not None:
        kw["return_positions"] = rp
    judge(worker, fn, kw)


@st.composite
def h2o_args(draw):
    B, H, Hkv, P, T, d = 1, 2, 1, draw(st.integers(0, 6)), draw(st.integers(0, 3)), 4
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    S = max(P + T, 1)
    K = _cast(rng.normal(size=(B, Hkv, S, d)), draw(st.sampled_from(DTYPES)))
    qp = rng.normal(size=(B, H, P, d))
    if qp.size and draw(st.integers(0, 3)) == 0:
        qp.flat[-1] = draw(st.sampled_from([np.nan, np.inf]))
    qp = _cast(qp, draw(st.sampled_from(DTYPES)))
    if draw(st.booleans()):
        return "h2o_prefill_scores", {"q_prompt": qp, "k_cache": K,
                                      "prompt_len": draw(maybe(st.just(P)))}  # fmt: skip
    kw = {
        "q_steps": _cast(rng.normal(size=(T, B, H, d)), draw(st.sampled_from(DTYPES))),
        "k_cache": K,
        "v_cache": rng.normal(size=(B, Hkv, S, d)),
        "k": draw(small_ints(1, S + 2)),
        "local_window": draw(small_ints(1, 3)),
        "prompt_len": draw(maybe(st.just(P))),
    }
    if draw(st.booleans()):
        ps = rng.random(size=draw(st.sampled_from([(B, Hkv, P), (B, Hkv, P + 1)])))
        if ps.size and draw(st.integers(0, 2)) == 0:
            ps.flat[0] = draw(st.sampled_from([np.nan, np.inf, -1.0]))
        kw["prefill_scores"] = _cast(ps, draw(st.sampled_from(DTYPES)))
    return "h2o_decode", kw


@_sweep(h2o_args())
def test_sweep_h2o(worker, drawn):
    fn, kw = drawn
    judge(worker, fn, kw)


@_sweep(st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["c", "x-1", "../x", ""])), "B": small_ints(1, 3),
     "H": small_ints(1, 8), "Hkv": small_ints(1, 4), "S": small_ints(1, 64),
     "d": small_ints(1, 16), "r": small_ints(1, 16), "k": small_ints(1, 70)},
    optional={"local_window": small_ints(0, 8),
              "dtype": maybe(st.sampled_from(["float16", "bfloat16", "float32", "float64"])),
              "values": maybe(st.sampled_from(["normal", "heavy", "ties"])),
              "topk": maybe(st.sampled_from(["exact", "bucketed"])),
              "num_buckets": small_ints(1, 64), "k_per_bucket": small_ints(1, 8),
              "seed": small_ints(0, 100), "holes": maybe(st.booleans()),
              "scale": maybe(st.sampled_from([1.0, 8.0]))},
))  # fmt: skip
def test_sweep_make_case(worker, kw):
    judge(worker, "make_case", kw)


@st.composite
def checker_outputs(draw):
    shapes = {"components": (2, 2, 2), "temperature": (2, 4), "approx_logits": (2, 4, 24),
              "positions": (2, 2, 6), "alpha": (2, 4), "v_mean": (2, 2, 8), "y": (2, 4, 8),
              "out": (2, 4, 8)}  # fmt: skip
    names = draw(st.lists(st.sampled_from(list(shapes) + ["bogus"]), max_size=4, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    outs = {}
    for n in names:
        shape = shapes.get(n, (2,))
        if draw(st.integers(0, 3)) == 0:
            shape = shape[:-1] + (shape[-1] + 1,)
        kind = draw(st.sampled_from(["f", "f", "i", "c", "b", "nan", "str", "none", "list"]))
        a = rng.normal(size=shape)
        outs[n] = {"f": a, "i": rng.integers(-1, 30, size=shape), "c": a + 1j,
                   "b": a > 0, "nan": np.full(shape, np.nan), "str": np.full(shape, "x"),
                   "none": None, "list": a.tolist()}[kind]  # fmt: skip
    kw = {"outputs": outs}
    if draw(st.booleans()):
        kw["dtype"] = draw(maybe(st.sampled_from(["float16", "bfloat16", "float32", "float64"])))
    return kw


@_sweep(checker_outputs())
def test_sweep_check_sparq(worker, kw):
    judge(worker, "check_sparq", kw)


# --- cost model -------------------------------------------------------------------------------

HW = st.sampled_from(["a100-40gb", "h100-sxm", "ipu-m2000", "nonexistent", "", "../x"])
METHOD = st.sampled_from(["dense", "sparq", "h2o", "flexgen", "nope"])


@_sweep(st.fixed_dictionaries(
    {"method": maybe(METHOD), "hardware": maybe(HW), "batch": small_ints(1, 64),
     "n_heads": small_ints(1, 64), "seq_len": small_ints(1, 2**17),
     "head_dim": small_ints(1, 256)},
    optional={"n_kv_heads": small_ints(1, 64), "dtype": maybe(st.sampled_from(["float16",
              "float32", "bfloat16", "int8"])), "r": small_ints(1, 256),
              "k": small_ints(1, 2**17), "store_k_twice": maybe(st.booleans()),
              "n_layers": small_ints(1, 80), "ideal": maybe(st.booleans()),
              "topk": maybe(st.sampled_from(["exact", "bucketed"])),
              "implementation": maybe(st.sampled_from(["kernel", "eager", "reference"]))},
))  # fmt: skip
def test_sweep_estimate_attention(worker, kw):
    judge(worker, "estimate_attention", kw)


@_sweep(st.fixed_dictionaries(
    {"model": maybe(st.sampled_from(["llama-2-7b", "llama-3-8b", "nope"])),
     "hardware": maybe(HW), "batch": small_ints(1, 256), "seq_len": small_ints(1, 2**17)},
    optional={"method": maybe(METHOD), "weight_bytes_per_param": maybe(st.sampled_from(
              [0.5, 1.0, 2.0])), "r": small_ints(1, 128), "k": small_ints(1, 4096),
              "ideal": maybe(st.booleans()), "store_k_twice": maybe(st.booleans())},
))  # fmt: skip
def test_sweep_estimate_decode(worker, kw):
    judge(worker, "estimate_decode", kw)


@_sweep(st.one_of(
    st.tuples(st.just("estimate_request"), st.fixed_dictionaries(
        {"model": maybe(st.sampled_from(["llama-2-7b", "llama-3-8b", "nope"])),
         "hardware": maybe(HW), "batch": small_ints(1, 64), "prompt_len": small_ints(1, 8192),
         "gen_len": small_ints(1, 2048)},
        optional={"method": maybe(st.sampled_from(["dense", "sparq"])),
                  "tp": small_ints(1, 8), "k_divisor": small_ints(1, 64),
                  "implementation": maybe(st.sampled_from(["fused", "eager"])),
                  "ideal": maybe(st.booleans())})),
    st.tuples(st.just("estimate_prefill"), st.fixed_dictionaries(
        {"model": maybe(st.sampled_from(["llama-2-7b", "nope"])), "hardware": maybe(HW),
         "batch": small_ints(1, 64), "prompt_len": small_ints(1, 8192)},
        optional={"tp": small_ints(1, 8), "store_k_twice": maybe(st.booleans())})),
))  # fmt: skip
def test_sweep_request(worker, drawn):
    fn, kw = drawn
    judge(worker, fn, kw)


@_sweep(st.fixed_dictionaries(
    {"method": maybe(METHOD), "seq_len": small_ints(1, 2**17), "head_dim": small_ints(1, 256)},
    optional={"r": small_ints(1, 256), "k": small_ints(1, 2**17)},
))  # fmt: skip
def test_sweep_transfers(worker, kw):
    judge(worker, "transfers", kw)


@_sweep(st.fixed_dictionaries(
    {"bandwidth_bytes_per_s": maybe(st.floats(1e9, 1e13)),
     "peak_flops_fp16": maybe(st.floats(1e12, 1e16))},
    optional={"peak_flops_fp32": maybe(st.floats(1e11, 1e15)),
              "mem_capacity_bytes": maybe(st.floats(1e9, 1e12)),
              "mem_efficiency": maybe(st.floats(0.1, 1.0)),
              "kernel_latency_s": maybe(st.floats(0.0, 1e-4)),
              "mem_transaction_bytes": maybe(st.sampled_from([32, 64, 128])),
              "name": maybe(st.text(max_size=8))},
))  # fmt: skip
def test_sweep_hardware_from_spec(worker, kw):
    judge(worker, "hardware_from_spec", kw)


@_sweep(st.one_of(
    st.tuples(st.just("load_hardware"), st.fixed_dictionaries({"name_or_path": maybe(HW)})),
    st.tuples(st.just("load_model"), st.fixed_dictionaries(
        {"name_or_path": maybe(st.sampled_from(["llama-2-7b", "x", "", "/etc/passwd"]))})),
))  # fmt: skip
def test_sweep_loaders(worker, drawn):
    fn, kw = drawn
    judge(worker, fn, kw)


# --- recall -------------------------------------------------------------------------------------


@st.composite
def recall_args(draw):
    fn = draw(st.sampled_from(["expected_recall", "expected_recall_kb1",
                               "expected_recall_multinomial_kb1", "recall_lower_bound_kb1",
                               "expected_recall_xla", "bins_for_recall_xla",
                               "buckets_for_recall", "k_per_bucket_for_recall",
                               "recall_distribution", "simulate_recall",
                               "xla_reduction_output_size"]))  # fmt: skip
    n = draw(maybe(st.integers(1, 5000)))
    k = draw(maybe(st.integers(1, 200)))
    b = draw(maybe(st.integers(1, 500)))
    kb = draw(maybe(st.integers(1, 8)))
    target = draw(maybe(st.sampled_from([0.5, 0.9, 0.99])))
    model = draw(maybe(st.sampled_from(["exact", "binomial", "poisson"])))
    kw = {
        "expected_recall": {"n": n, "k": k, "num_buckets": b, "k_per_bucket": kb, "model": model},
        "expected_recall_kb1": {"n": n, "k": k, "num_buckets": b},
        "expected_recall_multinomial_kb1": {"k": k, "num_buckets": b},
        "recall_lower_bound_kb1": {"k": k, "num_buckets": b},
        "expected_recall_xla": {"k": k, "num_bins": b},
        "bins_for_recall_xla": {"k": k, "target": target},
        "buckets_for_recall": {"n": n, "k": k, "target": target, "k_per_bucket": kb,
                               "model": model},
        "k_per_bucket_for_recall": {"n": n, "k": k, "target": target, "num_buckets": b,
                                    "model": model},
        "recall_distribution": {"n": n, "k": k, "num_buckets": b, "k_per_bucket": kb},
        "simulate_recall": {"n": n, "k": k, "num_buckets": b, "k_per_bucket": kb,
                            "trials": draw(small_ints(1, 20)), "seed": draw(small_ints(0, 99))},
        "xla_reduction_output_size": {"n": n, "k": k, "target": target},
    }[fn]  # fmt: skip
    return fn, kw


@_sweep(recall_args(), n=3 * EXAMPLES)
def test_sweep_recall(worker, drawn):
    fn, kw = drawn
    judge(worker, fn, kw)


# --- command line -------------------------------------------------------------------------------

NUM_TEXT = st.one_of(
    st.integers(-5, 5000).map(str),
    st.sampled_from(["0", "-1", "1e12", "1e9", "2.5", "nan", "inf", "-inf", "abc", "",
                     "18446744073709551616", "1_000", " 7", "0x10", "1e400"]),
)  # fmt: skip


#: Where the drawn ``golden --out`` directories go: one temporary directory for the module,
#: removed with everything in it when the interpreter exits.
_OUT_ROOT = tempfile.TemporaryDirectory(prefix="sparq-sweep-")


@st.composite
def cli_args(draw):
    cmd = draw(st.sampled_from(["demo", "estimate", "recall", "hardware", "golden", "check"]))
    opts = {
        "demo": ["--batch", "--heads", "--kv-heads", "--seq-len", "--head-dim", "--r", "--k",
                 "--local-window", "--seed"],
        "estimate": ["--seq-lens", "--batch", "--r", "--k-divisor", "--weight-bytes",
                     "--bandwidth", "--peak-flops", "--capacity", "--mem-efficiency",
                     "--kernel-latency", "--topk-rate"],
        "recall": ["--n", "--k", "--buckets", "--k-per-bucket", "--target", "--trials",
                   "--seed", "--correlation"],
        "hardware": [],
        "golden": ["--seed"],
        "check": [],
    }[cmd]  # fmt: skip
    argv = [cmd]
    if cmd == "hardware":
        argv += draw(st.sampled_from([["list"], ["show", "h100-sxm"], ["show", "nope"],
                                      ["show", ""], ["measure", "--seconds", "nan"],
                                      ["measure", "--seconds", "-1"],
                                      ["measure", "--seconds", "inf"]]))  # fmt: skip
    if cmd == "estimate":
        argv += draw(st.sampled_from([[], ["--model", "llama-2-7b"], ["--model", "nope"],
                                      ["--hardware", "a100-40gb"], ["--json"]]))  # fmt: skip
    if cmd == "recall":
        argv += ["--trials", "0"] if draw(st.booleans()) else []
    if cmd == "golden":
        argv += ["--out", tempfile.mkdtemp(prefix="golden-", dir=_OUT_ROOT.name)]
        argv += draw(st.sampled_from([[], ["--suite", "standard"], ["--dtype", "float32"]]))
    if cmd == "check":
        argv += [draw(st.sampled_from(["/nonexistent", tempfile.gettempdir()]))]
    for opt in draw(st.lists(st.sampled_from(opts), max_size=3, unique=True)) if opts else []:
        argv += [opt, draw(NUM_TEXT)]
    return argv


@_sweep(cli_args(), n=2 * EXAMPLES)
def test_sweep_cli(worker, argv):
    reply = judge(worker, "cli", {"argv": argv})
    res = reply["cli"]
    where = f"sparq {' '.join(argv)}"
    if "Traceback" in res["stderr"]:
        pytest.fail(f"{where}: traceback\n{res['stderr']}")
    if res["code"] == 0:
        return
    assert res["code"] == 2, f"{where}: exit status {res['code']}\n{res['stderr']}"
    err = res["stderr"]
    assert "error:" in err, f"{where}: exit 2 without an error line: {err!r}"
    named = [a for a in argv if a.startswith("--")] + [argv[0]]
    assert any(n in err for n in named), f"{where}: the error names no option: {err!r}"
