"""Memory traffic of one decode step of attention: the paper's formulas and a byte-level model.

:func:`transfers` reproduces the paper's element counts exactly (SparQ Attention, Ribar et
al., ICML 2024, §3 Eq. 3 and Eq. 11, App. G; peers as in their own papers, listed in
docs/costmodel.md section 1). They count scalar elements per attention head and ignore
layout, dtype, granularity and top-k.

:func:`attention_traffic` goes past the paper: it counts bytes per step of a real kernel
sequence (step-1 column reads with transaction granularity, score write, top-k input, k-row
gathers of K and V, v_mean, cache writes, q/output), for a batch of sequences and all heads,
with GQA shared or per-query-head selection and K stored once or twice.

Each method with a byte-level model registers one function in :data:`BYTE_MODELS` (with the
:func:`byte_model` decorator) that maps an :class:`AttentionCall` to its :class:`Step` terms;
the other :data:`METHODS` fall back to their paper formula times dtype bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from math import comb

import numpy as np

from costmodel.shapes import MAX_HEAD_DIM
from reference import check_int

__all__ = [
    "METHODS",
    "DTYPE_BYTES",
    "transfers",
    "compression_ratio",
    "dtype_bytes",
    "Step",
    "Traffic",
    "attention_traffic",
    "AttentionCall",
    "MethodBytes",
    "BYTE_MODELS",
    "byte_model",
    "expected_touched_segments",
]

#: methods :func:`transfers` knows (paper's own and peers)
METHODS = (
    "dense",
    "sparq",
    "h2o",
    "lm_infinite",
    "flexgen",
    "quest",
    "double_sparsity",
    "loki",
)

#: bytes per element for the dtypes the model accepts
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float8": 1, "float32": 4}
_DTYPE_ALIASES = {
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp8": "float8",
    "float8_e4m3": "float8",
    "float8_e5m2": "float8",
    "fp32": "float32",
    "float": "float32",
}


def dtype_bytes(dtype: str) -> tuple[str, int]:
    """Canonical dtype name and its bytes per element; ``ValueError`` for anything else."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: expected a string such as 'float16', got {type(dtype).__name__}")
    name = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if name not in DTYPE_BYTES:
        raise ValueError(
            f"dtype: expected one of {sorted(DTYPE_BYTES)} (or fp16/bf16/fp8/fp32), got {dtype!r}"
        )
    return name, DTYPE_BYTES[name]


#: largest size (batch, heads, sequence length, layers, k, ...) the byte models take: every
#: count then converts to float64 exactly; ``head_dim`` is bounded by
#: :data:`costmodel.shapes.MAX_HEAD_DIM` (the expected-segments sum grows as d**3)
MAX_SIZE = 2**53
#: largest memory transaction (``transaction_bytes``) and index size (``index_bytes``)
MAX_TRANSACTION_BYTES = 2**20
MAX_INDEX_BYTES = 16


def _check_int(name: str, value, minimum: int = 1) -> int:
    """An integer argument in ``[minimum, MAX_SIZE]`` (the rules of ``reference.check_int``);
    ``head_dim`` at most :data:`costmodel.shapes.MAX_HEAD_DIM`."""
    if name == "head_dim":
        return check_int(name, value, lo=minimum, hi=MAX_HEAD_DIM, hi_name="MAX_HEAD_DIM")
    return check_int(name, value, lo=minimum, hi=MAX_SIZE)


def _check_method(method) -> None:
    if not isinstance(method, str):
        raise TypeError(f"method: expected a str, got {type(method).__name__} {method!r}")


def _check_rk(seq_len: int, head_dim: int, r, k, *, need_r: bool, need_k: bool):
    if need_r:
        if r is None:
            raise ValueError("r (query components kept) is required for this method")
        r = _check_int("r", r)
        if r > head_dim:
            raise ValueError(f"r: expected <= head_dim ({head_dim}), got r={r}")
    if need_k:
        if k is None:
            raise ValueError("k (positions kept) is required for this method")
        k = _check_int("k", k)
        if k > seq_len:
            raise ValueError(f"k: expected <= seq_len ({seq_len}), got k={k}")
    return r, k


def transfers(
    method: str,
    *,
    seq_len: int,
    head_dim: int,
    r: int | None = None,
    k: int | None = None,
    page_size: int | None = None,
    bits: int = 16,
    variant: str = "paper",
    reallocation: bool = True,
) -> int:
    """Scalar elements moved per attention head per decode step, as the papers count them.

    Parameters
    ----------
    method : {"dense", "sparq", "h2o", "lm_infinite", "flexgen", "quest", "double_sparsity",
        "loki"}
    seq_len : int
        ``S``, cached positions.
    head_dim : int
        ``d``.
    r, k : int
        Query components and positions kept (``1 <= r <= d``, ``1 <= k <= S``) for the methods
        that use them.
    page_size : int
        Quest page size ``P``.
    bits : int
        DoubleSparsity label-cache bits per element (16 = fp16); the result is rounded up
        to whole 16-bit elements.
    variant : {"paper", "notebook"}
        SparQ only: ``"paper"`` is Eq. 11 (``S*r + 2*k*d + 4*d``); ``"notebook"`` is the
        figures' own accounting ``S*r + 2*k*d + 3*d`` plus ``2*d`` with reallocation.

    Returns
    -------
    int
        Elements, exactly as in the formulas:

        ======================  ===============================  =============================
        dense                   ``2*S*d + 2*d``                  Eq. 3
        sparq (paper)           ``S*r + 2*k*d + 4*d``            Eq. 11
        h2o                     ``2*k*d + 2*d + 2*S``            App. G
        lm_infinite             ``2*k*d + 2*d``                  App. G
        flexgen                 ``S*d + k*d + 2*d``              App. G
        quest                   ``2*d*ceil(S/P) + 2*d*k``        peer (docs/costmodel.md)
        double_sparsity         ``S*r*bits/16 + 2*k*d``          peer
        loki                    ``S*r + 2*k*d``                  peer
        ======================  ===============================  =============================
    """
    _check_method(method)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    S = _check_int("seq_len", seq_len)
    d = _check_int("head_dim", head_dim)
    needs_r = method in ("sparq", "double_sparsity", "loki")
    needs_k = method != "dense"
    # an argument the method's formula does not use is an error, not silently ignored
    unused = [
        name
        for name, given in (
            ("r", r is not None and not needs_r),
            ("k", k is not None and not needs_k),
            ("page_size", page_size is not None and method != "quest"),
            ("bits", bits != 16 and method != "double_sparsity"),
            ("variant", variant != "paper" and method != "sparq"),
            ("reallocation", reallocation is not True and method != "sparq"),
        )
        if given
    ]
    if unused:
        raise ValueError(f"method {method!r} does not use argument(s) {unused}")
    r, k = _check_rk(S, d, r, k, need_r=needs_r, need_k=needs_k)
    if method == "dense":
        return 2 * S * d + 2 * d
    if method == "sparq":
        if variant == "paper":
            return S * r + 2 * k * d + 4 * d
        if variant == "notebook":
            return S * r + 2 * k * d + 3 * d + (2 * d if reallocation else 0)
        raise ValueError(f"variant: expected 'paper' or 'notebook', got {variant!r}")
    if method == "h2o":
        return 2 * k * d + 2 * d + 2 * S
    if method == "lm_infinite":
        return 2 * k * d + 2 * d
    if method == "flexgen":
        return S * d + k * d + 2 * d
    if method == "quest":
        if page_size is None:
            raise ValueError("page_size (Quest page size P) is required for method 'quest'")
        P = _check_int("page_size", page_size)
        return 2 * d * (-(-S // P)) + 2 * d * k
    if method == "double_sparsity":
        b = _check_int("bits", bits)
        if b > 16:
            raise ValueError(f"bits: expected 1..16, got {b}")
        return -(-(S * r * b) // 16) + 2 * k * d
    # loki
    return S * r + 2 * k * d


def compression_ratio(method: str, *, seq_len: int, head_dim: int, **kwargs) -> float:
    """``transfers(method) / transfers("dense")`` at the same ``seq_len`` and ``head_dim``.

    ``kwargs`` are the method's other :func:`transfers` arguments (``r``, ``k``, ...).
    """
    dense = transfers("dense", seq_len=seq_len, head_dim=head_dim)
    return transfers(method, seq_len=seq_len, head_dim=head_dim, **kwargs) / dense


def expected_touched_segments(*, head_dim: int, r: int, elems_per_segment: int) -> float:
    """Expected number of memory segments touched when reading ``r`` of ``head_dim`` elements.

    A row of ``head_dim`` contiguous elements spans ``ceil(head_dim / m)`` segments of ``m``
    elements (one memory transaction each). With the ``r`` chosen components a uniformly random
    ``r``-subset (an assumption: SparQ picks the largest ``|q|`` components, which are not
    structured by position), segment ``j`` of size ``m_j`` is missed with probability
    ``C(d - m_j, r) / C(d, r)``; the expectation is the sum of the hit probabilities.

    Examples: ``d = 128, r = 32, m = 16`` gives 7.94 of 8 segments; ``r = 1`` gives exactly 1.
    """
    d = _check_int("head_dim", head_dim)
    r = _check_int("r", r)
    m = _check_int("elems_per_segment", elems_per_segment)
    if r > d:
        raise ValueError(f"r: expected <= head_dim ({d}), got r={r}")
    total = comb(d, r)
    out = 0.0
    start = 0
    while start < d:
        size = min(m, d - start)
        out += 1.0 - comb(d - size, r) / total
        start += size
    return out


@dataclass(frozen=True)
class Step:
    """One term of the byte-level traffic of a decode step.

    Attributes
    ----------
    name : str
        Term name (``step1_columns``, ``topk``, ``gather_kv``, ...).
    kernel : str
        Kernel it belongs to; terms of one kernel share a launch and one roofline max.
    bytes : float
        Bytes moved (expected value where granularity makes it random).
    flops : float
        Floating-point operations.
    priced_as : str
        ``"memory"`` (bytes / effective bandwidth) or ``"topk"`` (top-k throughput term).
    note : str
        How the term is counted.
    """

    name: str
    kernel: str
    bytes: float
    flops: float
    priced_as: str
    note: str


@dataclass(frozen=True)
class Traffic:
    """Byte-level traffic of one attention call (all sequences, heads and ``n_layers``).

    Attributes
    ----------
    method : str
    steps : tuple of Step
        The per-step terms; ``bytes`` and ``flops`` are their sums.
    kernels : tuple of str
        Kernel names in launch order.
    kv_cache_bytes : float
        KV cache held in memory (with K twice, ``3*S*d*e`` per KV head).
    paper_elements : int
        The paper's element count (:func:`transfers`) summed over what the byte model reads:
        dense once per KV head, SparQ once per selection (``n_sel`` per KV head), other
        methods once per query head.
    dtype : str
    dtype_bytes : int
    """

    method: str
    steps: tuple[Step, ...]
    kernels: tuple[str, ...]
    kv_cache_bytes: float
    paper_elements: int
    dtype: str
    dtype_bytes: int

    @property
    def bytes(self) -> float:
        return float(sum(s.bytes for s in self.steps))

    @property
    def flops(self) -> float:
        return float(sum(s.flops for s in self.steps))

    def by_name(self) -> dict[str, float]:
        """``{step name: bytes}``."""
        return {s.name: s.bytes for s in self.steps}


def _ceil_to(nbytes: float, granule: int) -> float:
    return math.ceil(nbytes / granule) * granule


# ------------------------------------------------------------------ byte-model registry
@dataclass(frozen=True)
class AttentionCall:
    """Validated arguments of one :func:`attention_traffic` call, as byte models see them.

    Attributes
    ----------
    method : str
    batch, n_heads, n_kv_heads, seq_len, head_dim : int
        ``B``, ``H``, ``Hkv``, ``S``, ``d`` (checked: positive, ``H % Hkv == 0``).
    dtype : str
        Canonical dtype name.
    dtype_bytes : int
        ``e``, bytes per element.
    r, k : int or None
        As given (a byte model checks the ones it needs with ``_check_rk``).
    store_k_twice : bool
    gqa_selection : {"shared", "per_head"}
    transaction_bytes : int
        ``T``.
    index_bytes : int
    n_layers : int
    """

    method: str
    batch: int
    n_heads: int
    n_kv_heads: int
    seq_len: int
    head_dim: int
    dtype: str
    dtype_bytes: int
    r: int | None
    k: int | None
    store_k_twice: bool
    gqa_selection: str
    transaction_bytes: int
    index_bytes: int
    n_layers: int

    @property
    def g(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_kv(self) -> int:
        """KV-head instances: ``B * Hkv * n_layers``."""
        return self.batch * self.n_kv_heads * self.n_layers


@dataclass(frozen=True)
class MethodBytes:
    """What a byte model returns: its steps, the KV cache it holds and the paper's count.

    Attributes
    ----------
    steps : list of Step
        In launch order; the :class:`Traffic`'s kernels are their kernel names in order of
        first appearance.
    kv_cache_bytes : float
    paper_elements : int
    """

    steps: list[Step]
    kv_cache_bytes: float
    paper_elements: int


#: ``{method: byte model}``; a byte model maps an :class:`AttentionCall` to
#: :class:`MethodBytes`. Methods of :data:`METHODS` without one fall back to their paper
#: formula times dtype bytes (one kernel).
BYTE_MODELS: dict[str, Callable[[AttentionCall], MethodBytes]] = {}


def byte_model(name: str):
    """Decorator: register ``fn(call: AttentionCall) -> MethodBytes`` as method ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string, got {name!r}")

    def register(fn: Callable[[AttentionCall], MethodBytes]):
        BYTE_MODELS[name] = fn
        return fn

    return register


@byte_model("dense")
def _dense_bytes(c: AttentionCall) -> MethodBytes:
    """Dense attention: one kernel reads K and V once per KV head (Eq. 3 in bytes)."""
    if c.r is not None or c.k is not None:
        raise ValueError("r and k do not apply to method 'dense' (got r or k)")
    S, d, e, g, n_kv = c.seq_len, c.head_dim, c.dtype_bytes, c.g, c.n_kv
    steps = [
        Step(
            name="kv_read",
            kernel="attention",
            bytes=n_kv * 2 * S * d * e,
            flops=0.0,
            priced_as="memory",
            note="read K and V: 2*S*d*e per KV head (Eq. 3)",
        ),
        Step(
            name="kv_write",
            kernel="attention",
            bytes=n_kv * 2 * d * e,
            flops=0.0,
            priced_as="memory",
            note="append new k, v: 2*d*e per KV head (Eq. 3)",
        ),
        Step(
            name="q_out",
            kernel="attention",
            bytes=n_kv * 2 * g * d * e,
            flops=n_kv * g * (4 * S * d + 5 * S),
            priced_as="memory",
            note="read q, write output: 2*g*d*e; FLOPs g*(4*S*d + 5*S)",
        ),
    ]
    return MethodBytes(
        steps=steps,
        kv_cache_bytes=n_kv * 2 * S * d * e,
        paper_elements=transfers("dense", seq_len=S, head_dim=d) * n_kv,
    )


def _sparq_step1_columns(c: AttentionCall, r: int, n_sel: int) -> tuple[float, str]:
    """Bytes and note of SparQ's step-1 read of ``r`` components of every key."""
    S, d, e, T = c.seq_len, c.head_dim, c.dtype_bytes, c.transaction_bytes
    if c.store_k_twice:
        col_bytes = n_sel * r * _ceil_to(S * e, T)
        return col_bytes, f"r rows of the d-major K copy: n_sel*r*ceil(S*e/T)*T, T={T}"
    m = max(1, T // e)
    segs = expected_touched_segments(head_dim=d, r=r, elems_per_segment=m)
    col_bytes = n_sel * S * segs * min(T, d * e)
    return col_bytes, (
        f"r scattered columns of S-major K: n_sel*S*E[segments touched]*T, "
        f"E={segs:.3f} of {math.ceil(d / m)} segments of {T} B"
    )


@byte_model("sparq")
def _sparq_bytes(c: AttentionCall) -> MethodBytes:
    """SparQ: step 1 (approximate scores), top-k, step 3 (gather + exact attention)."""
    S, d, e, g, n_kv = c.seq_len, c.head_dim, c.dtype_bytes, c.g, c.n_kv
    T, ib = c.transaction_bytes, c.index_bytes
    r, k = _check_rk(S, d, c.r, c.k, need_r=True, need_k=True)
    n_sel = 1 if c.gqa_selection == "shared" else g
    kv_row = _ceil_to(d * e, T)
    col_bytes, col_note = _sparq_step1_columns(c, r, n_sel)
    write_twice = d * T if c.store_k_twice else 0
    steps = [
        Step(
            name="step1_columns",
            kernel="step1",
            bytes=n_kv * col_bytes,
            flops=n_kv * (2 * S * r * g + S * (g - 1)),
            priced_as="memory",
            note=col_note,
        ),
        Step(
            name="step1_q_scores",
            kernel="step1",
            bytes=n_kv * (g * d * e + n_sel * S * e),
            flops=0.0,
            priced_as="memory",
            note="read q (g*d*e), write approximate scores (n_sel*S*e)",
        ),
        Step(
            name="topk",
            kernel="topk",
            bytes=n_kv * n_sel * (S * e + k * ib),
            flops=0.0,
            priced_as="topk",
            note="read scores n_sel*S*e, write k indices; priced by top-k throughput",
        ),
        Step(
            name="gather_kv",
            kernel="step3",
            bytes=n_kv * n_sel * (2 * k * kv_row + k * ib),
            flops=n_kv * g * (4 * k * d + 5 * k + 5 * S),
            priced_as="memory",
            note="k rows of K and of V (2*k*ceil(d*e/T)*T) + indices; FLOPs g*(4kd + 5k + 5S)",
        ),
        Step(
            name="v_mean",
            kernel="step3",
            bytes=n_kv * 2 * d * e,
            flops=0.0,
            priced_as="memory",
            note="read + write v_mean: 2*d*e",
        ),
        Step(
            name="out_write",
            kernel="step3",
            bytes=n_kv * g * d * e,
            flops=0.0,
            priced_as="memory",
            note="write output g*d*e",
        ),
        Step(
            name="kv_write",
            kernel="step3",
            bytes=n_kv * (2 * d * e + write_twice),
            flops=0.0,
            priced_as="memory",
            note="append k, v (2*d*e)"
            + (f" + strided k into the d-major copy (d*T, T={T})" if c.store_k_twice else ""),
        ),
    ]
    return MethodBytes(
        steps=steps,
        kv_cache_bytes=n_kv * (3 if c.store_k_twice else 2) * S * d * e,
        paper_elements=transfers("sparq", seq_len=S, head_dim=d, r=r, k=k) * n_kv * n_sel,
    )


def _paper_formula_bytes(c: AttentionCall, paper_kwargs: dict) -> MethodBytes:
    """Fallback for a method without a byte model: paper elements x dtype bytes, one kernel."""
    S, d, e, g, n_kv = c.seq_len, c.head_dim, c.dtype_bytes, c.g, c.n_kv
    elems = transfers(c.method, seq_len=S, head_dim=d, r=c.r, k=c.k, **paper_kwargs)
    step = Step(
        name="paper_formula",
        kernel="attention",
        bytes=n_kv * g * elems * e,
        flops=0.0,
        priced_as="memory",
        note=f"{c.method}: paper element count x dtype bytes per query head (no byte model)",
    )
    return MethodBytes(
        steps=[step], kv_cache_bytes=n_kv * 2 * S * d * e, paper_elements=elems * n_kv * g
    )


def attention_traffic(
    method: str,
    *,
    batch: int,
    n_heads: int,
    n_kv_heads: int,
    seq_len: int,
    head_dim: int,
    dtype: str = "float16",
    r: int | None = None,
    k: int | None = None,
    store_k_twice: bool = True,
    gqa_selection: str = "shared",
    transaction_bytes: int = 32,
    index_bytes: int = 8,
    n_layers: int = 1,
    **paper_kwargs,
) -> Traffic:
    """Bytes and FLOPs per step of one decode-attention call.

    Parameters
    ----------
    method : str
        A method of :data:`BYTE_MODELS` (``"dense"`` and ``"sparq"``, plus any registered
        with :func:`byte_model`) gets its byte-level model; the other :data:`METHODS` fall
        back to their paper formula times dtype bytes (one kernel).
    batch, n_heads, n_kv_heads, seq_len, head_dim : int
        ``B``, ``H``, ``Hkv`` (``H % Hkv == 0``, ``g = H / Hkv``), ``S``, ``d``.
    dtype : str
        Storage dtype of K, V, q, scores and output (bytes per element ``e``).
    r, k : int
        SparQ's components and positions (``1 <= r <= d``, ``1 <= k <= S``).
    store_k_twice : bool
        SparQ: keep a d-major copy of K so step 1 reads ``r`` contiguous rows of length ``S``;
        costs +50% KV memory and a strided write of each new k (``d`` transactions).
        With one copy, step 1 reads ``r`` scattered elements of each S-major row of K, which
        moves every touched ``transaction_bytes`` segment (:func:`expected_touched_segments`).
    gqa_selection : {"shared", "per_head"}
        SparQ with GQA: one selection per KV head shared by its ``g`` query heads (the
        evaluation code) or one per query head (the public GPU port: step-1 and gather
        traffic ``g`` times). Dense reads each KV head once either way.
    transaction_bytes : int
        Memory transaction granularity ``T`` (profile ``mem_transaction_bytes``).
    index_bytes : int
        Bytes per top-k index (8: ``torch.topk`` returns int64).
    n_layers : int
        Identical attention calls (layers) to add up.
    **paper_kwargs
        Other methods' :func:`transfers` arguments (``page_size``, ``bits``); rejected for
        methods with a byte model.

    Returns
    -------
    Traffic
        Per-step terms; dense has one kernel ``attention``; SparQ has ``step1``, ``topk``
        and ``step3``.

    Notes
    -----
    Per (sequence, KV head), with ``n_sel = 1`` (shared) or ``g`` (per head) selections,
    ``e`` dtype bytes, ``T`` the transaction size:

    - dense: read K and V ``2*S*d*e``; write new k, v ``2*d*e`` (Eq. 3 in bytes); q read and
      output write ``2*g*d*e``. FLOPs ``g*(4*S*d + 5*S)`` (QK, PV, softmax ~5 per score).
    - SparQ step 1: ``n_sel * r * ceil(S*e/T)*T`` (K twice) or
      ``n_sel * S * E[touched segments] * T`` (K once); writes the group's scores
      ``n_sel*S*e`` and reads q ``g*d*e``. FLOPs ``2*S*r*g`` (+ ``S*(g-1)`` summing the group).
    - top-k: reads the scores ``n_sel*S*e`` and writes ``n_sel*k*index_bytes``; priced with
      the top-k throughput, not bandwidth (docs/topk.md).
    - step 3: gathers ``n_sel*2*k`` rows of ``ceil(d*e/T)*T``, reads the indices, reads and
      writes v_mean ``2*d*e``, writes the output ``g*d*e``. FLOPs ``g*(4*k*d + 5*k + 5*S)``
      (exact attention on the k rows; softmax statistics over S for alpha).
    - cache append: ``2*d*e`` plus, with K twice, ``d*T`` (one strided element per row of the
      d-major copy). Charged to step 3's kernel; for dense to the attention kernel.
    """
    S = _check_int("seq_len", seq_len)
    d = _check_int("head_dim", head_dim)
    B = _check_int("batch", batch)
    H = _check_int("n_heads", n_heads)
    Hkv = _check_int("n_kv_heads", n_kv_heads)
    L = _check_int("n_layers", n_layers)
    T = check_int("transaction_bytes", transaction_bytes, lo=1, hi=MAX_TRANSACTION_BYTES)
    if T & (T - 1):
        raise ValueError(f"transaction_bytes: expected a power of two, got {T}")
    ib = check_int("index_bytes", index_bytes, lo=1, hi=MAX_INDEX_BYTES)
    if not isinstance(store_k_twice, (bool, np.bool_)):
        raise TypeError(
            f"store_k_twice: expected a bool, got {type(store_k_twice).__name__} {store_k_twice!r}"
        )
    _check_method(method)
    if H % Hkv:
        raise ValueError(f"n_heads: expected a multiple of n_kv_heads ({Hkv}), got {H}")
    if gqa_selection not in ("shared", "per_head"):
        raise ValueError(f"gqa_selection: expected 'shared' or 'per_head', got {gqa_selection!r}")
    dname, e = dtype_bytes(dtype)
    model = BYTE_MODELS.get(method)
    if model is None and method not in METHODS:
        known = list(METHODS) + [m for m in BYTE_MODELS if m not in METHODS]
        raise ValueError(f"method: expected one of {known}, got {method!r}")
    call = AttentionCall(
        method=method,
        batch=B,
        n_heads=H,
        n_kv_heads=Hkv,
        seq_len=S,
        head_dim=d,
        dtype=dname,
        dtype_bytes=e,
        r=r,
        k=k,
        store_k_twice=store_k_twice,
        gqa_selection=gqa_selection,
        transaction_bytes=T,
        index_bytes=ib,
        n_layers=L,
    )
    if model is None:
        out = _paper_formula_bytes(call, paper_kwargs)
    else:
        if paper_kwargs:
            raise ValueError(
                f"method {method!r} has a byte model and does not use argument(s) "
                f"{sorted(paper_kwargs)}"
            )
        out = model(call)
    steps = tuple(out.steps)
    kernels = tuple(dict.fromkeys(s.kernel for s in steps))
    return Traffic(
        method=method,
        steps=steps,
        kernels=kernels,
        kv_cache_bytes=out.kv_cache_bytes,
        paper_elements=out.paper_elements,
        dtype=dname,
        dtype_bytes=e,
    )
