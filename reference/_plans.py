"""What the planned calls of ``dense_attention`` and ``sparq_attention`` share (docs/sparq.md,
"Planned calls"): which inputs may be planned, the look-up of a call's plan with the checks
of its caches, and the aligned query buffer a plan holds. The plans themselves live per
Python thread beside the scratch they view (:func:`reference._workspace.plans`)."""

from __future__ import annotations

import numpy as np

from reference._checks import Q_ALIGN, _is_bfloat16
from reference._workspace import plans


def plannable(q, k_cache, v_cache) -> bool:
    """Whether a call that passed the full path with these arrays may be planned: NumPy
    arrays (no subclass), caches C-contiguous in native byte order and of one dtype (so
    that the full path read them in place), ``q`` of a float dtype it widened exactly."""
    if type(q) is not np.ndarray or type(k_cache) is not np.ndarray:
        return False
    if type(v_cache) is not np.ndarray or k_cache.dtype != v_cache.dtype:
        return False
    for a in (k_cache, v_cache):
        if not (a.flags.c_contiguous and a.dtype.isnative):
            return False
    return q.dtype.kind == "f" and q.dtype.itemsize in (2, 4, 8) or _is_bfloat16(q.dtype)


def find(q, k_cache, v_cache, make_key):
    """``(plan, k, v)``: the plan under ``make_key()`` and the caches as the kernels read them
    (viewed as ``plan.view`` for 16-bit dtypes), or None when there is none or the caches
    no longer match it (then the caller takes its full path). A key that fails to hash
    in any way counts as no plan: the full path names the option."""
    if type(q) is not np.ndarray or type(k_cache) is not np.ndarray:
        return None
    if type(v_cache) is not np.ndarray:
        return None
    try:
        plan = plans().get(make_key())
    except Exception:
        return None
    if plan is None or v_cache.shape != plan.kv_shape:
        return None
    if not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        return None
    if plan.view is not None:
        return plan, k_cache.view(plan.view), v_cache.view(plan.view)
    return plan, k_cache, v_cache


def query_buffer(shape: tuple) -> np.ndarray:
    """An uninitialised float64 array of ``shape`` whose data starts on a :data:`Q_ALIGN`
    byte boundary (where the kernels want ``q``), for a plan to copy each call's ``q``
    into."""
    n = int(np.prod(shape))
    buf = np.empty(n + Q_ALIGN // 8)
    off = (-buf.ctypes.data % Q_ALIGN) // 8
    return buf[off : off + n].reshape(shape)
