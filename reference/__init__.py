"""Ground-truth reference implementations for SparQ Attention and top-k.

Every algorithm has a float64 NumPy twin (``*_twin``, the truth, readable next to the paper)
and a Numba-parallel kernel used by the public function; tests bound their difference.
"""

from reference._checks import as_int as check_int
from reference._config import (
    CACHE,
    FASTMATH,
    get_num_threads,
    njit_parallel,
    njit_serial,
    set_num_threads,
)
from reference.dense import dense_attention, dense_attention_naive, dense_attention_twin
from reference.selection import (
    bucket_params_from_public,
    bucket_sizes,
    bucketed_topk,
    bucketed_topk_twin,
    topk,
    topk_twin,
)
from reference.sparq import (
    SparqSteps,
    sparq_attention,
    sparq_attention_naive,
    sparq_attention_twin,
    transpose_keys,
)

__all__ = [
    # the project's one Numba configuration (flags, cache, threads), for code outside reference
    "CACHE",
    "FASTMATH",
    "njit_parallel",
    "njit_serial",
    # the one integer-argument check (costmodel uses it too)
    "check_int",
    "SparqSteps",
    "bucket_params_from_public",
    "bucket_sizes",
    "bucketed_topk",
    "bucketed_topk_twin",
    "topk",
    "topk_twin",
    "dense_attention",
    "dense_attention_naive",  # deprecated name of dense_attention_twin
    "dense_attention_twin",
    "get_num_threads",
    "set_num_threads",
    "sparq_attention",
    "sparq_attention_naive",  # deprecated name of sparq_attention_twin
    "sparq_attention_twin",
    "transpose_keys",
]
