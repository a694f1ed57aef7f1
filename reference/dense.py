"""Dense decode attention: the baseline every sparse method is measured against.

``out[b, h] = softmax(q[b, h] @ K[b, h // g].T / sqrt(d), over valid positions) @ V[b, h // g]``
(Ribar et al. 2024, Eq. 1-2; one query token per sequence, GQA with g = H / Hkv).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from reference._checks import KernelInputs, as_bool, check_attention_inputs
from reference._config import njit_parallel, note_first_compile
from reference._plans import find, plannable, query_buffer
from reference._rows import attend_part, combine_parts, nonfinite_rows
from reference._workspace import add_plan, max_threads, workspace


def dense_attention_twin(q, k_cache, v_cache, mask=None) -> np.ndarray:
    """Float64 NumPy twin of :func:`dense_attention` (the ground truth; slow and obvious)."""
    q, K, V, mask, B, H, Hkv, S, d = check_attention_inputs(q, k_cache, v_cache, mask)
    g = H // Hkv
    out = np.empty((B, H, d))
    for b in range(B):
        valid = np.flatnonzero(mask[b])
        for h in range(H):
            kv = h // g
            logits = K[b, kv, valid] @ q[b, h] / math.sqrt(d)
            w = np.exp(logits - logits.max())
            w /= w.sum()
            out[b, h] = w @ V[b, kv, valid]
    return out


#: Positions per part: each (batch, KV head) row's positions are split into parts of this
#: many (the last one shorter), attended independently and combined
#: (:func:`reference._rows.combine_parts`). The parts depend on S alone, never on the thread
#: count, so the result is the same for any number of threads; they give the threads
#: ``B * Hkv * ceil(S / DENSE_PART)`` items of work, where ``B * Hkv`` rows alone would leave
#: the cores of a many-core host idle at batch 1.
DENSE_PART = 4096


@njit_parallel
def _dense_kernel(q, K, V, mask, check_masked, out, status, fwork, iwork, ys, mz, used):
    """All rows: ``q`` (B, H, d) float64, ``K``, ``V`` (B, Hkv, S, d) in their own dtype
    (see reference._rows.widen), ``mask`` (B, S); writes ``out`` (B, H, d).

    Work items are (batch, KV head, part) triples, parts of :data:`DENSE_PART` positions:
    the item's g query heads read each of its K and V rows once (:func:`attend_part`), into
    ``ys`` (B, Hkv, P, g, d) with the part's softmax statistics ``mz`` (B, Hkv, P, 2, g)
    and ``used`` (B, Hkv, P) (whether the part has a valid position); then each row
    combines its parts (:func:`combine_parts`). ``status`` (B, Hkv, P) is set where a
    non-finite value was met (1: a logit, or with ``check_masked`` a masked row of K or V;
    2: an output, a part's or the row's). ``fwork`` (threads, >= max(g * part, P)) float64
    and ``iwork`` (threads, >= part) int64, ``part = min(S, DENSE_PART)``, are per-thread
    scratch (see reference._workspace)."""
    B, H, d = q.shape
    Hkv = K.shape[1]
    S = K.shape[2]
    g = H // Hkv
    P = ys.shape[2]
    scale = 1.0 / math.sqrt(d)
    for i in range(B):  # (serial: an array expression would be a parallel region of its own)
        for j in range(Hkv):
            for p in range(P):
                status[i, j, p] = 0
    for item in prange(B * Hkv * P):
        row = item // P
        p = item % P
        b = row // Hkv
        kv = row % Hkv
        lo = p * DENSE_PART
        hi = min(S, lo + DENSE_PART)
        tid = numba.get_thread_id()
        positions = iwork[tid]
        n = 0
        for j in range(lo, hi):
            if mask[b, j]:
                positions[n] = j
                n += 1
        h0 = kv * g
        st = status[b, kv, p : p + 1]
        used[b, kv, p] = n > 0
        chk = 0.0  # q finite (always, when validated before the call; see _planned_call)
        for h in range(h0, h0 + g):
            for c in range(d):
                chk += q[b, h, c] * 0.0
        if chk != chk:
            st[0] = 1
            n = 0
        if n > 0:
            attend_part(
                q[b, h0 : h0 + g], K[b, kv], V[b, kv], positions, n, scale,
                ys[b, kv, p], st, fwork[tid], mz[b, kv, p, 0], mz[b, kv, p, 1],
            )  # fmt: skip
        if check_masked and n < hi - lo:
            if nonfinite_rows(K[b, kv, lo:hi], mask[b, lo:hi], False):
                st[0] = 1
            if nonfinite_rows(V[b, kv, lo:hi], mask[b, lo:hi], False):
                st[0] = 1
    for row in prange(B * Hkv):
        b = row // Hkv
        kv = row % Hkv
        bad = False
        for p in range(P):
            bad |= status[b, kv, p] != 0
        if not bad:  # (a row with a non-finite part is reported, not combined)
            tid = numba.get_thread_id()
            if not combine_parts(
                ys[b, kv], mz[b, kv, :, 0], mz[b, kv, :, 1], used[b, kv], P,
                out[b, kv * g : (kv + 1) * g], fwork[tid],
            ):  # fmt: skip
                status[b, kv, 0] = 2  # the combined output overflowed (|v| near the max)


def dense_attention(q, k_cache, v_cache, *, mask=None, check_finite: bool = True) -> np.ndarray:
    """Dense attention for one decode step (float64 result).

    Parameters
    ----------
    q : ndarray, shape (B, H, d)
        Queries of the token being generated (post-RoPE), float16/bfloat16/float32/float64.
    k_cache, v_cache : ndarray, shape (B, Hkv, S, d)
        Key and value caches; the current token's key/value sits at the last valid position.
        ``H`` must be a multiple of ``Hkv`` (GQA group size ``g = H // Hkv``). float16,
        bfloat16 (``ml_dtypes.bfloat16``), float32 or float64, read in place in their own
        dtype (a non-contiguous or byte-swapped array is copied once, in its own dtype) and
        accumulated in float64.
    mask : ndarray of bool, shape (B, S), optional
        True = attend.  Masked positions may hold any finite values; they have no influence.
    check_finite : bool
        Reject NaN and inf anywhere in q, k_cache and v_cache (masked slots included), naming
        the array and the element. The check rides on the kernel's own pass (a non-finite
        valid entry always makes a logit or an output non-finite); only masked rows cost an
        extra read. With False, masked rows are not read at all; a non-finite value in a
        valid row is still reported.

    Returns
    -------
    out : ndarray of float64, shape (B, H, d)
    """
    if mask is None:
        out = _planned_call(q, k_cache, v_cache, check_finite)
        if out is not None:
            return out
    as_bool("check_finite", check_finite)
    x = KernelInputs(q, k_cache, v_cache, mask)
    out = np.empty((x.B, x.H, x.d))
    status, scratch = _scratch(x.B, x.H, x.Hkv, x.S, x.d)
    note_first_compile(_dense_kernel)
    _dense_kernel(x.q, x.k, x.v, x.mask, bool(check_finite), out, status, *scratch)
    if status.any():
        x.raise_nonfinite_caches()
        if not (status == 1).any():
            raise ValueError(
                "v_cache: the attention output overflows float64 (|v| is too large);"
                " scale v_cache down (attention is linear in V)"
            )
        raise ValueError(
            "q, k_cache: the attention logits overflow float64 (|q . k| is too large);"
            " scale q or k_cache down"
        )
    if mask is None:
        _add_plan(q, k_cache, v_cache, check_finite, x)
    return out


def _scratch(B, H, Hkv, S, d):
    """``status`` and the reused scratch of :func:`_dense_kernel`: ``fwork``, ``iwork`` (a
    row for every thread Numba can run), the parts' outputs ``ys`` and statistics ``mz``
    (B * H * P * d and B * H * P * 2 float64; contents undefined until the kernel writes
    them) and ``used``."""
    g = H // Hkv
    P = -(-S // DENSE_PART)
    part = min(S, DENSE_PART)
    rows = max_threads()
    ys = workspace("dense_ys", B * H * P * d, np.float64, rows=1)[0]
    mz = workspace("dense_mz", B * H * P * 2, np.float64, rows=1)[0]
    status = workspace("dense_st", B * Hkv * P, np.int64, rows=1)[0]
    used = workspace("dense_used", B * Hkv * P, np.bool_, rows=1)[0]
    return status.reshape((B, Hkv, P)), (
        workspace("dense_f", max(g * part, P), np.float64, rows=rows),
        workspace("dense_i", part, np.int64, rows=rows),
        ys.reshape((B, Hkv, P, g, d)), mz.reshape((B, Hkv, P, 2, g)),
        used.reshape((B, Hkv, P)),
    )  # fmt: skip


class _Plan(NamedTuple):
    kv_shape: tuple  # (B, Hkv, S, d)
    view: object  # dtype the caches are viewed as (16-bit patterns), or None
    q: np.ndarray  # (B, H, d) float64 on a Q_ALIGN boundary: the query copy's buffer
    mask: np.ndarray
    status: np.ndarray
    scratch: tuple


def _plan_key(q, k_cache, v_cache, check_finite):
    """What a plan is keyed by (as SparQ's ``_plan_key``): the arrays' dtypes and shapes and
    ``check_finite`` by value and type. Raises for a ``check_finite`` that does not hash."""
    key = ("dense", q.shape, q.dtype, k_cache.shape, k_cache.dtype, v_cache.dtype,
           check_finite, type(check_finite))  # fmt: skip
    hash(key)
    return key


def _planned_call(q, k_cache, v_cache, check_finite):
    """The output of a call without a mask planned by an earlier one (the same shapes,
    dtypes and ``check_finite``), or None: then :func:`dense_attention` takes its full path,
    which validates, runs and raises as usual. As for SparQ's planned calls (docs/sparq.md,
    "Planned calls"): per call the arrays' types and layouts are checked here and the values
    by the kernel as it reads them (``q`` finite, every logit and output); anything
    unexpected takes the full path, which raises the error it raises without a plan. With
    no mask, ``check_finite`` changes nothing the kernel reads (it only adds the masked
    rows' check)."""
    found = find(q, k_cache, v_cache, lambda: _plan_key(q, k_cache, v_cache, check_finite))
    if found is None:
        return None
    plan, kc, vc = found
    np.copyto(plan.q, q, casting="unsafe")  # a float dtype the validation accepted
    out = np.empty(plan.q.shape)
    _dense_kernel(plan.q, kc, vc, plan.mask, bool(check_finite), out, plan.status, *plan.scratch)
    return None if plan.status.any() else out


def _add_plan(q, k_cache, v_cache, check_finite, x: KernelInputs):
    """Plan the call without a mask that just succeeded on the full path, when its inputs
    qualify: NumPy arrays, caches C-contiguous in native byte order and of one dtype (read
    in place), ``q`` of a float dtype."""
    if not plannable(q, k_cache, v_cache):
        return
    try:
        key = _plan_key(q, k_cache, v_cache, check_finite)
    except Exception:
        return
    status, scratch = _scratch(x.B, x.H, x.Hkv, x.S, x.d)
    view = None if x.k.dtype == k_cache.dtype else x.k.dtype
    add_plan(key, _Plan(x.k.shape, view, query_buffer(x.q.shape), x.mask, status, scratch))


def dense_attention_naive(*args, **kwargs) -> np.ndarray:
    """Deprecated name of :func:`dense_attention_twin` (kept for one release)."""
    warnings.warn(
        "dense_attention_naive is deprecated; use dense_attention_twin",
        DeprecationWarning,
        stacklevel=2,
    )
    return dense_attention_twin(*args, **kwargs)
