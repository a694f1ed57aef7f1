"""Emulated low precision: what a *naive* same-precision implementation computes.

The float64 path is the truth. To say how much error a GPU kernel in float16/bfloat16 may
reasonably make, the twins can run with a :class:`Precision` that rounds at the points a
straightforward kernel (or the evaluation code in PyTorch) would: tensors are *stored* in the
low dtype (inputs, approximate logits, weights, alpha, v_mean, outputs) while reductions,
matrix products and softmax *accumulate* in float32. The flash-attention test rule then
bounds a kernel's error by a multiple of this naive error (see ``docs/validation.md``).

bfloat16 rounding is emulated on float32 bit patterns (round to nearest, ties to even), so no
extra dependency is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISIONS = ("float64", "float32", "float16", "bfloat16")


def round_to(x, precision: str) -> np.ndarray:
    """Round ``x`` to the nearest value of ``precision`` (returned as float64).

    Round-to-nearest-even as the hardware conversions do; values beyond the dtype's range
    become ±inf (float16 max is 65504, bfloat16 max about 3.39e38).
    """
    x = np.asarray(x, dtype=np.float64)
    if precision == "float64":
        return x.copy()
    if precision == "float32":
        return x.astype(np.float32).astype(np.float64)
    if precision == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float64)
    if precision == "bfloat16":
        return _round_bf16(x.astype(np.float32)).astype(np.float64)
    raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


def _round_bf16(x32: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (kept in float32), ties to even; finite inputs only.

    Adding ``0x7FFF + lsb`` to the bit pattern and clearing the low 16 bits rounds the
    magnitude to nearest-even; a carry into the exponent is the correct next binade, and
    from the largest finite values it gives the ±inf pattern (as the hardware does). For
    finite float32 input the sum never exceeds 32 bits (the largest is 0xFF7FFFFF)."""
    bits = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (bits >> 16) & 1
    rounded = (bits + 0x7FFF + lsb) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


@dataclass(frozen=True)
class Precision:
    """Where a naive kernel of a given dtype rounds: ``store`` after every stored tensor,
    arithmetic in ``acc`` (float32 for the low dtypes, float64 for the truth).

    ``reorder=True`` computes the same quantities by another, equally legitimate route
    (scale the query before the dot product instead of the product after it; alpha as one
    minus the unselected mass; the output as ``y + (1 - alpha)(v_mean - y)``). Running both
    estimates the spread between same-precision implementations, as flash-attention's tests
    do by reordering the naive reference on purpose."""

    name: str
    reorder: bool = False

    def __post_init__(self):
        if self.name not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.name!r}")

    @property
    def acc(self):
        return np.float64 if self.name == "float64" else np.float32

    def store(self, x) -> np.ndarray:
        """Round to the storage dtype; return in the accumulation dtype."""
        if self.name == "float64":
            return np.asarray(x, dtype=np.float64)
        return round_to(x, self.name).astype(self.acc)

    def store_input(self, name: str, x: np.ndarray, valid=None) -> np.ndarray:
        """Round an input array to the storage dtype (returned as float64).

        A valid entry that overflows the dtype is an error naming ``name``; entries where the
        boolean ``valid`` (broadcast against ``x``) is False may overflow: they are never
        read."""
        if self.name == "float64":
            return x
        y = self.store(x).astype(np.float64)
        bad = ~np.isfinite(y)
        if valid is not None:
            bad &= valid
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: value {x[idx]:.6g} at index {idx} overflows {self.name}; it cannot be"
                f" stored in the emulated precision"
            )
        return y

    # The rounding routes: each computes one quantity of the paper's Algorithm 1 in one of
    # two equally legitimate orders (``reorder``), rounding the result to the storage dtype.

    def scaled_dot(self, A: np.ndarray, x: np.ndarray, scale) -> np.ndarray:
        """``(A @ x) / scale``, or ``A @ (x / scale)`` with ``reorder`` (logits, Alg. 1
        lines 2 and 7)."""
        if self.reorder:
            return self.store(A @ (x / scale))
        return self.store((A @ x) / scale)

    def mass(self, p: np.ndarray, picked: np.ndarray):
        """Softmax mass of ``p`` on ``picked``: ``sum(p[picked])``, or ``1 - sum(p[~picked])``
        with ``reorder`` (alpha, Alg. 1 line 5); not rounded (the caller stores a vector)."""
        if self.reorder:
            return 1 - p[~picked].sum()
        return p[picked].sum()

    def mix(self, alpha: np.ndarray, y: np.ndarray, v_mean: np.ndarray) -> np.ndarray:
        """``alpha y + (1 - alpha) v_mean``, or ``y + (1 - alpha)(v_mean - y)`` with
        ``reorder`` (Alg. 1 line 8); ``alpha`` (G,), ``y`` (G, d), ``v_mean`` (d,)."""
        a = alpha[:, None]
        if self.reorder:
            return self.store(y + (1.0 - a) * (v_mean[None, :] - y))
        return self.store(a * y + (1.0 - a) * v_mean[None, :])


TRUTH = Precision("float64")
