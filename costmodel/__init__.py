"""Roofline cost model for decode attention and the recall theory of bucketed top-k."""

from costmodel.recall import (  # noqa: F401  (recall theory of bucketed top-k, issue 4)
    MODELS,
    RecallDistribution,
    SimulationResult,
    bins_for_recall_xla,
    buckets_for_recall,
    expected_recall,
    expected_recall_kb1,
    expected_recall_multinomial_kb1,
    expected_recall_xla,
    k_per_bucket_for_recall,
    recall_distribution,
    recall_lower_bound_kb1,
    simulate_recall,
    xla_reduction_output_size,
)
