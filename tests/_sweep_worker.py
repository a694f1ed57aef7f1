"""Worker process of the robustness sweep (``tests/test_sweep.py``).

Runs one call at a time for the parent: reads a length-prefixed pickle
``(target, kwargs)`` from stdin, calls the target, checks a successful result against an
independent route where one exists (the NumPy twin, an invariant of the answer), and
writes back a pickle ``{"kind": "ok" | "error" | "wrong" | "crash", ...}`` with the
exception type and message and the call's peak resident memory. The address space is
capped with ``RLIMIT_DATA`` (``RLIMIT_AS`` would break Numba's and OpenMP's large virtual
reservations), so a call that tries to allocate without bound ends in ``MemoryError``,
which the parent reports as a failure.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import resource
import struct
import sys
import traceback
from fractions import Fraction

import numpy as np

DATA_LIMIT_BYTES = int(os.environ.get("SPARQ_SWEEP_DATA_LIMIT", str(6 * 2**30)))


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _write(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _reset_peak():
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of the process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_bytes(key: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in bytes (0 if unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- verification of successful results (independent routes) -----------------------------


def _close(a, b, scale, rtol=1e-9):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if not np.isfinite(a).all():
        return "non-finite result"
    err = float(np.max(np.abs(a - b), initial=0.0))
    if err > rtol * max(scale, 1e-300):
        return f"max |diff| {err:.3g} > {rtol} * {scale:.3g}"
    return None


def _scale_of(v):
    v = np.asarray(v)
    if v.dtype.name == "bfloat16":
        v = v.astype(np.float32)
    return float(np.max(np.abs(v.astype(np.float64)), initial=1.0))


def _verify(target, kw, res):
    import reference as R
    from reference import baselines

    if target == "topk":
        v, i = res
        v2, i2 = R.topk_twin(kw["x"], kw["k"], axis=kw.get("axis", -1),
                             largest=kw.get("largest", True))  # fmt: skip
        if not (np.array_equal(i, i2) and np.array_equal(v, v2, equal_nan=True)):
            return "topk differs from topk_twin"
    elif target == "bucketed_topk":
        args = {a: kw[a] for a in ("num_buckets", "k_per_bucket", "interleaved", "axis") if a in kw}
        v, i = res
        v2, i2 = R.bucketed_topk_twin(kw["x"], kw["k"], **args)
        if not np.array_equal(i, i2):
            return "bucketed_topk differs from bucketed_topk_twin"
    elif target == "bucket_sizes":
        n, b = int(kw["n"]), int(kw["num_buckets"])
        if res.shape != (b,) or int(res.sum()) != n or res.max() - res.min() > 1:
            return f"bucket_sizes({n}, {b}) = {res}"
    elif target == "bucket_params_from_public":
        b, kb = res
        km = kw["k_mult"]
        km = (
            Fraction(int(km))
            if isinstance(km, np.integer)
            else Fraction(float(km))
            if (isinstance(km, np.floating))
            else Fraction(km)
        )
        if kb != kw["j"] or Fraction(b * kb) != km * int(kw["k"]):
            return f"b * kb = {b} * {kb} is not k_mult * k"
    elif target == "dense_attention":
        want = R.dense_attention_twin(kw["q"], kw["k_cache"], kw["v_cache"], kw.get("mask"))
        return _close(res, want, _scale_of(kw["v_cache"]))
    elif target == "sparq_attention":
        twin_kw = {a: v for a, v in kw.items() if a not in ("impl", "return_steps",
                                                          "check_finite", "k_cache_t")}  # fmt: skip
        q, K, V = twin_kw.pop("q"), twin_kw.pop("k_cache"), twin_kw.pop("v_cache")
        want = R.sparq_attention_twin(q, K, V, **twin_kw)
        out = res.out if kw.get("return_steps") else res
        if kw.get("precision", "float64") != "float64" and kw.get("impl") != "twin":
            return None  # emulated precision is the twin itself
        return _close(out, want.out, _scale_of(V), rtol=1e-8)
    elif target in ("oracle_topk_attention", "lm_infinite_attention"):
        out = res[0] if kw.get("return_positions") else res
        if not np.isfinite(out).all():
            return "non-finite output"
        if kw["k"] >= kw["k_cache"].shape[2] and kw.get("sink", 0) <= kw["k"]:
            want = R.dense_attention_twin(kw["q"], kw["k_cache"], kw["v_cache"], kw.get("mask"))
            return _close(out, want, _scale_of(kw["v_cache"]))
    elif target == "recall_lower_bound_kb1":  # 1 - (k-1)/(2b): vacuous (< 0) for small b
        if not (math.isfinite(res) and res <= 1):
            return f"bound {res} is not a finite number <= 1"
    elif target in ("expected_recall", "expected_recall_kb1", "expected_recall_multinomial_kb1",
                    "expected_recall_xla"):  # fmt: skip
        r = np.asarray(res, dtype=np.float64)
        if not (np.isfinite(r).all() and (r >= -1e-12).all() and (r <= 1 + 1e-12).all()):
            return f"recall {res} outside [0, 1]"
    elif target == "simulate_recall":
        if not (0 <= res.mean <= 1 and math.isfinite(res.mean)):
            return f"simulated recall mean {res.mean} outside [0, 1]"
    elif target in ("estimate_request", "estimate_prefill"):
        for name in ("time_s", "total_s", "request_s"):
            t = getattr(res, name, None)
            if isinstance(t, float) and not (math.isfinite(t) and t > 0):
                return f"{name} {t} is not a positive finite number"
    elif target in ("estimate_attention", "estimate_decode"):
        t = res.time_s if hasattr(res, "time_s") else None
        if t is not None and not (math.isfinite(t) and t > 0):
            return f"time {t} is not a positive finite number"
    elif target == "make_case":
        B, H, d = res.inputs["q"].shape
        if res.expected.out.shape != (B, H, d) or not np.isfinite(res.expected.out).all():
            return "make_case: expected out has the wrong shape or is not finite"
    elif target == "h2o_prefill_scores":
        if not np.isfinite(res).all() or (res < -1e-12).any():
            return "scores not finite and non-negative"
    del baselines
    return None


# --- targets -------------------------------------------------------------------------------


def _targets():
    import costmodel
    import reference as R
    from reference import baselines
    from sparq_cli.cli import main as cli_main

    def cli(argv):
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli_main(list(argv))
                code = 0 if rc is None else int(rc)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return {"code": code, "stderr": err.getvalue()[-2000:], "stdout_len": len(out.getvalue())}

    from reference import validation

    _case_cache = {}

    def check_sparq_small(outputs, dtype=None):
        """check_sparq on one fixed small case (built once) with the drawn outputs."""
        if "c" not in _case_cache:
            _case_cache["c"] = validation.make_case(
                "sweep", B=2, H=4, Hkv=2, S=24, d=8, r=2, k=6, local_window=2, dtype="float16"
            )
        report = validation.check_sparq(_case_cache["c"], outputs, dtype=dtype)
        report.to_dict()
        str(report)
        return report

    t = {
        "cli": cli,
        "make_case": validation.make_case,
        "check_sparq": check_sparq_small,
        "topk": R.topk,
        "bucketed_topk": R.bucketed_topk,
        "bucket_sizes": R.bucket_sizes,
        "bucket_params_from_public": R.bucket_params_from_public,
        "check_int": R.check_int,
        "dense_attention": R.dense_attention,
        "sparq_attention": R.sparq_attention,
        "transpose_keys": R.transpose_keys,
        "oracle_topk_attention": baselines.oracle_topk_attention,
        "flexgen_topk_attention": baselines.flexgen_topk_attention,
        "lm_infinite_attention": baselines.lm_infinite_attention,
        "h2o_prefill_scores": baselines.h2o_prefill_scores,
        "h2o_decode": baselines.h2o_decode,
    }
    for name in (
        "attention_traffic", "attention_transfer_fraction", "bins_for_recall_xla",
        "buckets_for_recall", "compression_ratio", "estimate_attention", "estimate_decode",
        "expected_recall", "expected_recall_kb1", "expected_recall_multinomial_kb1",
        "expected_recall_xla", "hardware_from_spec", "k_per_bucket_for_recall", "load_hardware",
        "estimate_request", "estimate_prefill",
        "load_model", "recall_distribution", "recall_lower_bound_kb1", "simulate_recall",
        "speedup", "transfers", "xla_reduction_output_size",
    ):  # fmt: skip
        t[name] = getattr(costmodel, name)
    return t


def main() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT_BYTES, DATA_LIMIT_BYTES))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies goes to the pipe
    targets = _targets()
    while True:
        req = _read(stdin)
        if req is None:
            return
        target, kw = req
        base = _status_bytes("VmRSS")
        _reset_peak()
        reply = {"kind": "ok", "type": None, "message": ""}
        try:
            res = targets[target](**kw)
            if target == "cli":
                reply["cli"] = res
            else:
                with np.errstate(all="ignore"):
                    wrong = _verify(target, kw, res)
                if wrong:
                    reply = {"kind": "wrong", "type": None, "message": wrong}
        except (ValueError, TypeError) as e:
            reply = {"kind": "error", "type": type(e).__name__, "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - the sweep reports every other outcome
            reply = {
                "kind": "crash",
                "type": type(e).__name__,
                "message": "".join(traceback.format_exception(e))[-3000:],
            }
        reply["peak_rss"] = _status_bytes("VmHWM")
        reply["base_rss"] = base
        _write(stdout, reply)


if __name__ == "__main__":
    main()
