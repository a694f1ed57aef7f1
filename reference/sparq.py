"""SparQ Attention (Ribar et al., ICML 2024, arXiv 2312.04985): float64 truth and Numba kernel.

Semantics follow the public evaluation code (``llminference/methods/ann_attention.py``), with
the paper's counting of ``k``: ``k`` is the total number of positions kept and
``local_window`` counts the current token. The evaluation code's ``Settings(k=K, local_k=L)``
equals ``k=K + 1, local_window=L + 1`` here (``docs/sparq.md``).

Per (batch, selection group) -- a group is the g query heads of one KV head (default,
``selection="group"``) or a single query head (``selection="head"``) -- the steps of the
paper's Algorithm 1, each one function of the twin below:

1. :func:`components_twin`: ``i1`` = top-r of ``sum_h |q_h|`` (Alg. 1 line 1)
2. :func:`temperature_twin`: ``tau_h`` (L1 coverage by default, Alg. 1 line 3)
3. :func:`approx_logits_twin`: ``s_h = (q_h[i1] . K[:, i1]) / tau_h`` (line 2), -inf where masked
4. :func:`select_twin`: ``i2`` = top-k of the group score, local window forced (line 4)
5. :func:`alpha_twin`: ``alpha_h = sum_{j in i2} softmax(s_h)_j`` (line 5)
6. :func:`masked_mean_twin`: ``v_mean`` = masked mean of V (line 6)
7. :func:`attend_twin`: ``y_h = softmax(q_h . K[i2] / sqrt(d)) V[i2]`` (line 7)
8. :meth:`Precision.mix`: ``out_h = alpha_h y_h + (1 - alpha_h) v_mean`` (line 8)
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from reference._checks import (
    KernelInputs,
    as_bool,
    as_cache_array,
    as_choice,
    as_float_array,
    as_int,
    check_attention_inputs,
    has_nonfinite,
    raise_nonfinite,
)
from reference._config import FASTMATH_CHAIN, njit_parallel, njit_serial, note_first_compile
from reference._plans import find, plannable, query_buffer
from reference._rows import (
    EXP_CHUNK,
    GATHER_AHEAD,
    GATHER_REQUESTS,
    _prefetch,
    attend_positions,
    bits,
    line_elems,
    max_of,
    prefetch_row,
    widen,
)
from reference._selection_args import effective_k_per_bucket
from reference._topk_exact import _buffer_size
from reference._vexp import exp_nonpos_into, exp_nonpos_sum
from reference._workspace import add_plan, max_threads, workspace
from reference.precision import PRECISIONS, TRUTH, Precision
from reference.selection import (
    bucketed_topk_row,
    bucketed_topk_twin,
    topk_buffer_size,
    topk_row,
    topk_row_into,
    topk_row_twin,
    topk_set_into,
)

TEMPERATURES = ("l1", "sqrt_d", "sqrt_r")
GROUP_SCORES = ("logits", "probs")
SELECTIONS = ("group", "head")
IMPLS = ("numba", "twin")
TOPKS = ("exact", "bucketed")

# Codes of the options inside jitted code (index into the tuples above).
TEMP_L1, TEMP_SQRT_D, TEMP_SQRT_R = 0, 1, 2
#: ``num_buckets`` value in :class:`KernelParams` meaning "exact top-k".
EXACT_TOPK = 0


# ---------------------------------------------------------------------------------------------
# Parameters: validated once, then passed around as one object.
# ---------------------------------------------------------------------------------------------


class KernelParams(NamedTuple):
    """The scalars of :class:`SparqParams` as the jitted kernels take them."""

    r: int
    k: int
    local_window: int
    temperature: int  # TEMP_L1, TEMP_SQRT_D or TEMP_SQRT_R
    probs: bool  # group_score == "probs"
    reallocate: bool
    per: int  # query heads per selection group (g with selection="group", 1 with "head")
    num_buckets: int  # EXACT_TOPK (0) for the exact top-k
    k_per_bucket: int
    interleaved: bool
    phase_limit: int = 99  # run steps up to this phase only (benchmark breakdown; 99 = all)
    ordered: bool = True  # write ``positions`` by score (False: in index order, no rank sort)

    def packed(self) -> np.ndarray:
        """The fields as one int64 array (bools as 0/1), the form the parallel kernel takes:
        Numba types an array argument in C, a NamedTuple field by field in Python (on a
        cache-cold call, tens of microseconds). :func:`_unpack_params` inverts it."""
        return np.array(self, dtype=np.int64)


@njit_serial
def _unpack_params(a):
    """:class:`KernelParams` from :meth:`KernelParams.packed` (jitted code)."""
    return KernelParams(
        a[0], a[1], a[2], a[3], a[4] != 0, a[5] != 0, a[6], a[7], a[8], a[9] != 0, a[10],
        a[11] != 0,
    )  # fmt: skip


@dataclass(frozen=True)
class SparqParams:
    """SparQ's parameters, validated (see :func:`sparq_attention` for their meaning)."""

    r: int
    k: int
    local_window: int = 0
    reallocate: bool = True
    temperature: str = "l1"
    group_score: str = "logits"
    selection: str = "group"
    topk: str = "exact"
    num_buckets: int | None = None
    k_per_bucket: int = 1
    interleaved: bool = True

    @classmethod
    def build(
        cls,
        *,
        d: int,
        r: int,
        k: int,
        local_window: int = 0,
        reallocate: bool = True,
        temperature: str = "l1",
        group_score: str = "logits",
        selection: str = "group",
        topk: str = "exact",
        num_buckets: int | None = None,
        k_per_bucket: int = 1,
        interleaved: bool = True,
    ) -> SparqParams:
        """Validate every option for head dimension ``d``; errors name the argument.

        Valid combinations are cached (keyed by value and type, so ``True`` is not ``1``):
        validating again on every cache-cold call cost tens of microseconds."""
        args = (cls, d, r, k, local_window, reallocate, temperature, group_score, selection,
                topk, num_buckets, k_per_bucket, interleaved)  # fmt: skip
        try:
            hash(args)
        except Exception:  # an argument that does not hash: validated (and rejected) below
            return _build_params(*args)
        return _build_params_cached(*args)

    @property
    def bucketed(self) -> tuple[int, int, bool] | None:
        """``(num_buckets, k_per_bucket, interleaved)`` for the bucketed top-k, else None."""
        if self.topk != "bucketed":
            return None
        return (self.num_buckets, self.k_per_bucket, self.interleaved)

    def heads_per_group(self, g: int) -> int:
        """Query heads sharing one selection: ``g`` (group selection) or 1 (per head)."""
        return g if self.selection == "group" else 1

    def kernel(self, g: int, seq_len: int) -> KernelParams:
        """The scalars for the jitted kernels, for GQA group size ``g`` and ``S = seq_len``.

        Counts beyond ``S`` are clamped to ``S`` (``k``, ``local_window``, ``num_buckets``;
        no row has more valid positions) and ``k_per_bucket`` to
        :func:`reference._selection_args.effective_k_per_bucket`: the same selection, and
        every value then fits the kernels' int64 arithmetic whatever the caller passed."""
        k = positions_columns(self.k, seq_len)
        return KernelParams(
            r=self.r,
            k=k,
            local_window=min(self.local_window, seq_len),
            temperature=TEMPERATURES.index(self.temperature),
            probs=self.group_score == "probs",
            reallocate=self.reallocate,
            per=self.heads_per_group(g),
            num_buckets=min(self.num_buckets, seq_len) if self.topk == "bucketed" else EXACT_TOPK,
            k_per_bucket=effective_k_per_bucket(self.k_per_bucket, k, seq_len),
            interleaved=self.interleaved,
        )


def _build_params(
    cls, d, r, k, local_window, reallocate, temperature, group_score, selection, topk,
    num_buckets, k_per_bucket, interleaved,
) -> SparqParams:  # fmt: skip
    """The body of :meth:`SparqParams.build`."""
    r = as_int("r", r, lo=1, hi=d, hi_name="the head dim d")
    k = as_int("k", k, lo=1)
    local_window = as_int("local_window", local_window, lo=0, hi=k, hi_name="k")
    as_bool("reallocate", reallocate)
    as_choice("temperature", temperature, TEMPERATURES)
    as_choice("group_score", group_score, GROUP_SCORES)
    as_choice("selection", selection, SELECTIONS)
    as_choice("topk", topk, TOPKS)
    if topk == "bucketed":
        if num_buckets is None:
            raise ValueError('num_buckets: required with topk="bucketed" (e.g. k - local_window)')
        num_buckets = as_int("num_buckets", num_buckets, lo=1)
        k_per_bucket = as_int("k_per_bucket", k_per_bucket, lo=1)
        if num_buckets * k_per_bucket < k - local_window:
            raise ValueError(
                f"num_buckets * k_per_bucket: expected >= k - local_window ="
                f" {k - local_window} (the non-local positions to select), got"
                f" {num_buckets} * {k_per_bucket} = {num_buckets * k_per_bucket}"
            )
        as_bool("interleaved", interleaved)
    elif num_buckets is not None or k_per_bucket != 1 or interleaved is not True:
        raise ValueError(
            f"num_buckets, k_per_bucket, interleaved: only used with topk='bucketed', got"
            f" topk={topk!r} with num_buckets={num_buckets!r},"
            f" k_per_bucket={k_per_bucket!r}, interleaved={interleaved!r}"
        )
    return cls(r, k, local_window, bool(reallocate), temperature, group_score, selection,
               topk, num_buckets, k_per_bucket, bool(interleaved))  # fmt: skip


#: :func:`_build_params` for hashable arguments, keyed by value and type.
_build_params_cached = functools.lru_cache(maxsize=256, typed=True)(_build_params)


def positions_columns(k: int, seq_len: int) -> int:
    """Columns of the ``positions`` step: ``min(k, S)``.

    At most ``S`` positions can be kept, so a larger ``k`` (any size is accepted) changes
    nothing but would make the ``(B, G, k)`` array grow without bound; the same rule holds in
    :func:`sparq_attention`, its twin, the golden files and the checker."""
    return min(k, seq_len)


@dataclass(frozen=True)
class SparqSteps:
    """Every intermediate of one SparQ decode step (all float64 / int64).

    ``G`` below is ``Hkv`` with ``selection="group"`` and ``H`` with ``selection="head"``.

    Attributes
    ----------
    out : (B, H, d) output.
    components : (B, G, r) i1, ordered by score (sum of |q|) descending, ties to lower index.
    approx_logits : (B, H, S) approximate logits ``s_h`` (un-forced); -inf at masked positions.
    positions : (B, G, k) i2, ordered by selection score descending (forced local window first,
        since its score is +inf), ties to lower index; -1 in unused slots.
    alpha : (B, H) softmax mass of the approximate logits on i2 (1.0 if ``reallocate=False``).
    v_mean : (B, Hkv, d) mean of V over valid positions (or the caller's ``v_mean``).
    y : (B, H, d) exact attention over i2 alone (renormalised), before reallocation.
    temperature : (B, H) tau_h used for the approximate logits.
    """

    out: np.ndarray
    components: np.ndarray
    approx_logits: np.ndarray
    positions: np.ndarray
    alpha: np.ndarray
    v_mean: np.ndarray
    y: np.ndarray
    temperature: np.ndarray


# ---------------------------------------------------------------------------------------------
# Float64 NumPy twin: the ground truth, one function per step of Algorithm 1.
# ``pr`` says where to round: for the truth (float64) ``pr.store`` is the identity and
# ``pr.acc`` float64; an emulated precision stores in its dtype and accumulates in float32.
# ---------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    w = np.exp(x - x.max())
    return w / w.sum()


def components_twin(qg: np.ndarray, r: int, pr: Precision = TRUTH) -> np.ndarray:
    """Step 1: the ``r`` components of largest ``sum_h |q_h|`` over the group ``qg`` (G, d)."""
    return topk_row_twin(pr.store(np.abs(qg).sum(axis=0)), r)


def temperature_twin(qh: np.ndarray, i1: np.ndarray, mode: str) -> float:
    """Step 2: ``tau_h`` of one query head ``qh`` (d,) for components ``i1``."""
    d = qh.shape[0]
    if mode == "sqrt_d":
        return math.sqrt(d)
    if mode == "sqrt_r":
        return math.sqrt(i1.shape[0])
    total = np.abs(qh).sum()
    coverage = np.abs(qh[i1]).sum() / total if total > 0 else 1.0
    return math.sqrt(d * coverage)


def approx_logits_twin(qg, K, valid, i1, tau, pr: Precision = TRUTH) -> np.ndarray:
    """Step 3: ``s`` (G, S) = ``q_h[i1] . K[j, i1] / tau_h`` at valid ``j``, -inf elsewhere.

    A head whose ``q_h`` is zero on every kept component (``tau_h = 0``) gets logits 0."""
    s = np.full((qg.shape[0], K.shape[0]), -np.inf, dtype=pr.acc)
    Ks = K[np.ix_(valid, i1)]
    for h in range(qg.shape[0]):
        s[h, valid] = pr.scaled_dot(Ks, qg[h, i1], tau[h]) if tau[h] > 0 else 0.0
    return s


def selection_score_twin(s_valid: np.ndarray, group_score: str) -> np.ndarray:
    """Step 4's score over the compacted valid positions: the sum over the group of the
    approximate logits (``"logits"``) or of their softmax probabilities (``"probs"``)."""
    if group_score == "logits":
        return s_valid.sum(axis=0)
    return np.array([_softmax(row) for row in s_valid]).sum(axis=0)


def select_twin(score: np.ndarray, k: int, local_window: int, bucketed=None) -> np.ndarray:
    """Step 4: indices into the compacted valid positions (``score`` (n,)) of the ``min(k, n)``
    kept ones: the last ``local_window`` (forced, score +inf) first, then the top-k.

    ``bucketed`` is None (exact) or ``(num_buckets, k_per_bucket, interleaved)``: then the
    other ``k - local_window`` positions are a bucketed top-k of the non-local prefix."""
    n = score.shape[0]
    n_local = min(local_window, n)
    n_sel = min(k, n)
    score = score.copy()
    if n_local > 0:
        score[n - n_local :] = np.inf  # the most recent valid positions
    n_rest = n - n_local
    if bucketed is None or n_sel - n_local <= 0 or n_sel >= n:
        return topk_row_twin(score, n_sel)
    b, kb, interleaved = bucketed
    _, rest = bucketed_topk_twin(
        score[:n_rest], n_sel - n_local, num_buckets=min(b, n_rest), k_per_bucket=kb,
        interleaved=interleaved,
    )  # fmt: skip
    return np.concatenate([np.arange(n_rest, n), rest]).astype(np.int64)


def alpha_twin(s_valid: np.ndarray, picked: np.ndarray, pr: Precision = TRUTH) -> np.ndarray:
    """Step 5: per head, the softmax mass of the approximate logits ``s_valid`` (G, n) on the
    kept positions (``picked``, bool (n,))."""
    return pr.store([pr.mass(_softmax(row), picked) for row in s_valid])


def masked_mean_twin(v_cache: np.ndarray, mask: np.ndarray, pr: Precision = TRUTH) -> np.ndarray:
    """Step 6: mean of V over the valid positions: (B, Hkv, S, d), (B, S) -> (B, Hkv, d)."""
    valid = mask[:, None, :, None]
    count = valid.sum(axis=2).astype(pr.acc)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.where(valid, np.asarray(v_cache).astype(pr.acc), 0).sum(axis=2)
        mean = total / count
    if pr.name == "float64" and not np.isfinite(mean).all():
        # The float64 sum went beyond the range although the mean may not: sum V * 2**-64
        # (exact scaling) and scale the mean back. A lower precision keeps its overflow: a
        # naive implementation in that dtype overflows there too.
        scaled = np.where(valid, np.asarray(v_cache) * 2.0**-64, 0).sum(axis=2)
        with np.errstate(over="ignore"):
            mean = np.where(np.isfinite(mean), mean, (scaled / count) * 2.0**64)
    return pr.store(mean).astype(np.float64)


def attend_twin(qh, K, V, chosen, pr: Precision = TRUTH) -> np.ndarray:
    """Step 7: ``y_h`` = exact attention of ``qh`` (d,) over the rows ``chosen`` of K, V."""
    logits = pr.scaled_dot(K[chosen], qh, math.sqrt(qh.shape[0]))
    return pr.store(_softmax(logits) @ V[chosen])


class _GroupSteps(NamedTuple):
    out: np.ndarray  # (G, d)
    components: np.ndarray  # (r,)
    approx_logits: np.ndarray  # (G, S)
    positions: np.ndarray  # (k,)
    alpha: np.ndarray  # (G,)
    y: np.ndarray  # (G, d)
    temperature: np.ndarray  # (G,)


def sparq_group_twin(
    qg, K, V, valid, v_mean, p: SparqParams, pr: Precision = TRUTH, inject_i1=None,
    inject_chosen=None,
) -> _GroupSteps:  # fmt: skip
    """Algorithm 1 for one selection group: ``qg`` (G, d) query rows, ``K``, ``V`` (S, d),
    ``valid`` the valid positions in order, ``v_mean`` (d,).

    ``inject_i1`` / ``inject_chosen`` replace the outcome of step 1 / step 4 (index
    injection, so that later steps can be judged on their own)."""
    qg, K, V = (x.astype(pr.acc, copy=False) for x in (qg, K, V))
    i1 = components_twin(qg, p.r, pr) if inject_i1 is None else inject_i1  # step 1
    tau = pr.store([temperature_twin(qh, i1, p.temperature) for qh in qg])  # step 2
    s = approx_logits_twin(qg, K, valid, i1, tau, pr)  # step 3
    if inject_chosen is None:  # step 4
        score = selection_score_twin(s[:, valid], p.group_score)
        chosen = valid[select_twin(score, p.k, p.local_window, p.bucketed)]
    else:
        chosen = inject_chosen
    positions = np.full(positions_columns(p.k, K.shape[0]), -1, dtype=np.int64)
    positions[: chosen.shape[0]] = chosen
    if p.reallocate:  # step 5
        alpha = alpha_twin(s[:, valid], np.isin(valid, chosen), pr)
    else:
        alpha = np.ones(qg.shape[0], dtype=pr.acc)
    y = np.stack([attend_twin(qh, K, V, chosen, pr) for qh in qg])  # step 7
    out = pr.mix(alpha, y, v_mean) if p.reallocate else y  # step 8
    return _GroupSteps(out, i1, s, positions, alpha, y, tau)


def sparq_attention_twin(
    q,
    k_cache,
    v_cache,
    *,
    mask=None,
    v_mean=None,
    precision: str | Precision = "float64",
    inject_components=None,
    inject_positions=None,
    **options,
) -> SparqSteps:
    """Float64 NumPy twin of :func:`sparq_attention`; always returns :class:`SparqSteps`.

    ``options`` are :func:`sparq_attention`'s SparQ parameters (``r``, ``k``,
    ``local_window``, ``reallocate``, ``temperature``, ``group_score``, ``selection``,
    ``topk``, ``num_buckets``, ``k_per_bucket``, ``interleaved``).

    ``inject_components`` (B, G, r) and ``inject_positions`` (B, G, k) (-1 in unused slots)
    replace the outcomes of steps 1 and 4 with another implementation's, so that the later
    steps can be judged on their own (index injection, as Quest's tests do; used by
    :mod:`reference.validation`). Each row must hold distinct in-range components and
    distinct valid positions (``min(k, valid count)`` of them, then -1s).

    ``precision="float64"`` (default) is the ground truth. ``"float32"``, ``"float16"`` or
    ``"bfloat16"`` emulate a naive implementation in that dtype (inputs and stored tensors
    rounded to it, accumulation and softmax in float32; ``reference/precision.py``): its
    deviation from the truth calibrates what error a kernel in that dtype may make. The
    returned arrays are float64 holding values of the emulated dtype. A
    :class:`reference.precision.Precision` may be passed instead of a name (e.g. with
    ``reorder=True``, the same computation by another rounding route).
    """
    if isinstance(precision, Precision):
        pr = precision
    else:
        pr = Precision(as_choice("precision", precision, PRECISIONS))
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    p = SparqParams.build(d=d, **options)
    v_mean = _check_v_mean(v_mean, (B, Hkv, d))
    valid4 = mask[:, None, :, None]
    q = pr.store_input("q", q)
    K = pr.store_input("k_cache", K, valid4)
    V = pr.store_input("v_cache", V, valid4)
    if v_mean is None:
        v_mean = masked_mean_twin(V, mask, pr)
    else:
        v_mean = pr.store(v_mean).astype(np.float64)
    g = H // Hkv
    per = p.heads_per_group(g)
    G = H // per
    inj_c = _check_injected_components(inject_components, (B, G, p.r), d)
    kcols = positions_columns(p.k, S)
    inj_p = _check_injected_positions(inject_positions, (B, G, kcols), mask)
    out = np.empty((B, H, d))
    y = np.empty((B, H, d))
    comps = np.empty((B, G, p.r), dtype=np.int64)
    s_all = np.empty((B, H, S))
    pos = np.empty((B, G, kcols), dtype=np.int64)
    alpha = np.empty((B, H))
    tau = np.empty((B, H))
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for grp in range(G):
            heads = slice(grp * per, (grp + 1) * per)
            kv = (grp * per) // g
            st = sparq_group_twin(
                q[b, heads], K[b, kv], V[b, kv], valid, v_mean[b, kv], p, pr,
                None if inj_c is None else inj_c[b, grp],
                None if inj_p is None else inj_p[b, grp][inj_p[b, grp] >= 0],
            )  # fmt: skip
            out[b, heads], comps[b, grp], s_all[b, heads] = st.out, st.components, st.approx_logits
            pos[b, grp], alpha[b, heads] = st.positions, st.alpha
            y[b, heads], tau[b, heads] = st.y, st.temperature
    steps = SparqSteps(out, comps, s_all, pos, alpha, v_mean, y, tau)
    with np.errstate(over="ignore", invalid="ignore"):
        _finite_result(steps, q, K, mask, pr.name)
    return steps


def _check_v_mean(v_mean, shape):
    """A caller-supplied ``v_mean`` (B, Hkv, d) as float64, or None."""
    if v_mean is None:
        return None
    v_mean = as_float_array("v_mean", v_mean, 3)
    if v_mean.shape != shape:
        raise ValueError(f"v_mean: expected shape (B, Hkv, d) = {shape}, got {v_mean.shape}")
    return v_mean


def _as_index_array(name, x, shape):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {x.shape}")
    return x.astype(np.int64)


# One set of rules for injected indices: the bool predicates below are used as they are by the
# golden-case checker (reference/validation.py, which injects only what passes) and by the
# raising checks of ``inject_components`` / ``inject_positions``.


def _components_in_range(x: np.ndarray, d: int) -> bool:
    return not ((x < 0) | (x >= d)).any()


def _components_distinct(x: np.ndarray) -> bool:
    return not (np.diff(np.sort(x, axis=-1), axis=-1) == 0).any()


def _positions_layout_ok(row: np.ndarray, n: int, seq_len: int) -> bool:
    """``n`` positions in ``[0, seq_len)`` then -1s."""
    used = row[:n]
    return not ((row[n:] != -1).any() or (used < 0).any() or (used >= seq_len).any())


def _positions_valid_distinct(used: np.ndarray, mask_row: np.ndarray, n: int) -> bool:
    """``used`` (in range) are ``n`` distinct positions valid under ``mask_row``."""
    return bool(mask_row[used].all()) and np.unique(used).size == n


def _components_ok(c, d) -> bool:
    """Whether ``c`` (..., r) is an integer array of distinct components in ``[0, d)``."""
    c = np.asarray(c)
    return c.dtype.kind in "iu" and _components_in_range(c, d) and _components_distinct(c)


def _positions_ok(pos, mask, k) -> bool:
    """Whether ``pos`` (B, G, k) holds, per row, ``min(k, valid)`` distinct valid positions
    then -1s."""
    pos = np.asarray(pos)
    if pos.dtype.kind not in "iu":
        return False
    B, G, _ = pos.shape
    for b in range(B):
        n = min(k, int(mask[b].sum()))
        for g in range(G):
            if not _positions_layout_ok(pos[b, g], n, mask.shape[1]):
                return False
            if not _positions_valid_distinct(pos[b, g, :n], mask[b], n):
                return False
    return True


def _check_injected_components(x, shape, d):
    if x is None:
        return None
    x = _as_index_array("inject_components", x, shape)
    if not _components_in_range(x, d):
        raise ValueError(
            f"inject_components: expected indices in [0, {d}), got {x.min()}..{x.max()}"
        )
    if not _components_distinct(x):
        raise ValueError("inject_components: expected distinct components in every row")
    return x


def _check_injected_positions(x, shape, mask):
    if x is None:
        return None
    x = _as_index_array("inject_positions", x, shape)
    B, G, k = shape
    for b in range(B):
        nv = int(mask[b].sum())
        for grp in range(G):
            row = x[b, grp]
            n = min(k, nv)
            used = row[:n]
            if not _positions_layout_ok(row, n, mask.shape[1]):
                raise ValueError(
                    f"inject_positions[{b}, {grp}]: expected {n} positions then -1s, got"
                    f" {row.tolist()}"
                )
            if not _positions_valid_distinct(used, mask[b], n):
                raise ValueError(
                    f"inject_positions[{b}, {grp}]: expected distinct valid positions, got"
                    f" {used.tolist()}"
                )
    return x


# ---------------------------------------------------------------------------------------------
# Numba kernel: prange over (batch, selection group); serial row function per group.
# ---------------------------------------------------------------------------------------------


def _flat_sizes(B: int, H: int, Hkv: int, G: int, S: int, d: int, r: int, kcols: int):
    """Elements ``(float64, int64)`` of the kernel's two flat output buffers
    (:func:`_carve_outputs`); ``S`` = 0 leaves out the approximate logits."""
    return B * H * (d + 2 + S), B * G * (r + kcols + 1) + B * Hkv


@njit_serial(inline="always")
def _carve_outputs(fout, iout, B, H, G, S, d, r, kcols, Hkv):
    """Views of the flat outputs: from ``fout`` (float64) ``y`` (B, H, d), ``alpha`` (B, H),
    ``temperature`` (B, H), ``approx_logits`` (B, H, S); from ``iout`` (int64)
    ``components`` (B, G, r), ``positions`` (B, G, kcols), ``status`` (B, G) and ``kt_bad``
    (B * Hkv,). One buffer of each type instead of eight arrays: on a cache-cold call every
    NumPy allocation and every array argument of the kernel cost microseconds."""
    a = B * H * d
    y = fout[:a].reshape((B, H, d))
    alpha = fout[a : a + B * H].reshape((B, H))
    temperature = fout[a + B * H : a + 2 * B * H].reshape((B, H))
    a += 2 * B * H
    approx_logits = fout[a : a + B * H * S].reshape((B, H, S))
    c = B * G * r
    components = iout[:c].reshape((B, G, r))
    positions = iout[c : c + B * G * kcols].reshape((B, G, kcols))
    c += B * G * kcols
    status = iout[c : c + B * G].reshape((B, G))
    kt_bad = iout[c + B * G : c + B * G + B * Hkv]
    return y, alpha, temperature, approx_logits, components, positions, status, kt_bad


#: Positions per block of step 3 when the key columns are gathered from the S-major K (K
#: stored once; the ``r`` x block float64 columns and the 4 x block accumulators stay in
#: L1/L2). With one head per sweep, step 3 of one KV head (S = 32768, r = 16, g = 4, float32)
#: took 0.41-0.43 ms at 128 and 256, 0.55-0.56 ms at 512 and 1024; with four heads per sweep,
#: 128, 256 and 512 were within this host's noise of each other. At 1024, steps 1-3 of 8 KV
#: heads (two threads, cache-cold) took 4.6 ms against 3.4 ms at 256.
_STEP3_BLOCK = 256
#: Positions per block when the columns are read in place from the transposed copy (K
#: stored twice): the 4 x block float64 accumulators (128 KiB) stay in L2.
_STEP3_BLOCK_KT = 4096
#: With K stored twice, each sweep runs in chunks of ``_STEP3_CHUNK`` positions and first
#: prefetches the lines of its (up to four) rows ``_STEP3_AHEAD`` positions on, so that the
#: reads are spread evenly through the arithmetic. On the development host (8 KV heads,
#: S = 32768, r = 16, float32, two threads, cache-cold, side by side in one process), step 3
#: took 0.57 ms (in cache: 0.47) this way, against 0.81 ms (0.50) when each block of 1024
#: first prefetched the next block's segments of all ``r`` rows in one burst (a burst fills
#: the core's miss buffers, and the arithmetic waits behind it), 0.59 ms at 1024 ahead and
#: 0.58 ms at blocks of 2048; a plain read of the same ``r`` rows, interleaved the same way,
#: took 0.53 ms. In the SparQ kernel (cold, with the rest of the call), steps 1-3 went from
#: 0.73-0.81 to 0.52 ms.
_STEP3_CHUNK = 64
_STEP3_AHEAD = 512
#: Rows ahead whose lines step 3 prefetches when it gathers ``r`` columns of the S-major K
#: (K stored once). On the development host (8 KV heads, S = 32768, two threads), steps 1-3
#: took 2.9 ms with it and 5.0 ms without for float32 keys; float16 keys ran at about the
#: same speed either way.
_GATHER_AHEAD = 16

#: Padding of the rows of step 3's accumulators (float64 elements). Rows of 4096 float64
#: lie 32 KiB apart, a multiple of 4 KiB: the four heads' accumulators of a position then
#: share one L1 set (with the four key columns of a sweep, read at 128 KiB strides, in
#: another) and each store to one row sits 4 KiB-aliased with the loads of the next. With
#: 136 (rows 17 lines apart modulo 4 KiB) step 3 of 8 KV heads (S = 32768, float32, K
#: stored twice, two threads, cache-cold) took 0.955 of its time and the whole call 0.93-1.00
#: (same-round, Zen 4 development host); 8 elements (one line) measured no gain.
_ACC_PAD = 136

#: LLVM flags of the step-3 sweeps: contraction only, no reassociation, so that every
#: approximate logit is one FMA chain over the kept components in the written order
#: (whatever the vectoriser does with the loop over positions).
_CHAIN = set(FASTMATH_CHAIN)

# The sweeps below add the components of a logit in groups of four, in the order u + 1, u,
# u + 2, u + 3 within a group (then the leftover components one by one): the order the
# compiled single-head sweep of earlier versions had, kept so that the logits did not change.
# Offsets and counts are unsigned (np.uint64): an index Numba cannot prove non-negative
# gets wrap-around code, which stops the loops vectorising. Rows are taken inside the
# sweeps (no array views built per call in the caller's loop).


@njit_serial(fastmath=_CHAIN, inline="always")
def _sweep_h4c4(qs, h, u, B2, c0, c1, c2, c3, j0, n, acc, a_off):
    """``acc[i, a_off + jj] += sum_t qs[h + i, u + t] * B2[c_t, j0 + jj]`` for heads
    ``h..h+3``, ``jj < n``: each key column is loaded (and widened) once for the four heads."""
    q00, q01, q02, q03 = qs[h, u], qs[h, u + 1], qs[h, u + 2], qs[h, u + 3]
    q10, q11, q12, q13 = qs[h + 1, u], qs[h + 1, u + 1], qs[h + 1, u + 2], qs[h + 1, u + 3]
    q20, q21, q22, q23 = qs[h + 2, u], qs[h + 2, u + 1], qs[h + 2, u + 2], qs[h + 2, u + 3]
    q30, q31, q32, q33 = qs[h + 3, u], qs[h + 3, u + 1], qs[h + 3, u + 2], qs[h + 3, u + 3]
    b0, b1, b2, b3 = B2[c0], B2[c1], B2[c2], B2[c3]
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for jj in range(n):
        j = j0 + jj
        t = a_off + jj
        e0, e1, e2, e3 = widen(b0[j]), widen(b1[j]), widen(b2[j]), widen(b3[j])
        x = a0[t]
        x = x + q01 * e1
        x = x + q00 * e0
        x = x + q02 * e2
        a0[t] = x + q03 * e3
        x = a1[t]
        x = x + q11 * e1
        x = x + q10 * e0
        x = x + q12 * e2
        a1[t] = x + q13 * e3
        x = a2[t]
        x = x + q21 * e1
        x = x + q20 * e0
        x = x + q22 * e2
        a2[t] = x + q23 * e3
        x = a3[t]
        x = x + q31 * e1
        x = x + q30 * e0
        x = x + q32 * e2
        a3[t] = x + q33 * e3


@njit_serial(fastmath=_CHAIN, inline="always")
def _sweep_h4c1(qs, h, u, B2, c0, j0, n, acc, a_off):
    """One leftover component ``u`` for heads ``h..h+3``."""
    q0, q1, q2, q3 = qs[h, u], qs[h + 1, u], qs[h + 2, u], qs[h + 3, u]
    b0 = B2[c0]
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for jj in range(n):
        t = a_off + jj
        e0 = widen(b0[j0 + jj])
        a0[t] = a0[t] + q0 * e0
        a1[t] = a1[t] + q1 * e0
        a2[t] = a2[t] + q2 * e0
        a3[t] = a3[t] + q3 * e0


@njit_serial(fastmath=_CHAIN, inline="always")
def _sweep_h1c4(qs, h, u, B2, c0, c1, c2, c3, j0, n, a0, a_off):
    """Components ``u..u+3`` for the single head ``h`` (heads left after groups of four)."""
    q0, q1, q2, q3 = qs[h, u], qs[h, u + 1], qs[h, u + 2], qs[h, u + 3]
    b0, b1, b2, b3 = B2[c0], B2[c1], B2[c2], B2[c3]
    for jj in range(n):
        j = j0 + jj
        t = a_off + jj
        x = a0[t]
        x = x + q1 * widen(b1[j])
        x = x + q0 * widen(b0[j])
        x = x + q2 * widen(b2[j])
        a0[t] = x + q3 * widen(b3[j])


@njit_serial(fastmath=_CHAIN, inline="always")
def _sweep_h1c1(qs, h, u, B2, c0, j0, n, a0, a_off):
    """One leftover component ``u`` for the single head ``h``."""
    qv = qs[h, u]
    b0 = B2[c0]
    for jj in range(n):
        t = a_off + jj
        a0[t] = a0[t] + qv * widen(b0[j0 + jj])


@njit_serial(fastmath=_CHAIN, inline="always")
def _sweep(qs, h, u, nh, four, B2, c0, c1, c2, c3, j0, n, acc, a_off):
    """The sweep of components ``u..u+3`` (``four``) or ``u`` for heads ``h..h+3`` (``nh``
    4) or ``h``: positions ``j0 .. j0 + n`` of ``B2``'s rows ``c0..c3`` (``c0``) into
    ``acc[:, a_off:]``."""
    if nh == 4 and four:
        _sweep_h4c4(qs, h, u, B2, c0, c1, c2, c3, j0, n, acc, a_off)
    elif nh == 4:
        _sweep_h4c1(qs, h, u, B2, c0, j0, n, acc, a_off)
    elif four:
        _sweep_h1c4(qs, h, u, B2, c0, c1, c2, c3, j0, n, acc[0], a_off)
    else:
        _sweep_h1c1(qs, h, u, B2, c0, j0, n, acc[0], a_off)


@njit_serial(inline="always")
def _prefetch_chunk(B2, c0, c1, c2, c3, four, j):
    """Prefetch the lines of rows ``c0`` (and ``c1..c3`` if ``four``) of ``B2`` that hold
    positions ``j + _STEP3_AHEAD`` onwards, one chunk's worth (clipped to the row)."""
    last = B2.shape[1] - 1
    jp = np.int64(j) + _STEP3_AHEAD
    for pl in range(0, _STEP3_CHUNK, line_elems(B2)):
        jq = min(jp + pl, last)
        _prefetch(B2, c0, jq)
        if four:
            _prefetch(B2, c1, jq)
            _prefetch(B2, c2, jq)
            _prefetch(B2, c3, jq)


@njit_serial(fastmath=_CHAIN)
def _sweep_prefetching(qs, h, u, nh, four, B2, c0, c1, c2, c3, j0, n, acc):
    """:func:`_sweep` over ``n`` positions from ``j0`` of the transposed keys ``B2`` (d, S),
    chunk by chunk (:data:`_STEP3_CHUNK`): each chunk first prefetches the lines of its rows
    :data:`_STEP3_AHEAD` positions on (clipped to the row), then sweeps with a constant
    count (which the vectoriser unrolls). The sums, and so every bit, are those of one sweep
    over all ``n``."""
    chunk = np.uint64(_STEP3_CHUNK)
    nch = n // chunk
    # One loop per sweep shape (a shape test inside the loop kept the sweeps from being
    # unrolled for the constant count: step 3 of 8 KV heads in cache 0.78 -> 0.43 ms)
    if nh == 4 and four:
        for ci in range(nch):
            jb = ci * chunk
            _prefetch_chunk(B2, c0, c1, c2, c3, four, j0 + jb)
            _sweep_h4c4(qs, h, u, B2, c0, c1, c2, c3, j0 + jb, chunk, acc, jb)
    elif nh == 4:
        for ci in range(nch):
            jb = ci * chunk
            _prefetch_chunk(B2, c0, c1, c2, c3, four, j0 + jb)
            _sweep_h4c1(qs, h, u, B2, c0, j0 + jb, chunk, acc, jb)
    elif four:
        for ci in range(nch):
            jb = ci * chunk
            _prefetch_chunk(B2, c0, c1, c2, c3, four, j0 + jb)
            _sweep_h1c4(qs, h, u, B2, c0, c1, c2, c3, j0 + jb, chunk, acc[0], jb)
    else:
        for ci in range(nch):
            jb = ci * chunk
            _prefetch_chunk(B2, c0, c1, c2, c3, four, j0 + jb)
            _sweep_h1c1(qs, h, u, B2, c0, j0 + jb, chunk, acc[0], jb)
    jb = nch * chunk
    _sweep(qs, h, u, nh, four, B2, c0, c1, c2, c3, j0 + jb, n - jb, acc, jb)


@njit_serial
def _mask_block(acc, sh, maskrow, j0, n):
    """``sh[j0 + jj] = acc[jj]`` at valid positions and -inf at masked ones, ``jj < n``;
    returns NaN iff a valid logit is not finite, else 0 (branch-free, vectorised; the max is
    a separate pass, :func:`max_of`: a max taken in this loop stops it vectorising)."""
    chk = 0.0
    for jj in range(n):
        j = j0 + jj
        ok = maskrow[j]
        v = acc[jj]
        sh[j] = v if ok else -np.inf
        chk += v * 0.0 if ok else 0.0
    return chk


@njit_serial(fastmath=_CHAIN)
def _finish_block4(acc, s, h, j0, n, score, first):
    """A block of four heads' logits done, for a row with no masked position:
    ``s[h + i, j0 + jj] = acc[i, jj]`` and the group score of logits ``score[j0 + jj] =
    (((t + s_h) + s_h+1) + s_h+2) + s_h+3``, ``t`` = 0.0 for the first four heads (``first``)
    and the score so far after them: the heads added in order, the adds of step 4's sum
    (contraction only: no reassociation may reorder them)."""
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    s0, s1, s2, s3 = s[h], s[h + 1], s[h + 2], s[h + 3]
    for jj in range(n):
        j = j0 + jj
        v0, v1, v2, v3 = a0[jj], a1[jj], a2[jj], a3[jj]
        s0[j] = v0
        s1[j] = v1
        s2[j] = v2
        s3[j] = v3
        t = 0.0 if first else score[j]
        t = t + v0
        t = t + v1
        t = t + v2
        score[j] = t + v3


@njit_serial
def _finite_probe(x):
    """NaN iff some element of the 1-D float64 ``x`` is not finite, else 0 (a vectorised read:
    ``sum(x * 0)``)."""
    chk = 0.0
    for i in range(x.shape[0]):
        chk += x[i] * 0.0
    return chk


#: Positions per segment of step 3's softmax normalisers (a multiple of both step-3
#: blocks): the segments, and so the sums' bits, are the same with K once or twice.
NORM_SEG = 4096
# (a segment must end on a block boundary of both routes, or its end would be missed)
assert NORM_SEG % _STEP3_BLOCK == 0 and NORM_SEG % _STEP3_BLOCK_KT == 0


@njit_serial
def _normalise_segment(s, smax, ssum, mprev, j0, j1):
    """Add ``exp(s[h, j] - smax[h])`` for ``j0 <= j < j1`` to ``ssum[h]`` (each head with a
    valid position so far), ``smax`` the running max up to ``j1``: the sum so far is first
    rescaled by ``exp(mprev[h] - smax[h])`` if the max rose since the last segment (an online
    softmax sum), then ``mprev = smax``. The segment's exps are summed as they are made
    (:func:`reference._vexp.exp_nonpos_sum`: arguments at most 0), then added to the sum so
    far."""
    for h in range(s.shape[0]):
        m_new = smax[h]
        if m_new == -np.inf:  # no valid position yet (masked: exp(-inf) = 0 adds nothing)
            continue
        tot = ssum[h]
        if m_new > mprev[h] and tot != 0.0:
            tot *= math.exp(mprev[h] - m_new)
        ssum[h] = tot + exp_nonpos_sum(s[h, j0:j1], m_new)
        mprev[h] = m_new


@njit_serial
def _approx_logits_row(qs, K, KT, has_kt, comps, maskrow, s, smax, score, gsum, ssum, norm):
    """Step 3: ``s[h, j] = sum_u qs[h, u] K[j, comps[u]]`` at valid ``j``, -inf at masked
    ``j``, ``qs`` (G, r) the kept query components divided by the temperature (Alg. 1 line
    2: ``q[i1] / tau``; 0 for a head with ``tau = 0``). Also ``smax[h]`` = max of ``s[h]``
    over valid positions (``smax`` must come in as -inf); returns NaN iff some valid logit is
    not finite (else 0). Each block of positions is finished while it is in cache; with
    ``gsum`` that includes step 4's group score ``score[j] = sum_h s[h, j]`` (heads added in
    order to 0.0, as step 4 adds them; for rows with no masked position), and with ``norm``
    the softmax normalisers ``ssum[h] = sum_j exp(s[h, j] - smax[h])`` (``ssum`` zero on
    entry), segment by segment of :data:`NORM_SEG`
    positions against the running max (:func:`_normalise_segment`: an online softmax sum,
    off a sum against the final max by about an ulp per rise of the max between segments;
    the same bits with K once or twice).

    With ``has_kt`` the key columns are read in place from rows of the transposed copy
    ``KT`` (d, S) (contiguous segments), otherwise gathered from the rows of ``K`` (S, d)
    into a float64 block first. Either way the same sweeps (widening is exact) reduce them in
    the same order, so the two routes give bit-identical logits (tested for every cache
    dtype). Heads go in groups of four that share every load of a key column."""
    G, r = qs.shape
    S, d = K.shape
    block = _STEP3_BLOCK_KT if has_kt else _STEP3_BLOCK
    nb = 0 if has_kt else block  # the gathered columns: K stored once only
    blk = np.empty((r, nb))
    raw = np.empty((r, nb), dtype=K.dtype)
    acc = np.empty((4, block + _ACC_PAD))
    mprev = np.full(G, -np.inf)  # the max at the last normalised segment's end
    fused = gsum and G % 4 == 0  # (gsum: no masked position)
    chk = 0.0
    for j0 in range(0, S, block):
        n = min(block, S - j0)
        if not has_kt:
            for jj in range(n):
                if j0 + jj + _GATHER_AHEAD < S:  # the lines of a row a little ahead
                    prefetch_row(K, j0 + jj + _GATHER_AHEAD)
                krow = K[j0 + jj]
                for u in range(r):
                    raw[u, jj] = krow[comps[u]]
            # Widen in a separate, vectorised pass: widening each element as it is gathered
            # made float16 keys twice as slow as float32 ones (steps 1-3, same setting as
            # _GATHER_AHEAD: 4.5 ms, now 2.2 ms).
            for u in range(r):
                ru = raw[u]
                bu = blk[u]
                for jj in range(n):
                    bu[jj] = widen(ru[jj])
        # Column source: rows comps[u] of KT from position j0, or rows u of blk from 0.
        off = np.uint64(j0 if has_kt else 0)
        nn = np.uint64(n)
        h = 0
        while h < G:
            nh = 4 if h + 4 <= G else 1
            for i in range(nh):
                for jj in range(n):
                    acc[i, jj] = 0.0
            u = 0
            while u < r:
                four = u + 4 <= r
                if has_kt:
                    c0 = comps[u]
                    c1, c2, c3 = (
                        (comps[u + 1], comps[u + 2], comps[u + 3]) if four else (c0, c0, c0)
                    )
                    _sweep_prefetching(qs, h, u, nh, four, KT, c0, c1, c2, c3, off, nn, acc)
                else:  # rows u.. of blk
                    _sweep(
                        qs, h, u, nh, four, blk, u, u + 1, u + 2, u + 3, off, nn, acc, np.uint64(0)
                    )
                u += 4 if four else 1
            if fused:  # no masked position: copy out and add to the group score at once
                _finish_block4(acc, s, h, np.uint64(j0), nn, score, h == 0)
                for i in range(4):
                    smax[h + i] = max_of(acc[i, :n], smax[h + i])
            else:
                for i in range(nh):
                    sh = s[h + i]
                    chk += _mask_block(acc[i], sh, maskrow, np.uint64(j0), nn)
                    smax[h + i] = max_of(sh[j0 : j0 + n], smax[h + i])
            h += nh
        if fused:  # the logits' check, on their sums (a non-finite logit makes its sum so)
            if _finite_probe(score[j0 : j0 + n]) != 0.0:  # or finite logits overflowed it
                for h in range(G):
                    chk += _finite_probe(s[h, j0 : j0 + n])
        e1 = j0 + n
        if norm and (e1 % NORM_SEG == 0 or e1 == S):
            _normalise_segment(s, smax, ssum, mprev, e1 - 1 - (e1 - 1) % NORM_SEG, e1)
        if gsum and not fused:
            sc = score[j0 : j0 + n]
            for jj in range(n):
                sc[jj] = 0.0
            for h in range(G):
                sh = s[h, j0 : j0 + n]
                for jj in range(n):
                    sc[jj] += sh[jj]
    return chk


@njit_serial
def _sort_positions(sel, n_sel, mark):
    """Sort ``sel[:n_sel]``, distinct non-negative positions, ascending: a bit map of the
    positions in ``mark`` (uint8 scratch of at least ``8 * (max(sel) // 64 + 1)`` bytes, a
    multiple of 8 from its start), then the set bits word by word (the same result as
    ``sel[:n_sel].sort()``, in O(max / 64 + n_sel) instead of a comparison sort; a byte map
    scanned position by position took 13 us per row of 32768 on the development host)."""
    if n_sel == 0:
        return
    top = 0
    for t in range(n_sel):
        top = max(top, sel[t])
    words = top // 64 + 1
    bm = mark[: 8 * words].view(np.uint64)
    for w in range(words):
        bm[w] = 0
    one = np.uint64(1)
    for t in range(n_sel):
        j = sel[t]
        bm[j >> 6] |= one << np.uint64(j & 63)
    c = 0
    for w in range(words):
        x = bm[w]
        while x != 0:
            sel[c] = w * 64 + trailing_zeros(x)
            c += 1
            x &= x - one


def _work_sizes(G: int, S: int, k: int) -> tuple[int, int]:
    """Per-thread scratch of one SparQ row: (float64 elements, int64 elements)."""
    cap = _buffer_size.py_func(S, k)  # topk_buffer_size in plain Python: no jitted dispatch
    return S + G * k + EXP_CHUNK + cap, S + k + cap


@njit_serial
def _sparq_group_row(
    qg, K, KT, has_kt, V, maskrow, vmean, kp, out, comps, s, pos, alpha,
    y, tau, status, fwork, iwork,
):  # fmt: skip
    """One selection group: ``qg`` (G, d) float64; ``K``, ``V`` (S, d) and ``KT`` (d, S) in
    their own dtype (encodings ``enc_*``); ``maskrow`` (S,); ``vmean`` (d,); ``kp`` a
    :class:`KernelParams`. Writes the group's slices of the outputs (``out``, ``y`` (G, d),
    ``comps`` (r,), ``s`` (G, S), ``pos`` (k,), ``alpha``, ``tau`` (G,)); ``status[0] = 1``
    when a non-finite value was read or produced (the row is then left unfinished).
    ``fwork`` / ``iwork`` are this thread's float64 / int64 scratch (:func:`_work_sizes`)."""
    r, k, local_window = kp.r, kp.k, kp.local_window
    G, d = qg.shape
    S = K.shape[0]
    cap = topk_buffer_size(S, k)
    score = fwork[:S]
    attw = fwork[S : S + G * k]
    chunk = fwork[S + G * k : S + G * k + EXP_CHUNK]
    bv = fwork[S + G * k + EXP_CHUNK : S + G * k + EXP_CHUNK + cap]
    valid = iwork[:S]
    sel_all = iwork[S : S + k]
    bi = iwork[S + k : S + k + cap]
    shifted = np.empty(EXP_CHUNK)  # alpha's kept logits, gathered
    if kp.phase_limit < 1:
        return
    # q and v_mean finite (always, when validated before the call; a planned call that
    # skips the validation falls back to it on this status, see _planned_call)
    chk = 0.0
    for c in range(d):
        chk += vmean[c] * 0.0
        for h in range(G):
            chk += qg[h, c] * 0.0
    if chk != chk:
        status[0] = 1
        return
    nv = 0
    for j in range(S):  # a vectorised count
        nv += 1 if maskrow[j] else 0
    if nv < S:  # the valid positions, compacted (the identity when none is masked: skipped)
        n = 0
        for j in range(S):
            if maskrow[j]:
                valid[n] = j
                n += 1
    # Step 1: components.
    a = np.zeros(d)
    for h in range(G):
        for c in range(d):
            a[c] += abs(qg[h, c])
    topk_row(a, r, comps)
    # Step 2: temperature.
    for h in range(G):
        if kp.temperature == TEMP_SQRT_D:
            tau[h] = math.sqrt(d)
        elif kp.temperature == TEMP_SQRT_R:
            tau[h] = math.sqrt(r)
        else:
            total = 0.0
            for c in range(d):
                total += abs(qg[h, c])
            kept = 0.0
            for t in range(r):
                kept += abs(qg[h, comps[t]])
            cov = kept / total if total > 0 else 1.0
            tau[h] = math.sqrt(d * cov)
    # Step 3: approximate logits, -inf where masked; per-head max over valid positions.
    qs = np.empty((G, r))
    for h in range(G):
        th = tau[h]
        for t in range(r):  # q_h zero on every kept component (tau 0): logits 0
            qs[h, t] = qg[h, comps[t]] / th if th > 0 else 0.0
    smax = np.full(G, -np.inf)
    # (the group score of logits, with no masked position, is summed block by block in
    # step 3, while the block's logits are in cache)
    gsum = nv == S and not kp.probs
    # (and alpha's softmax normalisers, unless the group score needs them with the final
    # max below: segment by segment, with a running max)
    ssum = np.zeros(G)
    norm3 = kp.reallocate and not kp.probs
    chk = _approx_logits_row(qs, K, KT, has_kt, comps, maskrow, s, smax, score, gsum, ssum, norm3)
    if chk != chk:
        status[0] = 1
        return
    if kp.phase_limit < 2:
        return
    # Softmax normalisers of the approximate logits for the group score of probabilities
    # (masked: exp(-inf) = 0), with the final max (for alpha alone, step 3 summed them).
    if kp.probs:
        for h in range(G):
            ssum[h] = exp_nonpos_sum(s[h], smax[h])
    # Step 4: group score over valid positions (compacted), forced local window, top-k.
    for t in range(nv if not gsum else 0):
        score[t] = 0.0
    for h in range(G if not gsum else 0):
        sh = s[h]
        if kp.probs:  # exps again, chunk by chunk (no (G, S) buffer), in compacted order
            t2 = 0
            for j0 in range(0, S, EXP_CHUNK):
                n = min(EXP_CHUNK, S - j0)
                seg = chunk[:n]
                exp_nonpos_into(sh[j0 : j0 + n], seg, smax[h])
                for t in range(n):
                    if maskrow[j0 + t]:
                        score[t2] += seg[t] / ssum[h]
                        t2 += 1
        elif nv == S:  # no masked position: valid[t] == t, a contiguous (vectorised) sum
            for t in range(S):
                score[t] += sh[t]
        else:
            for t in range(nv):
                score[t] += sh[valid[t]]
    if kp.phase_limit < 3:
        return
    n_local = min(local_window, nv)
    for t in range(nv - n_local, nv):
        score[t] = np.inf
    n_sel = min(k, nv)
    sel = sel_all[:n_sel]
    n_rest = nv - n_local
    nb = kp.num_buckets
    if nb != EXACT_TOPK and n_sel - n_local > 0 and n_sel < nv:
        # Bucketed top-k over the non-local prefix; the forced window (score +inf) first.
        for t in range(n_local):
            sel[t] = n_rest + t
        bucketed_topk_row(
            score[:n_rest], n_sel - n_local, min(nb, n_rest), kp.k_per_bucket, kp.interleaved,
            sel[n_local:],
        )  # fmt: skip
    elif kp.ordered:
        topk_row_into(score[:nv], n_sel, sel, bv, bi)
    else:  # the positions are only used in index order: skip the sort by rank
        topk_set_into(score[:nv], n_sel, sel, bv, bi)
    if nv < S:  # compacted indices back to positions
        for t in range(n_sel):
            sel[t] = valid[sel[t]]
    if kp.ordered:
        for t in range(n_sel):
            pos[t] = sel[t]
    # Steps 5 and 7 visit the kept positions in index order: the gathers then walk memory
    # forwards (prefetch- and TLB-friendly), and alpha's sum has an order that does not
    # depend on how the positions are reported.
    _sort_positions(sel, n_sel, score.view(np.uint8))
    if not kp.ordered:
        for t in range(n_sel):
            pos[t] = sel[t]
    for t in range(n_sel, k):
        pos[t] = -1
    if kp.phase_limit < 4:
        return
    # Step 5: alpha = softmax mass of the approximate logits on the kept positions.
    for h in range(G):
        if kp.reallocate:
            sh = s[h]
            acc = 0.0
            for t0 in range(0, n_sel, EXP_CHUNK):
                n = min(EXP_CHUNK, n_sel - t0)
                kept = sel[t0 : t0 + n]
                for t in range(n):
                    shifted[t] = sh[kept[t]]
                acc += exp_nonpos_sum(shifted[:n], smax[h])
            alpha[h] = acc  # divided by the normaliser after step 7
        else:
            alpha[h] = 1.0
    if kp.phase_limit < 5:
        return
    # Step 7: exact attention over the kept positions (rows of K and V read in place, each
    # requested ahead, GATHER_REQUESTS times: four on AMD Zen, the nearest into the L1, once
    # elsewhere; the kernels compile with the host's value, reference._config).
    attend_positions(qg, K, V, sel, n_sel, 1.0 / math.sqrt(d), y, status, attw, GATHER_AHEAD,
                     GATHER_REQUESTS)  # fmt: skip
    if kp.reallocate:
        for h in range(G):
            alpha[h] /= ssum[h]
    if kp.phase_limit < 6:
        return
    # Step 8: reallocation to v_mean (status 2 if an output is not finite).
    chk = 0.0
    for h in range(G):
        ah = alpha[h]
        for c in range(d):
            v = ah * y[h, c] + (1.0 - ah) * vmean[c]
            out[h, c] = v
            chk += v * 0.0
    if chk != chk:
        status[0] = 2


@njit_serial
def _reset_flags(status, kt_bad):
    """``status = 0`` (2-D) and ``kt_bad = -1``, before the rows run."""
    for i in range(status.shape[0]):
        for j in range(status.shape[1]):
            status[i, j] = 0
    for i in range(kt_bad.shape[0]):
        kt_bad[i] = -1


@njit_parallel
def _sparq_kernel(
    q, K, KT, has_kt, V, mask, vmean, kpa, out, fout, iout, steps, fwork, iwork, starts,
):  # fmt: skip
    """All rows: ``q`` (B, H, d) float64; ``K``, ``V`` (B, Hkv, S, d), ``KT`` (B, Hkv, d, S)
    in their own dtype; ``mask`` (B, S); ``vmean`` (B, Hkv, d); ``kpa`` a
    :meth:`KernelParams.packed`; ``out`` (B, H, d); ``fout`` / ``iout`` the flat buffers of
    the other outputs, the status and the spot check's results (:func:`_carve_outputs`;
    flat arguments, like ``kpa``, so that a call is typed in C). The approximate logits go
    to ``fout`` with ``steps``, else to the start of each thread's row of ``fwork``
    (per * S elements, before the row's own scratch). Rows are (batch, selection group)
    pairs, independent, run in parallel; ``fwork`` / ``iwork`` are per-thread scratch.

    With ``has_kt``, the first row of each (batch, KV head) spot-checks ``KT`` against
    ``K`` first (runs starting at ``starts`` (B, Hkv, runs - 1), see
    :func:`_spot_check_row`) and writes the result to ``kt_bad[b * Hkv + kv]`` (the caller
    raises on a mismatch, whatever the rows computed from the mismatched copy). Returns
    whether some ``status`` is non-zero or some ``kt_bad`` entry is set."""
    kp0 = _unpack_params(kpa)  # (each row unpacks its own copy: a NamedTuple built
    # outside the prange does not reach Numba's parallel region)
    per = kp0.per
    B, H, d = q.shape
    Hkv = K.shape[1]
    S = K.shape[2]
    g = H // Hkv
    G = H // per
    y, alpha, temperature, approx_logits, components, positions, status, kt_bad = _carve_outputs(
        fout, iout, B, H, G, S if steps else 0, d, kp0.r, kp0.k, Hkv
    )
    _reset_flags(status, kt_bad)  # (serial: an array expression here would be a parallel
    # region of its own, one more thread wake-up per call)
    ns = 0 if steps else per * S  # the logits' scratch at the start of each fwork row
    for row in prange(B * G):
        b = row // G
        grp = row % G
        h0 = grp * per
        kv = h0 // g
        hs = slice(h0, h0 + per)
        tid = numba.get_thread_id()
        if has_kt and h0 % g == 0:
            kt_bad[b * Hkv + kv] = _spot_check_row(
                KT[b, kv], K[b, kv], mask[b], starts[b, kv], KT_SPOT_RUN
            )
        s = approx_logits[b, hs] if steps else fwork[tid, :ns].reshape((per, S))
        kp = _unpack_params(kpa)
        _sparq_group_row(
            q[b, hs], K[b, kv], KT[b, kv], has_kt, V[b, kv], mask[b],
            vmean[b, kv], kp, out[b, hs], components[b, grp], s, positions[b, grp],
            alpha[b, hs], y[b, hs], temperature[b, hs], status[b, grp : grp + 1],
            fwork[tid, ns:], iwork[tid],
        )  # fmt: skip
    bad = False  # whether the caller must look at status or kt_bad (one test, in here)
    for i in range(kt_bad.shape[0]):
        bad |= kt_bad[i] >= 0
    for b in range(B):
        for grp in range(G):
            bad |= status[b, grp] != 0
    return bad


@njit_parallel
def _masked_mean_kernel(V, mask, out, status):
    """Step 6 for every (batch, KV head): mean of the valid rows of ``V`` (own dtype)."""
    B, Hkv, S, d = V.shape
    for row in prange(B * Hkv):
        b = row // Hkv
        kv = row % Hkv
        acc = np.zeros(d)
        n = 0
        Vr = V[b, kv]
        for j in range(S):
            if mask[b, j]:
                n += 1
                for c in range(d):
                    acc[c] += widen(Vr[j, c])
        chk = 0.0
        for c in range(d):
            if math.isfinite(acc[c]):
                out[b, kv, c] = acc[c] / n
            else:  # the sum went beyond float64 (or V holds a NaN/inf: status catches it)
                out[b, kv, c] = _scaled_column_mean(Vr, mask[b], c, n)
            chk += out[b, kv, c] * 0.0
        if chk != chk:
            status[b, kv] = 1


#: 2**-64: V scaled by it sums to a finite value for any number of float64 rows below
#: 2**63 (exact for every |v| >= 2**-958; smaller entries weigh nothing beside such a sum).
_SUM_SCALE = 2.0**-64


@njit_serial(fastmath=False)  # reassociation would factor the scale out of the sum
def _scaled_column_mean(Vr, maskrow, c, n):
    """Mean of column ``c`` of the ``n`` valid rows of ``Vr`` when the plain sum overflows:
    ``(sum(v * 2**-64) / n) * 2**64``, finite unless the mean itself is beyond float64."""
    acc = 0.0
    for j in range(Vr.shape[0]):
        if maskrow[j]:
            acc += widen(Vr[j, c]) * _SUM_SCALE
    return (acc / n) * 2.0**64


def _finite_result(steps: SparqSteps, q, K, mask, precision: str) -> None:
    """Finite inputs can still overflow: the logits (|q . k| beyond the dtype's range) or,
    in an emulated precision, the mean of V or the output. Name the array responsible (the
    logits are recomputed here, on the error path only)."""
    if np.isfinite(steps.out).all():
        return
    acc = np.float64 if precision == "float64" else np.float32
    B, H, d = q.shape
    g = H // K.shape[1]
    Kh = np.repeat(K, g, axis=1).astype(acc)  # (B, H, S, d)
    logits = np.einsum("bhsd,bhd->bhs", Kh, q.astype(acc)) / acc(math.sqrt(d))
    if np.isfinite(np.where(mask[:, None, :], logits, 0.0)).all():
        part = (
            "the attention output"
            if np.isfinite(steps.v_mean).all()
            else "the mean of V over the valid positions"
        )
        raise ValueError(
            f"v_cache: {part} overflows {precision} (|v| is too large for the dtype);"
            " scale v_cache down (attention is linear in V)"
        )
    raise ValueError(
        f"q, k_cache: the attention logits overflow {precision} (|q . k| is too large for"
        " the dtype); scale q or k_cache down"
    )


def sparq_attention(
    q,
    k_cache,
    v_cache,
    *,
    r: int,
    k: int,
    local_window: int = 0,
    mask=None,
    reallocate: bool = True,
    return_steps: bool = False,
    temperature: str = "l1",
    group_score: str = "logits",
    selection: str = "group",
    v_mean=None,
    topk: str = "exact",
    num_buckets: int | None = None,
    k_per_bucket: int = 1,
    interleaved: bool = True,
    precision: str = "float64",
    impl: str | None = None,
    k_cache_t=None,
    check_finite: bool = True,
) -> np.ndarray | SparqSteps:
    """SparQ Attention for one decode step (float64 truth, Ribar et al. 2024, Alg. 1).

    Parameters
    ----------
    q : ndarray, shape (B, H, d)
        Queries of the token being generated (post-RoPE), float16/bfloat16/float32/float64.
    k_cache, v_cache : ndarray, shape (B, Hkv, S, d)
        Caches including the current token at the last valid position; ``H % Hkv == 0``.
        float16, bfloat16 (``ml_dtypes.bfloat16``), float32 or float64: the kernel reads them
        in place in their own dtype (a non-contiguous or byte-swapped array is copied once,
        in its own dtype) and accumulates in float64.
    r : int
        Query components kept, ``1 <= r <= d``.
    k : int
        Positions kept in total (paper counting), ``k >= 1``; if ``k`` is at least the number of
        valid positions, every valid position is kept.
    local_window : int
        Most recent valid positions always kept (the current token counts), ``0 <= l <= k``.
    mask : ndarray of bool, shape (B, S), optional
        True = attend.  Masked positions may hold any finite values.
    reallocate : bool
        Mix in ``v_mean`` with weight ``1 - alpha`` (Alg. 1 line 8); False means alpha = 1.
    return_steps : bool
        Return a :class:`SparqSteps` with every intermediate instead of ``out`` alone.
    temperature : {"l1", "sqrt_d", "sqrt_r"}
        ``tau_h``: ``sqrt(d * L1 coverage)`` (evaluation code), ``sqrt(d)`` or ``sqrt(r)``.
    group_score : {"logits", "probs"}
        Sum over the group of approximate logits (evaluation code) or of their softmax
        probabilities (paper App. B).  Identical selections for g = 1.
    selection : {"group", "head"}
        One i1/i2 per KV head shared by its g query heads, or one per query head.
    v_mean : ndarray, shape (B, Hkv, d), optional
        Caller-supplied mean value (e.g. a running mean); default: masked mean of V.
    topk : {"exact", "bucketed"}
        Step 4's top-k. ``"bucketed"`` keeps the forced local window and chooses the other
        ``k - local_window`` positions with :func:`reference.bucketed_topk` over the
        non-local valid positions in index order (Key et al. 2024, applied to SparQ).
    num_buckets, k_per_bucket, interleaved
        Bucketed top-k parameters (``num_buckets * k_per_bucket >= k - local_window``). A row
        with fewer non-local valid positions ``n'`` than buckets uses ``n'`` buckets of one
        (the same result as empty buckets: exact).
    precision : {"float64", "float32", "float16", "bfloat16"}
        ``"float64"`` is the truth. The others emulate a naive implementation in that dtype
        (see :func:`sparq_attention_twin`); emulation runs on the NumPy twin.
    impl : {"numba", "twin"}, optional
        The Numba-parallel kernel (default for float64) or the NumPy twin (always used for an
        emulated precision).
    k_cache_t : ndarray, shape (B, Hkv, d, S), optional
        A second copy of the keys, transposed (paper Sec. 6 and App. F: K stored twice), in
        k_cache's dtype and C-contiguous; build it with :func:`transpose_keys`. Step 1 then
        streams only the ``r`` selected rows of it. The result is bit-identical to the call
        without it. Its shape and dtype are checked, and 64 positions per (batch, KV head)
        are compared with ``k_cache``: the 16 up to the row's last valid position (the newest
        token) and three runs of 16 at random offsets. Kernel only (``impl="numba"``).
    check_finite : bool
        True (default): scan q, the caches (and ``k_cache_t``) for NaN/inf and name the first
        one; this full read makes the call slower than dense attention (it reads every
        byte dense reads, and ``k_cache_t``, before SparQ's own work). False: validate
        only what the kernel reads (q, the ``r`` key columns of step 1, the kept rows of K
        and V, V for the default ``v_mean``): a NaN or inf in an entry SparQ never reads
        goes undetected.

    Returns
    -------
    out : ndarray of float64, shape (B, H, d), or :class:`SparqSteps` if ``return_steps``.
    """
    opts = (r, k, local_window, reallocate, temperature, group_score, selection, topk,
            num_buckets, k_per_bucket, interleaved)  # fmt: skip
    planned = (
        check_finite is False and return_steps is False and mask is None
        and type(precision) is str and precision == "float64"
        and (impl is None or type(impl) is str and impl == "numba")
    )  # fmt: skip
    if planned:
        out = _planned_call(q, k_cache, v_cache, k_cache_t, v_mean, opts)
        if out is not None:
            return out
    as_choice("precision", precision, PRECISIONS)
    if impl is None:
        impl = "numba" if precision == "float64" else "twin"
    elif impl == "naive":  # the old name of the twin, kept for one release
        warnings.warn(
            "impl='naive' is deprecated; use impl='twin'", DeprecationWarning, stacklevel=2
        )
        impl = "twin"
    as_choice("impl", impl, IMPLS)
    if impl == "numba" and precision != "float64":
        raise ValueError(
            f"impl: the Numba kernel computes the float64 truth only; emulating"
            f" precision={precision!r} needs impl='twin' (or leave impl unset), got impl='numba'"
        )
    if impl == "twin" and k_cache_t is not None:
        raise ValueError(
            "impl: k_cache_t is read by the Numba kernel only (the twin has no use for it);"
            " got impl='twin' with a k_cache_t"
        )
    if impl == "twin":
        steps = sparq_attention_twin(
            q, k_cache, v_cache, r=r, k=k, local_window=local_window, mask=mask,
            reallocate=reallocate, temperature=temperature, group_score=group_score,
            selection=selection, v_mean=v_mean, topk=topk, num_buckets=num_buckets,
            k_per_bucket=k_per_bucket, interleaved=interleaved, precision=precision,
        )  # fmt: skip
        return steps if return_steps else steps.out
    as_bool("check_finite", check_finite)
    x = KernelInputs(q, k_cache, v_cache, mask)
    p = SparqParams.build(
        d=x.d, r=r, k=k, local_window=local_window, reallocate=reallocate,
        temperature=temperature, group_score=group_score, selection=selection, topk=topk,
        num_buckets=num_buckets, k_per_bucket=k_per_bucket, interleaved=interleaved,
    )  # fmt: skip
    v_mean = _check_v_mean(v_mean, (x.B, x.Hkv, x.d))
    kt, enc_kt = _check_k_cache_t(k_cache_t, x)
    if check_finite:
        x.check_finite_caches()
        if kt is not None and has_nonfinite(kt, enc_kt):
            raise_nonfinite("k_cache_t", kt, enc_kt)
    out = _run_kernel(x, p, v_mean, kt, enc_kt, return_steps=bool(return_steps))
    if planned:
        _add_plan(q, k_cache, v_cache, k_cache_t, v_mean, opts, x, p, kt)
    return out


# ---------------------------------------------------------------------------------------------
# Planned calls: a call that repeats the shapes, dtypes, layouts and options of an earlier
# successful one skips the Python validation and set-up (on a cache-cold call on the
# development host, 0.17-0.26 ms of Python against 0.08-0.12 ms planned).
# ---------------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    kv_shape: tuple  # (B, Hkv, S, d)
    view: object  # dtype the caches are viewed as (16-bit patterns), or None
    kt_shape: tuple | None  # (B, Hkv, d, S), or None without k_cache_t
    vm_shape: tuple  # (B, Hkv, d)
    q: np.ndarray  # (B, H, d) float64 on a Q_ALIGN boundary: the query copy's buffer
    mask: np.ndarray
    kpa: np.ndarray
    fout: np.ndarray
    iout: np.ndarray
    fwork: np.ndarray
    iwork: np.ndarray
    starts: np.ndarray


def _plan_key(q, k_cache, v_cache, k_cache_t, v_mean, opts):
    """What a plan is keyed by: the arrays' dtypes and the shapes the others follow from, the
    presence of the optional arrays and the options by value and type (``True`` is not
    ``1``, nor ``16.0`` ``16``, as the validation has it). Raises for an option that does
    not hash."""
    key = ("sparq", q.shape, q.dtype, k_cache.shape, k_cache.dtype, v_cache.dtype,
           k_cache_t is None, v_mean is None, opts, tuple(map(type, opts)))  # fmt: skip
    hash(key)
    return key


def _planned_call(q, k_cache, v_cache, k_cache_t, v_mean, opts):
    """The output of a call (``check_finite=False``, no mask, no steps, the float64 kernel)
    planned by an earlier one, or None: then :func:`sparq_attention` takes its full path,
    which validates, runs and raises as usual.

    A plan exists only for inputs that passed that path: the same shapes and dtypes,
    C-contiguous caches in native byte order (read in place, as there), a C-contiguous
    float64 ``v_mean`` of the right shape. What varies from call to call is still checked:
    the arrays' types, layouts and shapes here, and the values by the kernel as it reads
    them: ``q`` and ``v_mean`` finite (checked by every row), the ``k_cache_t`` spot check,
    the non-finite entries and overflows that the rows detect. Any of those sends the call
    down the full path, which raises the same error it raises without a plan."""
    found = find(
        q, k_cache, v_cache, lambda: _plan_key(q, k_cache, v_cache, k_cache_t, v_mean, opts)
    )
    if found is None:
        return None
    plan, kc, vc = found
    if plan.kt_shape is not None:
        if type(k_cache_t) is not np.ndarray or k_cache_t.shape != plan.kt_shape:
            return None
        if k_cache_t.dtype != k_cache.dtype or not k_cache_t.flags.c_contiguous:
            return None
    if v_mean is not None:
        if type(v_mean) is not np.ndarray or v_mean.dtype != np.float64:
            return None
        if v_mean.shape != plan.vm_shape or not v_mean.flags.c_contiguous:
            return None
    if plan.view is not None and k_cache_t is not None:
        k_cache_t = k_cache_t.view(plan.view)
    np.copyto(plan.q, q, casting="unsafe")  # a float dtype the validation accepted
    if v_mean is None:
        v_mean = np.empty(plan.vm_shape)
        status_v = np.zeros(plan.vm_shape[:2], dtype=np.int64)
        _masked_mean_kernel(vc, plan.mask, v_mean, status_v)
        if status_v.any():
            return None
    out = np.empty(plan.q.shape)
    has_kt = k_cache_t is not None
    bad = _sparq_kernel(
        plan.q, kc, k_cache_t if has_kt else kc, has_kt, vc, plan.mask, v_mean, plan.kpa,
        out, plan.fout, plan.iout, False, plan.fwork, plan.iwork, plan.starts,
    )  # fmt: skip
    return None if bad else out


def _add_plan(q, k_cache, v_cache, k_cache_t, v_mean, opts, x, p, kt):
    """Plan the call that just succeeded on the full path, when its inputs qualify (see
    :func:`_planned_call`)."""
    if not plannable(q, k_cache, v_cache):
        return
    if v_mean is not None and not (
        type(v_mean) is np.ndarray and v_mean.dtype == np.float64 and v_mean.flags.c_contiguous
    ):
        return
    try:
        key = _plan_key(q, k_cache, v_cache, k_cache_t, v_mean, opts)
    except Exception:
        return
    B, H, Hkv, S, d = x.B, x.H, x.Hkv, x.S, x.d
    kp, kpa = _kernel_params(p, H // Hkv, S, 99, False)
    fout, iout, fwork, iwork = _scratch(B, H, Hkv, H // kp.per, S, d, kp, False)
    add_plan(key, _Plan(
        x.k.shape, None if x.k.dtype == k_cache.dtype else x.k.dtype,
        None if kt is None else kt.shape, (B, Hkv, d), query_buffer((B, H, d)),
        x.mask, kpa, fout, iout, fwork, iwork,
        _spot_starts(B, Hkv, S) if kt is not None else _NO_STARTS,
    ))  # fmt: skip


def transpose_keys(k_cache) -> np.ndarray:
    """The transposed key copy for ``sparq_attention(..., k_cache_t=...)``: (B, Hkv, S, d) ->
    (B, Hkv, d, S), C-contiguous, in k_cache's own dtype (a copy of the same bytes)."""
    if not isinstance(k_cache, np.ndarray):
        raise TypeError(f"k_cache: expected a numpy array, got {type(k_cache).__name__}")
    if k_cache.ndim != 4:
        raise ValueError(f"k_cache: expected a 4-D array (B, Hkv, S, d), got {k_cache.shape}")
    return np.ascontiguousarray(np.swapaxes(k_cache, 2, 3))


#: Positions per (batch, KV head) compared between k_cache_t and k_cache, in runs of
#: KT_SPOT_RUN consecutive positions (public: the host cost model, costmodel.host, prices
#: this check). The first run ends at the batch row's last valid position (the newest token,
#: where a copy that was not kept in sync differs); the others start at random multiples of
#: KT_SPOT_RUN, the same for every call with the same (B, Hkv, S).
KT_SPOT_CHECKS = 64
KT_SPOT_RUN = 16
KT_SPOT_RUNS = KT_SPOT_CHECKS // KT_SPOT_RUN


#: Segments ahead that the ``k_cache_t`` spot check requests as it compares, for 16-bit
#: caches (:func:`_requests_segments`; each of a run's ``d`` segments of the d-major copy
#: lies ``S * e`` bytes from the next, so the hardware prefetchers do not see them coming).
#: On the Zen 4 development host (S = 32768, cache-cold, the kernel launched with the check
#: and no row work, same-round against the check without requests), one request 8
#: segments ahead: float16 0.62 of the time at 32 KV heads (the check about halved, 1.1 to
#: 0.55 ms; the whole call 0.94) and 0.77 at 8; float32 1.07-1.15 at 8 KV heads (the whole
#: public call 1.01-1.04) and 1.08 at 32, so float32 (and float64, not measured) keep the
#: check without requests. Requests 16 and 8 ahead: no better.
SPOT_AHEAD = 8


def _requests_segments(A):
    """Whether the spot check requests the segments of ``A`` ahead (16-bit elements). A
    compile-time constant of the array type (jitted code only)."""
    raise NotImplementedError


@overload(_requests_segments, inline="always")
def _requests_segments_impl(A):
    flag = A.dtype.bitwidth == 16
    return lambda A: flag


@njit_serial
def _spot_run(ktr, kr, j0, run):
    """Smallest ``j`` in ``[j0, j0 + run)`` (clipped to S) with ``ktr[:, j] != kr[j, :]`` bit
    for bit, or -1. Column by column of ``ktr``: a run is ``d`` short segments of the
    d-major copy (about one line each) and ``run`` consecutive rows of ``kr``."""
    d, S = ktr.shape
    tb = bits(ktr)
    kb = bits(kr)
    j1 = min(S, j0 + run)
    first = j1
    for c in range(d):
        # the segment SPOT_AHEAD on (each S * e bytes from the next), 16-bit caches only
        if _requests_segments(ktr) and c + SPOT_AHEAD < d:
            _prefetch(ktr, c + SPOT_AHEAD, j0)
            _prefetch(ktr, c + SPOT_AHEAD, j1 - 1)
        seg = tb[c]
        for j in range(j0, j1):
            if seg[j] != kb[j, c] and j < first:
                first = j
    return first if first < j1 else -1


@njit_serial
def _spot_check_row(ktr, kr, maskrow, starts, run):
    """The ``k_cache_t`` spot check of one (batch, KV head): ``ktr`` (d, S) against ``kr``
    (S, d) over the run of ``run`` positions that ends at the last valid position of
    ``maskrow``, then the runs starting at ``starts``. Returns the smallest differing
    position of the first run with a difference, or -1."""
    S = kr.shape[0]
    last = S - 1
    while last > 0 and not maskrow[last]:
        last -= 1
    # (Requesting every line of every run before comparing did not make it faster on the
    # development host: cold, about 0.1 ms for 8 KV heads either way. A run's d segments lie
    # S * e bytes apart; for 16-bit caches _spot_run requests them SPOT_AHEAD segments
    # ahead as it goes.)
    j = _spot_run(ktr, kr, max(0, last + 1 - run), run)
    t = 0
    while j < 0 and t < starts.shape[0]:
        j = _spot_run(ktr, kr, starts[t], run)
        t += 1
    return j


@functools.lru_cache(maxsize=16)
def _spot_starts(B: int, Hkv: int, S: int) -> np.ndarray:
    """Starts of the random runs of the spot check, (B, Hkv, KT_SPOT_RUNS - 1) int64
    multiples of KT_SPOT_RUN (read-only): drawn by ``numpy.random.default_rng(0)``, so the
    same for every call with these sizes (cached: a generator costs more than the check
    itself on a cache-cold call)."""
    n_runs = -(-S // KT_SPOT_RUN)
    j = np.random.default_rng(0).integers(0, n_runs, size=(B, Hkv, KT_SPOT_RUNS - 1))
    j *= KT_SPOT_RUN
    j.flags.writeable = False
    return j


#: Placeholder for the spot check's run starts when there is no ``k_cache_t`` (read-only,
#: like :func:`_spot_starts`' arrays, so that both compile to one signature).
_NO_STARTS = np.zeros((1, 1, KT_SPOT_RUNS - 1), dtype=np.int64)
_NO_STARTS.flags.writeable = False


def _check_k_cache_t(k_cache_t, x: KernelInputs):
    """Validate the transposed key copy's shape, dtype and layout; ``(None, 0)`` when there
    is none. Its values are spot-checked against ``k_cache`` by the kernel, at the start of
    the first row of each (batch, KV head) (:func:`_spot_check_row`), which saves a second
    parallel launch per call."""
    if k_cache_t is None:
        return None, 0
    if not isinstance(k_cache_t, np.ndarray):
        raise TypeError(f"k_cache_t: expected a numpy array, got {type(k_cache_t).__name__}")
    want = (x.B, x.Hkv, x.d, x.S)
    if k_cache_t.shape != want:
        raise ValueError(
            f"k_cache_t: expected shape (B, Hkv, d, S) = {want}, got {k_cache_t.shape}"
        )
    if k_cache_t.dtype.newbyteorder("=") != x.k_dtype.newbyteorder("="):
        raise TypeError(f"k_cache_t: expected k_cache's dtype {x.k_dtype}, got {k_cache_t.dtype}")
    if not k_cache_t.flags.c_contiguous or not k_cache_t.dtype.isnative:
        raise ValueError(
            "k_cache_t: expected a C-contiguous array in native byte order (it exists to be"
            " streamed row by row); build it with reference.transpose_keys(k_cache)"
        )
    return as_cache_array("k_cache_t", k_cache_t, 4)  # no copy: checked above


def _raise_kt_mismatch(bad: np.ndarray, Hkv: int) -> None:
    """Raise for the first (batch, KV head) whose spot check found a difference."""
    hit = np.flatnonzero(bad >= 0)
    b, h = divmod(int(hit[0]), Hkv)
    raise ValueError(
        f"k_cache_t: expected k_cache transposed (k_cache_t[b, h, :, j] =="
        f" k_cache[b, h, j, :]), but they differ at b={b}, h={h}, j={int(bad[hit[0]])};"
        " build it with reference.transpose_keys(k_cache)"
    )


@functools.lru_cache(maxsize=64)
def _kernel_params(
    p: SparqParams, g: int, S: int, phase_limit: int, ordered: bool
) -> tuple[KernelParams, np.ndarray]:
    """:meth:`SparqParams.kernel` with ``phase_limit`` and ``ordered``, and its
    :meth:`KernelParams.packed` form (read-only), cached: the same for every call with these
    arguments (built once, not on every cache-cold call)."""
    kp = p.kernel(g, S)._replace(phase_limit=phase_limit, ordered=ordered)
    a = kp.packed()
    a.flags.writeable = False
    return kp, a


def _scratch(B, H, Hkv, G, S, d, kp, steps):
    """``fout, iout, fwork, iwork`` of :func:`_sparq_kernel`: fresh flat outputs when the
    steps are returned to the caller, else reused scratch; the per-thread ``fwork`` (with
    the approximate logits' rows unless ``steps``) and ``iwork`` with a row for every thread
    Numba can run (:func:`reference._workspace.max_threads`)."""
    nfo, nio = _flat_sizes(B, H, Hkv, G, S if steps else 0, d, kp.r, kp.k)
    if steps:  # returned to the caller: fresh
        fout, iout = np.empty(nfo), np.empty(nio, dtype=np.int64)
    else:
        fout = workspace("sparq_fo", nfo, np.float64, rows=1)[0]
        iout = workspace("sparq_io", nio, np.int64, rows=1)[0]
    rows = max_threads()
    nf, ni = _work_sizes(kp.per, S, kp.k)
    fwork = workspace("sparq_f", nf + (0 if steps else kp.per * S), np.float64, rows=rows)
    return fout, iout, fwork, workspace("sparq_i", ni, np.int64, rows=rows)


def _run_kernel(
    x: KernelInputs, p: SparqParams, v_mean, kt, enc_kt, *, return_steps: bool = True,
    phase_limit: int = 99,
) -> SparqSteps | np.ndarray:  # fmt: skip
    """Run the Numba kernel on validated inputs; non-finite results raise. Returns the
    :class:`SparqSteps`, or with ``return_steps=False`` the output alone (the other steps
    then live in reused scratch, the approximate logits in each thread's). ``phase_limit``
    < 6 stops every row after that phase (0: at once, the kernel launch, set-up and
    ``k_cache_t`` spot check alone; 1: steps 1-3 (with the group score of logits and the
    softmax normalisers for alpha), 2: the group score otherwise, 3: top-k, 4: alpha, 5:
    gathers and attention; for the benchmark's breakdown)."""
    B, H, Hkv, S, d = x.B, x.H, x.Hkv, x.S, x.d
    note_first_compile(_sparq_kernel, _masked_mean_kernel)
    if v_mean is None:
        v_mean = np.empty((B, Hkv, d))
        status_v = np.zeros((B, Hkv), dtype=np.int64)
        _masked_mean_kernel(x.v, x.mask, v_mean, status_v)
        if status_v.any():
            x.raise_nonfinite_caches()
    kp, kpa = _kernel_params(p, H // Hkv, S, phase_limit, return_steps)
    G = H // kp.per
    steps = bool(return_steps)
    has_kt = kt is not None
    fout, iout, fwork, iwork = _scratch(B, H, Hkv, G, S, d, kp, steps)
    out = np.empty((B, H, d))
    bad = _sparq_kernel(
        x.q, x.k, kt if has_kt else x.k, has_kt, x.v, x.mask, v_mean, kpa, out, fout, iout,
        steps, fwork, iwork, _spot_starts(B, Hkv, S) if has_kt else _NO_STARTS,
    )  # fmt: skip
    if bad:  # (the views in plain Python: py_func, no compiled entry point for them)
        *_, status, kt_bad = _carve_outputs.py_func(fout, iout, B, H, G, 0, d, kp.r, kp.k, Hkv)
        if has_kt and kt_bad.max() >= 0:
            _raise_kt_mismatch(kt_bad, Hkv)
        # the rows check what they read and what they write
        x.raise_nonfinite_caches()
        if has_kt:
            raise_nonfinite("k_cache_t", kt, enc_kt)
        if (status == 1).any():
            raise ValueError(
                "q, k_cache: the attention logits overflow float64 (|q . k| is too large);"
                " scale q or k_cache down"
            )
        raise ValueError(
            "v_cache: the attention output overflows float64 (|v| is too large);"
            " scale v_cache down (attention is linear in V)"
        )
    if not steps:
        return out
    y, alpha, temperature, approx_logits, components, positions, _, _ = _carve_outputs.py_func(
        fout, iout, B, H, G, S, d, kp.r, kp.k, Hkv
    )
    return SparqSteps(out, components, approx_logits, positions, alpha, v_mean, y, temperature)


def sparq_attention_naive(*args, **kwargs) -> SparqSteps:
    """Deprecated name of :func:`sparq_attention_twin` (kept for one release)."""
    warnings.warn(
        "sparq_attention_naive is deprecated; use sparq_attention_twin",
        DeprecationWarning,
        stacklevel=2,
    )
    return sparq_attention_twin(*args, **kwargs)
