"""Ground-truth reference implementations for SparQ Attention and top-k.

Every algorithm has a float64 NumPy twin (``*_naive``, the truth, readable next to the paper)
and a Numba-parallel kernel used by the public function; tests bound their difference.
"""

from reference._config import get_num_threads, set_num_threads
from reference.dense import dense_attention, dense_attention_naive
from reference.selection import (
    bucket_params_from_public,
    bucket_sizes,
    bucketed_topk,
    bucketed_topk_twin,
    topk,
    topk_twin,
)
from reference.sparq import SparqSteps, sparq_attention, sparq_attention_naive, transpose_keys

__all__ = [
    "SparqSteps",
    "bucket_params_from_public",
    "bucket_sizes",
    "bucketed_topk",
    "bucketed_topk_twin",
    "topk",
    "topk_twin",
    "dense_attention",
    "dense_attention_naive",
    "get_num_threads",
    "set_num_threads",
    "sparq_attention",
    "sparq_attention_naive",
    "transpose_keys",
]
