"""Ground-truth reference implementations for SparQ Attention and top-k."""

from reference._config import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "set_num_threads"]
