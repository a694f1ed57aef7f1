"""Small LLVM IR helpers shared by the kernels' explicit vector code (``llvmlite.ir``)."""

from __future__ import annotations

from llvmlite import ir


def splat(builder, val, vt):
    """``val`` in every lane of the vector type ``vt`` (LLVM IR)."""
    i32 = ir.IntType(32)
    zero = ir.Constant(ir.VectorType(i32, vt.count), [0] * vt.count)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), zero)
