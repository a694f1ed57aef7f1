"""Golden cases and a step-by-step checker for SparQ implementations (GPU kernels included).

What a kernel author does (``docs/validation.md``):

1. ``cases = standard_cases("float16") + adversarial_cases("float16")`` (or ``sparq golden
   --out DIR``): inputs in the kernel's dtype, every intermediate of the float64 reference,
   a manifest with parameters, seeds and SHA-256 checksums.
2. Run the implementation on each case's inputs and collect any of the steps
   ``components, approx_logits, positions, alpha, v_mean, out``.
3. ``report = check_sparq(case, outputs, dtype="float16")``; ``print(report)`` says which
   step failed first, where (batch, head, position) and by how much.

Tolerances follow the flash-attention rule: an implementation in dtype ``D`` may deviate
from the float64 truth by at most twice what a *naive* implementation in ``D`` deviates
(emulated by :mod:`reference.precision`), plus a rounding floor. Later steps are judged with
the implementation's own earlier choices injected (components, positions), so a legitimate
near-tie in a top-k cannot make the attention check fail; top-k steps are judged tie-safely
(every chosen element must score at least the k-th best minus the tolerance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from reference._checks import as_bool, as_int
from reference.precision import PRECISIONS, Precision, round_to
from reference.sparq import (
    SparqParams,
    SparqSteps,
    _components_ok,
    _positions_ok,
    positions_columns,
    sparq_attention_twin,
)

STEPS = ("components", "temperature", "approx_logits", "positions", "alpha", "v_mean", "y", "out")
INPUTS = ("q", "k_cache", "v_cache", "mask")
_PARAM_KEYS = ("r", "k", "local_window", "reallocate", "temperature", "group_score", "selection",
               "topk", "num_buckets", "k_per_bucket", "interleaved")  # fmt: skip


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sparq-reference")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "unknown"


@dataclass(frozen=True)
class GoldenCase:
    """One validation case: inputs (in ``dtype``), parameters and the float64 truth."""

    name: str
    description: str
    params: dict
    inputs: dict
    expected: SparqSteps
    dtype: str
    seed: int

    @property
    def shape(self) -> str:
        B, H, d = self.inputs["q"].shape
        _, Hkv, S, _ = self.inputs["k_cache"].shape
        return f"B={B} H={H} Hkv={Hkv} S={S} d={d}"


def _dtype_of(name: str):
    if name == "bfloat16":
        return np.float32  # stored as float32 holding bfloat16 values (numpy has no bfloat16)
    return np.dtype(name).type


def _in_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    return round_to(x, dtype).astype(_dtype_of(dtype))


#: Cases with more than this many elements per cache (``B * Hkv * S * d``) are generated and
#: given their truth one batch row at a time (a seeded generator per row, inputs rounded into
#: the case dtype row by row, the float64 twin on one row's slice): no full-size float64
#: copy of the inputs exists. The checker judges such cases row by row as well.
ROWWISE_ELEMENTS = 2**24


def _is_rowwise(B: int, Hkv: int, S: int, d: int) -> bool:
    return B * Hkv * S * d > ROWWISE_ELEMENTS


def _row_values(rng, values, g, Hkv, S, d, scale, q=None):
    """One batch row's ``q`` (H, d), ``K``, ``V`` (Hkv, S, d) in float64 (the small-case
    recipe, for one row)."""
    H = g * Hkv
    if values == "ties":
        q = rng.integers(-2, 3, size=(H, d)).astype(np.float64)
        K = rng.integers(-2, 3, size=(Hkv, S, d)).astype(np.float64)
        V = rng.integers(-4, 5, size=(Hkv, S, d)).astype(np.float64)
        return q, K, V
    q = rng.normal(size=(H, d)) * scale
    K = rng.normal(size=(Hkv, S, d)) * scale
    V = rng.normal(size=(Hkv, S, d))
    if values == "heavy":
        heavy = rng.choice(S, size=min(S, 4), replace=False)
        K[:, heavy] += 2.0 * q.reshape(Hkv, g, d).mean(1)[:, None, :]
    return q, K, V


def _mask(rng, B, S, pad, holes):
    mask = np.ones((B, S), dtype=bool)
    if pad:
        for b in range(1, B):
            mask[b, : rng.integers(0, S)] = False
    if holes:
        mask[:, : S - 1] &= rng.random((B, S - 1)) > 0.2
        mask[:, max(S - 2, 0) : S - 1] = False  # a hole right before the current token
        mask[:, S - 1] = True
    return mask


def _twin_steps(q, K, V, mask, *, rowwise: bool, inject_components=None,
                inject_positions=None, **kw) -> SparqSteps:  # fmt: skip
    """:func:`sparq_attention_twin` on the whole batch, or (``rowwise``) one batch row at a
    time: only that row is ever widened to float64."""
    if not rowwise:
        return sparq_attention_twin(q, K, V, mask=mask, inject_components=inject_components,
                                    inject_positions=inject_positions, **kw)  # fmt: skip
    parts = [
        sparq_attention_twin(
            q[b : b + 1], K[b : b + 1], V[b : b + 1], mask=mask[b : b + 1],
            inject_components=None if inject_components is None else inject_components[b : b + 1],
            inject_positions=None if inject_positions is None else inject_positions[b : b + 1],
            **kw,
        )
        for b in range(q.shape[0])
    ]  # fmt: skip
    return SparqSteps(*(np.concatenate([getattr(st, f.name) for st in parts])
                        for f in fields(SparqSteps)))  # fmt: skip


def _check_case_args(name, B, H, Hkv, S, d, dtype, seed, pad, holes, values, scale, garbage,
                     description) -> None:  # fmt: skip
    """make_case's own arguments (the SparQ options are SparqParams's); errors name them."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__} {name!r}")
    if not isinstance(description, str):
        raise TypeError(f"description: expected a str, got {type(description).__name__}")
    for arg, v in (("B", B), ("H", H), ("Hkv", Hkv), ("S", S), ("d", d)):
        as_int(arg, v, lo=1, hi=2**31)
    as_int("seed", seed, lo=0)
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype: expected one of {PRECISIONS}, got {dtype!r}")
    as_bool("pad", pad)
    as_bool("holes", holes)
    if values not in ("normal", "heavy", "ties"):
        raise ValueError(f"values: expected 'normal', 'heavy' or 'ties', got {values!r}")
    for arg, v, none_ok in (("scale", scale, False), ("garbage", garbage, True)):
        if v is None and none_ok:
            continue
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                 np.floating)):  # fmt: skip
            raise TypeError(f"{arg}: expected a finite number, got {type(v).__name__} {v!r}")
        if not np.isfinite(v) or (arg == "scale" and not v > 0):
            raise ValueError(f"{arg}: expected a finite{' positive' if arg == 'scale' else ''}"
                             f" number, got {v!r}")  # fmt: skip
    if B * Hkv * S * d > 2**31 or B * H * d > 2**31:
        raise ValueError(f"B, Hkv, S, d: expected B*Hkv*S*d <= 2**31, got {B * Hkv * S * d}")


def make_case(
    name: str,
    *,
    B: int,
    H: int,
    Hkv: int,
    S: int,
    d: int,
    r: int,
    k: int,
    local_window: int = 0,
    dtype: str = "float16",
    seed: int = 0,
    pad: bool = True,
    holes: bool = False,
    values: str = "normal",
    scale: float = 1.0,
    garbage: float | None = None,
    description: str = "",
    **options,
) -> GoldenCase:
    """Build a case from a seeded generator and compute its float64 truth.

    ``values``: ``"normal"`` (N(0, scale^2)), ``"ties"`` (small integers: many exact ties in
    every top-k) or ``"heavy"`` (a few keys aligned with the query, as in trained models).
    ``pad`` left-pads each batch row by a random amount; ``holes`` also masks out scattered
    positions, among them the one just before the current token (so that "the most recent
    valid positions" differs from "the last indices"); ``garbage`` fills masked slots of K
    and V with that value (any finite value must be harmless). ``options`` are
    :func:`reference.sparq_attention`'s SparQ options (``reallocate``, ``temperature``,
    ``group_score``, ``selection``, ``topk``, ``num_buckets``, ``k_per_bucket``,
    ``interleaved``), checked as it checks them.

    A case with more than :data:`ROWWISE_ELEMENTS` elements per cache is generated one batch
    row at a time (generator seeded with ``(seed, b)``) and never holds a full-size float64
    copy; smaller cases use one generator for the whole batch (their values are fixed by the
    golden-file checksums).
    """
    _check_case_args(name, B, H, Hkv, S, d, dtype, seed, pad, holes, values, scale, garbage,
                     description)  # fmt: skip
    params = dict(r=r, k=k, local_window=local_window, reallocate=True, temperature="l1",
                  group_score="logits", selection="group")  # fmt: skip
    unknown = set(options) - set(_PARAM_KEYS)
    if unknown:
        raise ValueError(
            f"options: expected SparQ parameters among {list(_PARAM_KEYS)}, got unknown"
            f" {sorted(unknown)}"
        )
    params.update(options)
    if params.get("topk", "exact") == "exact":
        params.pop("topk", None)  # the default; exact cases keep their manifest unchanged
    SparqParams.build(d=d, **params)  # every option checked, errors name the argument
    if H % Hkv:
        raise ValueError(f"H: expected a multiple of Hkv = {Hkv}, got {H}")
    rowwise = _is_rowwise(B, Hkv, S, d)
    if not rowwise:
        rng = np.random.default_rng(seed)
        if values == "ties":
            q = rng.integers(-2, 3, size=(B, H, d)).astype(np.float64)
            K = rng.integers(-2, 3, size=(B, Hkv, S, d)).astype(np.float64)
            V = rng.integers(-4, 5, size=(B, Hkv, S, d)).astype(np.float64)
        else:
            q = rng.normal(size=(B, H, d)) * scale
            K = rng.normal(size=(B, Hkv, S, d)) * scale
            V = rng.normal(size=(B, Hkv, S, d))
            if values == "heavy":
                g = H // Hkv
                heavy = rng.choice(S, size=min(S, 4), replace=False)
                direction = q.reshape(B, Hkv, g, d).mean(2)
                K[:, :, heavy] += 2.0 * direction[:, :, None, :]
        mask = _mask(rng, B, S, pad, holes)
        if garbage is not None:
            K[~np.broadcast_to(mask[:, None, :, None], K.shape)] = garbage
            V[~np.broadcast_to(mask[:, None, :, None], V.shape)] = garbage
        inputs = dict(q=_in_dtype(q, dtype), k_cache=_in_dtype(K, dtype),
                      v_cache=_in_dtype(V, dtype), mask=mask)  # fmt: skip
    else:
        st = _dtype_of(dtype)
        inputs = dict(q=np.empty((B, H, d), st), k_cache=np.empty((B, Hkv, S, d), st),
                      v_cache=np.empty((B, Hkv, S, d), st),
                      mask=_mask(np.random.default_rng([seed, B]), B, S, pad, holes))  # fmt: skip
        for b in range(B):
            q, K, V = _row_values(np.random.default_rng([seed, b]), values, H // Hkv, Hkv, S,
                                  d, scale)  # fmt: skip
            if garbage is not None:
                K[:, ~inputs["mask"][b]] = garbage
                V[:, ~inputs["mask"][b]] = garbage
            inputs["q"][b] = _in_dtype(q, dtype)
            inputs["k_cache"][b] = _in_dtype(K, dtype)
            inputs["v_cache"][b] = _in_dtype(V, dtype)
            del q, K, V
    expected = _twin_steps(inputs["q"], inputs["k_cache"], inputs["v_cache"],
                           inputs["mask"], rowwise=rowwise, **params)  # fmt: skip
    return GoldenCase(name, description, params, inputs, expected, dtype, seed)


def standard_cases(dtype: str = "float16", seed: int = 0) -> list[GoldenCase]:
    """Realistic shapes: MHA, GQA with padding, a Llama-3-8B-like head layout."""
    return [
        make_case("mha", B=2, H=4, Hkv=4, S=256, d=64, r=8, k=32, local_window=8, dtype=dtype,
                  seed=seed, values="heavy", description="multi-head, left padding"),
        make_case("gqa4", B=3, H=16, Hkv=4, S=300, d=128, r=16, k=48, local_window=12,
                  dtype=dtype, seed=seed + 1, values="heavy",
                  description="GQA g=4, left padding"),
        make_case("llama3-8b-like", B=1, H=32, Hkv=8, S=2048, d=128, r=16, k=128,
                  local_window=32, dtype=dtype, seed=seed + 2, values="heavy",
                  description="Llama 3 8B head layout, 1/8 compression"),
    ]  # fmt: skip


def adversarial_cases(dtype: str = "float16", seed: int = 100) -> list[GoldenCase]:
    """Edge cases kernel authors check (``docs/validation.md``): odd sizes, GQA 1..8, garbage
    padding, ties, huge logits, k >= S, r = d, per-head selection, probability group scores,
    the bucketed top-k (interleaved and contiguous)."""
    big = 2.0e4 if dtype in ("float16",) else 1.0e30
    c = [
        make_case("s1", B=2, H=2, Hkv=1, S=1, d=16, r=4, k=4, local_window=1, dtype=dtype,
                  seed=seed, pad=False, description="a single cached position"),
        make_case("s113-d80", B=2, H=4, Hkv=4, S=113, d=80, r=10, k=16, local_window=4,
                  dtype=dtype, seed=seed + 1, description="odd S, Pythia-2.8B head dim"),
        make_case("s1023-gqa8", B=2, H=16, Hkv=2, S=1023, d=64, r=8, k=64, local_window=16,
                  dtype=dtype, seed=seed + 2, values="heavy", description="S = 2^10 - 1, g = 8"),
        make_case("gqa3-odd", B=2, H=9, Hkv=3, S=77, d=32, r=5, k=11, local_window=3,
                  dtype=dtype, seed=seed + 3, description="g = 3"),
        make_case("garbage-padding", B=3, H=4, Hkv=2, S=96, d=32, r=4, k=12, local_window=4,
                  dtype=dtype, seed=seed + 4, garbage=big,
                  description=f"masked slots of K and V hold {big:g}"),
        make_case("ties", B=2, H=4, Hkv=4, S=64, d=16, r=4, k=10, local_window=2, dtype=dtype,
                  seed=seed + 5, values="ties",
                  description="small integers, g = 1: exact ties in every top-k"),
        make_case("huge-logits", B=2, H=4, Hkv=2, S=128, d=64, r=16, k=16, local_window=4,
                  dtype=dtype, seed=seed + 6, scale=8.0,
                  description="logits in the hundreds: softmax needs max subtraction"),
        make_case("k-ge-S", B=2, H=4, Hkv=2, S=40, d=16, r=4, k=64, local_window=8,
                  dtype=dtype, seed=seed + 7, description="k larger than the valid count"),
        make_case("r-eq-d", B=2, H=4, Hkv=1, S=90, d=32, r=32, k=20, local_window=5,
                  dtype=dtype, seed=seed + 8, description="all components"),
        make_case("per-head", B=2, H=8, Hkv=2, S=150, d=64, r=8, k=24, local_window=6,
                  dtype=dtype, seed=seed + 9, selection="head",
                  description="per-query-head selection"),
        make_case("probs", B=2, H=8, Hkv=2, S=150, d=64, r=8, k=24, local_window=6,
                  dtype=dtype, seed=seed + 10, group_score="probs",
                  description="group score = sum of probabilities (paper App. B)"),
        make_case("holes", B=3, H=4, Hkv=2, S=120, d=32, r=6, k=16, local_window=6,
                  dtype=dtype, seed=seed + 12, holes=True, garbage=big,
                  description="masks with holes: the window is the most recent VALID positions"),
        make_case("no-local", B=2, H=4, Hkv=4, S=200, d=64, r=8, k=20, local_window=0,
                  dtype=dtype, seed=seed + 11, reallocate=False,
                  description="no local window, no reallocation (llama.cpp port)"),
        make_case("bucketed", B=2, H=8, Hkv=2, S=300, d=64, r=8, k=40, local_window=8,
                  dtype=dtype, seed=seed + 13, holes=True, topk="bucketed", num_buckets=32,
                  description="bucketed top-k (Key et al. 2024), interleaved, k_b = 1, holes"),
        make_case("bucketed-contiguous", B=2, H=4, Hkv=4, S=257, d=32, r=6, k=30,
                  local_window=6, dtype=dtype, seed=seed + 14, values="heavy",
                  topk="bucketed", num_buckets=12, k_per_bucket=2, interleaved=False,
                  description="bucketed top-k, contiguous buckets, k_b = 2"),
    ]  # fmt: skip
    return c


# ------------------------------------------------------------------------------------------
# Files: one .npz per case and a manifest with checksums.
# ------------------------------------------------------------------------------------------


# Validated reading and atomic writing live in reference/_golden_io.py (docs/validation.md).
from reference._golden_io import (  # noqa: E402, F401  (re-exported)
    _FIELDS,
    FORMAT,
    READ_FORMATS,
    GoldenFileError,
    _sha256,
    load_cases,
    save_cases,
)

# ------------------------------------------------------------------------------------------
# The checker.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step's verdict. ``status``: "pass", "fail", "not provided" or "not judged" (every
    row was ambiguous, see ``not_judged``). ``not_judged`` counts rows (heads, or selection
    groups for positions) left out because an earlier top-k the implementation did not
    return has a near-tie there, so that more than one answer is right."""

    step: str
    status: str
    max_error: float | None = None
    tolerance: float | None = None
    where: str = ""
    message: str = ""
    not_judged: int = 0


@dataclass(frozen=True)
class CheckReport:
    case: str
    shape: str
    dtype: str
    results: tuple = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """No step failed and at least one step was judged and passed."""
        return all(r.status != "fail" for r in self.results) and any(
            r.status == "pass" for r in self.results
        )

    @property
    def first_failure(self) -> StepResult | None:
        return next((r for r in self.results if r.status == "fail"), None)

    def to_dict(self) -> dict:
        """JSON-ready: case, shape, dtype, passed, first_failure (a step name or None) and
        per step: step, status, max_error, tolerance, ratio (max_error / tolerance), where,
        message, not_judged. Non-finite floats are the strings "nan", "inf", "-inf", so that
        ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        from reference._checker_io import report_to_dict

        return report_to_dict(self)

    def __str__(self) -> str:
        lines = [f"case {self.case} ({self.shape}), implementation dtype {self.dtype}:"
                 f" {'PASS' if self.passed else 'FAIL'}"]  # fmt: skip
        lines.append(f"  {'step':<14}{'status':<14}{'max error':>11}{'tolerance':>11}  where")
        for r in self.results:
            err = "" if r.max_error is None else f"{r.max_error:.3g}"
            tol = "" if r.tolerance is None else f"{r.tolerance:.3g}"
            extra = f"  [{r.not_judged} rows not judged: near-tie]" if r.not_judged else ""
            lines.append(f"  {r.step:<14}{r.status:<14}{err:>11}{tol:>11}  {r.where}{extra}")
        f = self.first_failure
        if f is not None:
            lines.append(f"  first failure: {f.step}: {f.message}")
        elif not self.passed:
            lines.append("  nothing was judged: provide at least `out`")
        if any(r.not_judged for r in self.results):
            lines.append(
                "  rows not judged: a top-k step the implementation did not return has a near-tie"
                " there; return components/positions to have them judged with injection"
            )
        return "\n".join(lines)


def _max_abs(a, b, keep):
    diff = np.abs(np.where(keep, a, 0.0) - np.where(keep, b, 0.0))
    flat = int(np.argmax(diff))
    return float(diff.flat[flat]), np.unravel_index(flat, diff.shape)


#: Judged dtypes from the most to the least precise. Within the normal range each one's grid
#: contains the next one's (bfloat16's 8-bit significands are float16 values), so rounding
#: to a later dtype never errs less than rounding to an earlier one.
PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")
#: Unit roundoff u of each dtype (half the spacing of its grid at 1).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11,
                 "bfloat16": 2.0**-8}  # fmt: skip


def _chain(dtype: str) -> tuple[str, ...]:
    """``dtype`` and every low-precision dtype more precise than it (float64 alone for
    float64): an implementation judged as ``dtype`` may be any of them."""
    if dtype == "float64":
        return ("float64",)
    return PRECISION_ORDER[1 : PRECISION_ORDER.index(dtype) + 1]


def _floor1(ref, dtype):
    """One dtype's rounding floor: the larger of flash-attention's rule
    ``2 |(ref + 0.3) - 0.3 - ref|`` in the dtype and one unit roundoff of ``max |ref|``
    (the rule alone vanishes where ``ref + 0.3 - 0.3`` happens to round back, e.g. alpha = 1
    in float16); for float64 implementations a reordering allowance of 1e-12 relative."""
    finite = ref[np.isfinite(ref)]
    if finite.size == 0:
        return 0.0
    big = float(np.abs(finite).max())
    if dtype == "float64":
        return 1e-12 * max(1.0, big)
    shifted = round_to(round_to(finite + 0.3, dtype) - 0.3, dtype)
    return max(2.0 * float(np.abs(shifted - finite).max()), UNIT_ROUNDOFF[dtype] * big)


def _floor(ref, dtype):
    """Rounding floor for an implementation judged as ``dtype``: the largest floor of the
    dtypes in :func:`_chain` (so a less precise judgement is never stricter)."""
    return max(_floor1(ref, p) for p in _chain(dtype))


def _tolerance(naives, truth, keep, dtype, allowance=0.0):
    """``2 * max |naive - truth| + floor + allowance``: ``naives`` are the emulated runs of
    every dtype in :func:`_chain` by both rounding routes, ``allowance`` the summation-order
    term of :func:`_order_allowances`."""
    err = max(_max_abs(nv, truth, keep)[0] for nv in naives)
    return 2.0 * err + _floor(np.where(keep, truth, 0.0), dtype) + allowance


def _max_abs_valid_rows(A, mask) -> float:
    """max |A| over valid positions, one batch row at a time (no full-size float64 copy)."""
    m = 0.0
    for b in range(A.shape[0]):
        rows = np.asarray(A[b][:, mask[b]], dtype=np.float64)
        if rows.size:
            m = max(m, float(np.abs(rows).max()))
    return m


def _order_allowances(q, K, V, mask, truth, p, dtype):
    """Per step, what another summation order may change (the emulated runs sum in one order).

    An implementation may sum in any order (blocked, tree, split-K). By the probabilistic
    rounding-error analysis of Higham and Mary (SIAM J. Sci. Comput. 41(5), 2019),
    a sum of ``n`` terms in precision ``u`` is off by at most about ``sqrt(n) u sum|terms|``
    with high probability; the allowance is ``(sqrt(n) + c) u_acc sum|terms|`` with ``u_acc``
    the accumulation precision of a naive implementation (float32 below float64) and
    ``sum|terms|`` bounded from the inputs: ``max |V|`` for the weighted sums of V (weights
    sum to 1), ``max_h ||q_h||_1 / tau_h * max |K|`` for the approximate logits, 1 for alpha,
    ``tau`` for the temperature (sums of positive terms)."""
    u = UNIT_ROUNDOFF["float64" if dtype == "float64" else "float32"]
    B, H, d = q.shape
    n = int(mask.sum(axis=1).max()) if mask.size else 0
    vmax = _max_abs_valid_rows(V, mask)
    kmax = _max_abs_valid_rows(K, mask)
    tau = np.asarray(truth.temperature, dtype=np.float64)
    l1 = np.abs(q.astype(np.float64)).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lscale = np.where(tau > 0, l1 / tau, 0.0)
    lmax = float(lscale.max(initial=0.0)) * kmax
    r = p["r"]
    return {
        "out": (n**0.5 + 4) * u * vmax,
        "y": (n**0.5 + 4) * u * vmax,
        "v_mean": (n**0.5 + 2) * u * vmax,
        "alpha": (n**0.5 + 4) * u,
        "approx_logits": (r**0.5 + 2) * u * lmax,
        "temperature": (d**0.5 + 2) * u * float(np.abs(tau).max(initial=0.0)),
        "selection_logits": (r**0.5 + 2) * u * lmax * (H // max(1, truth.components.shape[1])),
        "selection_probs": (n**0.5 + 4) * u * (H // max(1, truth.components.shape[1])),
    }


def _group_heads(params, H, Hkv):
    per = H // Hkv if params["selection"] == "group" else 1
    return per, H // per


def check_sparq(
    case: GoldenCase,
    outputs: Mapping[str, np.ndarray] | Callable[..., Mapping[str, np.ndarray]],
    *,
    dtype: str | None = None,
) -> CheckReport:
    """Judge an implementation's SparQ steps against the float64 truth of ``case``.

    Parameters
    ----------
    case : GoldenCase
    outputs : mapping or callable
        Any subset of ``components (B, G, r)``, ``approx_logits (B, H, S)``, ``positions
        (B, G, k)`` (-1 in unused slots), ``alpha (B, H)``, ``v_mean (B, Hkv, d)``, ``out
        (B, H, d)`` (``G`` = Hkv, or H with per-head selection). A callable is called as
        ``fn(q, k_cache, v_cache, mask, **case.params)`` and must return such a mapping.
    dtype : str, optional
        The implementation's compute dtype, which sets the tolerances (default: the case's).

    Returns
    -------
    CheckReport
        Per step: pass / fail / not provided, the max error, the tolerance, where.
    """
    dtype = case.dtype if dtype is None else dtype
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype: expected one of {PRECISIONS}, got {dtype!r}")
    from reference._checker_io import prepare_outputs, with_failures

    # Host NumPy arrays from any array type; a callable gets read-only copies of the inputs.
    outputs, failures = prepare_outputs(case, outputs, dtype)
    if failures:  # the inputs were modified, or a step has an impossible dtype
        return with_failures(check_sparq(case, outputs, dtype=dtype), failures)
    unknown = set(outputs) - set(STEPS)
    if unknown:
        raise ValueError(f"outputs: unknown steps {sorted(unknown)}; expected some of {STEPS}")
    q, K, V, mask = (case.inputs[k] for k in INPUTS)
    B, H, d = q.shape
    Hkv, S = K.shape[1], K.shape[2]
    p = case.params
    per, G = _group_heads(p, H, Hkv)
    exp = case.expected
    kcols = positions_columns(p["k"], S)
    shapes = dict(components=(B, G, p["r"]), temperature=(B, H), approx_logits=(B, H, S),
                  positions=(B, G, kcols), alpha=(B, H), v_mean=(B, Hkv, d), y=(B, H, d),
                  out=(B, H, d))  # fmt: skip
    got = {}
    results = []
    for name in STEPS:
        if name not in outputs:
            continue
        a = np.asarray(outputs[name])
        if name == "positions" and kcols < p["k"] and a.shape == (B, G, p["k"]):
            # k > S: positions has min(k, S) columns; an implementation that keeps all k
            # columns is judged on the first S when the rest are the -1 padding.
            if a.dtype.kind in "iu" and (a[..., kcols:] == -1).all():
                a = a[..., :kcols]
        if a.shape != shapes[name]:
            results.append(
                StepResult(name, "fail", message=f"expected shape {shapes[name]}, got {a.shape}")
            )
            continue
        got[name] = a
    failed_shape = {r.step for r in results}

    rowwise = _is_rowwise(B, Hkv, S, d)

    def run(precision, comps, pos):
        return _twin_steps(q, K, V, mask, rowwise=rowwise, precision=precision,
                           inject_components=comps, inject_positions=pos, **p)  # fmt: skip

    # Earlier choices of the implementation, injected when they are well-formed.
    comps = got.get("components")
    ok_c = comps is not None and _components_ok(comps, d)
    pos = got.get("positions")
    ok_p = pos is not None and _positions_ok(pos, mask, p["k"])
    inj_c = comps.astype(np.int64) if ok_c else None
    inj_p = pos.astype(np.int64) if ok_p else None
    truth = run("float64", inj_c, inj_p) if (ok_c or ok_p) else exp
    # Naive runs by two rounding routes (reference/precision.py) in the judged dtype and in
    # every more precise low-precision dtype: an implementation judged as float16 may keep
    # some tensors in float32, so its tolerance must cover the float32 runs too.
    if dtype == "float64":
        naives = [truth]
    else:
        naives = [run(Precision(pr, reorder=ro), inj_c, inj_p)
                  for pr in _chain(dtype) for ro in (False, True)]  # fmt: skip
    allow = _order_allowances(q, K, V, mask, truth, p, dtype)
    valid_h = np.broadcast_to(mask[:, None, :], (B, H, S))
    # Rows where a top-k the implementation did not return is ambiguous (near-tie): more than
    # one answer is right there, so the steps that depend on it are not judged on those rows.
    amb_c = (
        np.zeros((B, G), dtype=bool) if ok_c else _ambiguous_components(q, per, G, p["r"], dtype)
    )
    amb_p = (
        np.zeros((B, G), dtype=bool)
        if ok_p
        else _ambiguous_positions(truth, naives, mask, per, G, p, dtype, allow)
    )
    amb_p |= amb_c
    skip_heads = dict(temperature=amb_c, approx_logits=amb_c, alpha=amb_p, y=amb_p, out=amb_p)

    for name in STEPS:
        if name in failed_shape:
            continue
        if name not in got:
            results.append(StepResult(name, "not provided"))
            continue
        a = got[name]
        if name == "components":
            results.append(_check_components(a, q, per, G, p["r"], dtype))
        elif name == "positions":
            results.append(_check_positions(a, truth, mask, per, G, p, dtype, naives, amb_c, allow))
        else:
            ref, nv = getattr(truth, name), [getattr(n, name) for n in naives]
            keep = valid_h if name == "approx_logits" else np.ones(ref.shape, dtype=bool)
            n_skip = 0
            if name in skip_heads:
                heads_ok = ~np.repeat(skip_heads[name], per, axis=1)  # (B, H)
                n_skip = int((~heads_ok).sum())
                keep = keep & heads_ok.reshape(heads_ok.shape + (1,) * (ref.ndim - 2))
                if not keep.any():
                    results.append(StepResult(name, "not judged", not_judged=n_skip))
                    continue
            a64 = a.astype(np.float64)
            bad = keep & ~np.isfinite(a64)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                msg = f"non-finite value {a64[idx]} at {_where(name, idx)}"
                results.append(StepResult(name, "fail", where=_where(name, idx), message=msg))
                continue
            tol = _tolerance(nv, ref, keep, dtype, allow[name])
            err, idx = _max_abs(a64, ref, keep)
            where = _where(name, idx)
            injected = []
            if name in ("temperature", "approx_logits", "alpha", "y", "out") and ok_c:
                injected.append("components")
            if name in ("alpha", "y", "out") and ok_p:
                injected.append("positions")
            note = f" (given the implementation's {' and '.join(injected)})" if injected else ""
            status = "pass" if err <= tol else "fail"
            results.append(StepResult(
                name, status, err, tol, where,
                f"max |got - truth| = {err:.3g} > tolerance {tol:.3g} at {where}: got"
                f" {a64[idx]:.17g}, truth {ref[idx]:.17g} (relative error"
                f" {_relative(err, ref[idx])}){note}", n_skip,
            ))  # fmt: skip
    results.sort(key=lambda r: STEPS.index(r.step))
    return CheckReport(case.name, case.shape, dtype, tuple(results))


def _relative(err: float, ref: float) -> str:
    return f"{err / abs(ref):.3g}" if ref != 0 else "inf (truth is 0)"


def _where(name, idx):
    labels = dict(temperature=("b", "h"), approx_logits=("b", "h", "pos"), alpha=("b", "h"),
                  v_mean=("b", "kv", "c"), y=("b", "h", "c"),
                  out=("b", "h", "c"))[name]  # fmt: skip
    return "(" + ", ".join(f"{lab}={int(i)}" for lab, i in zip(labels, idx, strict=True)) + ")"


def _component_scores(q, per, G):
    B, H, d = q.shape
    return np.abs(q.astype(np.float64)).reshape(B, G, per, d).sum(2)  # (B, G, d)


def _component_tol(a_row, kth, per, dtype):
    """How far a component score may be misjudged: the dtype's rounding of the r-th best
    score (once per head summed) plus the rounding floor, the largest over :func:`_chain`."""
    u = UNIT_ROUNDOFF["float64" if dtype == "float64" else "float32"]
    order = (per**0.5 + 2) * u * abs(kth)  # the sum over the per heads in another order
    return (
        max(
            2.0 * abs(round_to(np.array([kth]), p)[0] - kth) * per + _floor1(a_row, p)
            for p in _chain(dtype)
        )
        + order
    )


def _ambiguous_components(q, per, G, r, dtype):
    """(B, G): the r-th and (r+1)-th best component scores are within the tolerance."""
    a = _component_scores(q, per, G)
    B, _, d = a.shape
    amb = np.zeros((B, G), dtype=bool)
    if r == d:
        return amb
    for b in range(B):
        for g in range(G):
            srt = np.sort(a[b, g])[::-1]
            amb[b, g] = srt[r - 1] - srt[r] <= _component_tol(a[b, g], srt[r - 1], per, dtype)
    return amb


def _bucket_ids(n_rest: int, p) -> np.ndarray:
    """Bucket of each compacted non-local position (index order) under the bucketed top-k
    of step 4: ``min(num_buckets, n_rest)`` buckets, interleaved or contiguous, no padding."""
    b = min(p["num_buckets"], n_rest)
    if p.get("interleaved", True):
        return np.arange(n_rest) % b
    base, rem = divmod(n_rest, b)
    sizes = np.where(np.arange(b) < rem, base + 1, base)
    return np.repeat(np.arange(b), sizes)


def _bucketed_thresholds(rest: np.ndarray, need: int, p):
    """For the non-local scores ``rest`` (index order): per position the k_b-th best score of
    its bucket (``-inf`` where the bucket holds at most k_b), and the ``need``-th best
    candidate score; plus the gaps at both boundaries (for ambiguity)."""
    ids = _bucket_ids(rest.size, p)
    kb = p.get("k_per_bucket", 1)
    bucket_kth = np.full(rest.size, -np.inf)
    cand = []
    gap = np.inf
    for j in range(int(ids.max()) + 1):
        members = np.flatnonzero(ids == j)
        srt = np.sort(rest[members])[::-1]
        if members.size > kb:
            bucket_kth[members] = srt[kb - 1]
            gap = min(gap, srt[kb - 1] - srt[kb])
        cand.append(srt[: min(kb, members.size)])
    cand = np.sort(np.concatenate(cand))[::-1]
    cand_kth = cand[need - 1]
    if cand.size > need:
        gap = min(gap, cand[need - 1] - cand[need])
    return bucket_kth, cand_kth, gap


def _selection_rows(truth, naives, mask, per, G, p, dtype, allow):
    """Yield (b, g, valid, n, n_local, score over valid, tolerance) for every group that has
    a real choice to make (fewer positions kept than valid, more than the window)."""
    B = mask.shape[0]
    k, lw = p["k"], p["local_window"]
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        nv = valid.size
        n, n_local = min(k, nv), min(lw, nv)
        if n == nv or n == n_local:
            continue
        for g in range(G):
            heads = slice(g * per, (g + 1) * per)
            score = _selection_score(truth.approx_logits[b, heads][:, valid], p["group_score"])
            spread = max(
                float(np.abs(_selection_score(nv_.approx_logits[b, heads][:, valid],
                                              p["group_score"]) - score).max())
                for nv_ in naives
            )  # fmt: skip
            extra = allow["selection_" + p["group_score"]]
            yield b, g, valid, n, n_local, score, 2.0 * spread + _floor(score, dtype) + extra


def _ambiguous_positions(truth, naives, mask, per, G, p, dtype, allow):
    """(B, G): the last kept and the first dropped non-local selection scores are within the
    tolerance, so a correct implementation may keep either."""
    amb = np.zeros((mask.shape[0], G), dtype=bool)
    for b, g, valid, n, n_local, score, tol in _selection_rows(truth, naives, mask, per, G, p,
                                                               dtype, allow):  # fmt: skip
        need = n - n_local
        rest = score[: valid.size - n_local]
        if p.get("topk", "exact") == "bucketed":
            amb[b, g] = _bucketed_thresholds(rest, need, p)[2] <= tol
            continue
        srt = np.sort(rest)[::-1]
        amb[b, g] = srt[need - 1] - srt[need] <= tol
    return amb


def _check_components(c, q, per, G, r, dtype):
    """Tie-safe: each chosen component's score sum_h |q_h,i| must reach the r-th best score
    minus a tolerance (the naive dtype's rounding of that sum)."""
    B, H, d = q.shape
    c = np.asarray(c)
    if c.dtype.kind not in "iu":
        return StepResult("components", "fail", message=f"expected integer indices, got {c.dtype}")
    a = _component_scores(q, per, G)
    worst = 0.0
    tol_all = 0.0
    for b in range(B):
        for g in range(G):
            row = c[b, g]
            if ((row < 0) | (row >= d)).any() or np.unique(row).size != r:
                return StepResult(
                    "components",
                    "fail",
                    where=f"(b={b}, group={g})",
                    message=f"expected {r} distinct indices in [0, {d}), got {row.tolist()}",
                )
            kth = np.sort(a[b, g])[::-1][r - 1]
            tol = _component_tol(a[b, g], kth, per, dtype)
            short = kth - a[b, g, row]
            tol_all = max(tol_all, tol)
            if short.max() > tol:
                i = int(np.argmax(short))
                return StepResult(
                    "components", "fail", float(short.max()), tol, f"(b={b}, group={g}, slot={i})",
                    f"component {row[i]} has score {a[b, g, row[i]]:.6g} below the r-th best"
                    f" {kth:.6g} by more than {tol:.3g} at (b={b}, group={g})",
                )  # fmt: skip
            worst = max(worst, float(max(short.max(), 0.0)))
    return StepResult("components", "pass", worst, tol_all, "tie-safe: score >= r-th best - tol")


def _selection_score(s, group_score):
    """Group score of step 4 from approximate logits ``s (per, n_valid)`` (un-forced)."""
    if group_score == "logits":
        return s.sum(0)
    w = np.exp(s - s.max(1, keepdims=True))
    return (w / w.sum(1, keepdims=True)).sum(0)


def _check_positions(pos, truth, mask, per, G, p, dtype, naives, skip, allow):
    """Structure (distinct valid positions, count, -1 padding, the local window) exactly;
    the choice tie-safely: every non-local chosen position's selection score (from the
    float64 approximate logits given the implementation's components) must reach the
    (k - window)-th best non-local score minus a tolerance (twice the naive dtype's spread of
    that score plus the rounding floor). Groups in ``skip`` (ambiguous components that the
    implementation did not return) are checked for structure only."""
    k, lw = p["k"], p["local_window"]
    pos = np.asarray(pos)
    if pos.dtype.kind not in "iu":
        return StepResult("positions", "fail", message=f"expected integer indices, got {pos.dtype}")
    for b in range(mask.shape[0]):
        valid = np.flatnonzero(mask[b])
        n = min(k, valid.size)
        local = valid[valid.size - min(lw, valid.size) :]
        for g in range(G):
            row = pos[b, g]
            used = row[:n]
            where = f"(b={b}, group={g})"
            if (row[n:] != -1).any() or not np.isin(used, valid).all() or np.unique(used).size != n:
                msg = (
                    f"expected {n} distinct valid positions then -1s at {where}, got {row.tolist()}"
                )
                return StepResult("positions", "fail", where=where, message=msg)
            missing = np.setdiff1d(local, used)
            if missing.size:
                msg = f"local window position(s) {missing.tolist()} not selected at {where}"
                return StepResult("positions", "fail", where=where, message=msg)
    worst, tol_all = 0.0, 0.0
    for b, g, valid, n, n_local, score, tol in _selection_rows(truth, naives, mask, per, G, p,
                                                               dtype, allow):  # fmt: skip
        if skip[b, g]:
            continue
        where = f"(b={b}, group={g})"
        need = n - n_local
        rest = score[: valid.size - n_local]
        tol_all = max(tol_all, tol)
        chosen = np.searchsorted(valid, np.setdiff1d(pos[b, g, :n], valid[valid.size - n_local :]))
        # Each chosen non-local position must reach the (k - window)-th best score and, for
        # the bucketed top-k, also the k_b-th best score of its own bucket (up to the
        # tolerance), i.e. be among its bucket's top k_b and the top candidates.
        if p.get("topk", "exact") == "bucketed":
            bucket_kth, kth, _ = _bucketed_thresholds(rest, need, p)
            thresholds = [(bucket_kth[chosen], "the k_per_bucket-th best score {:.6g} of its"
                           " bucket")]  # fmt: skip
            label = f"the {need}-th best candidate score {{:.6g}} (bucketed top-k)"
        else:
            thresholds = []
            kth = np.sort(rest)[::-1][need - 1]
            label = f"the {need}-th best non-local score {{:.6g}}"
        thresholds.append((np.full(chosen.size, kth), label))
        for thresh, what in thresholds:
            short = thresh - score[chosen]
            if short.max() > tol:
                i = int(np.argmax(short))
                return StepResult(
                    "positions", "fail", float(short.max()), tol, where,
                    f"position {valid[chosen[i]]} has selection score {score[chosen[i]]:.6g}"
                    f" below {what.format(thresh[i])} by more than {tol:.3g} at {where}",
                    int(skip.sum()),
                )  # fmt: skip
        worst = max(worst, float(max(short.max(), 0.0)))
    return StepResult("positions", "pass", worst, tol_all, "tie-safe: score >= k-th best - tol",
                      not_judged=int(skip.sum()))  # fmt: skip


def assert_sparq_matches(
    case: GoldenCase,
    outputs: Mapping[str, np.ndarray] | Callable[..., Mapping[str, np.ndarray]],
    *,
    dtype: str | None = None,
) -> None:
    """:func:`check_sparq` for test suites: returns None when the report passes, else raises
    ``AssertionError`` whose message is the whole report (``str(report)``)."""
    report = check_sparq(case, outputs, dtype=dtype)
    if not report.passed:
        raise AssertionError(str(report))
