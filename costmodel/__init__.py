"""Roofline cost model for decode attention and the recall theory of bucketed top-k.

- :mod:`costmodel.traffic` — elements per head per step (paper Eq. 3, 11) and a byte model
- :mod:`costmodel.estimate` — roofline time per kernel and per whole decode step
  (``implementation="fused"``, ``"eager"`` via :mod:`costmodel.eager`, ``"reference"``),
  tensor parallelism (``tp=``) and the per-op breakdown (:func:`decode_ops`)
- :mod:`costmodel.request` — a whole request: prefill plus the growing decode steps
- :mod:`costmodel.calibration` — fit a profile to ``sparq hardware calibrate`` measurements
- :mod:`costmodel.hardware` / :mod:`costmodel.shapes` — sourced TOML profiles and model shapes
  (:mod:`costmodel.hfconfig`: shapes from a Hugging Face ``config.json``)
- :mod:`costmodel.recall` — expected recall of bucketed top-k, closed forms and simulation
"""

from costmodel.estimate import (
    DecodeEstimate,
    Estimate,
    OpCost,
    Speedup,
    attention_transfer_fraction,
    decode_ops,
    estimate_attention,
    estimate_decode,
    speedup,
)
from costmodel.hardware import (
    Hardware,
    hardware_from_spec,
    list_hardware,
    load_hardware,
    measure_host,
)
from costmodel.recall import (
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
from costmodel.request import PrefillEstimate, RequestEstimate, estimate_prefill, estimate_request
from costmodel.shapes import ModelShape, list_models, load_model
from costmodel.traffic import attention_traffic, compression_ratio, transfers

__all__ = [
    "MODELS",
    "DecodeEstimate",
    "Estimate",
    "Hardware",
    "ModelShape",
    "OpCost",
    "PrefillEstimate",
    "RequestEstimate",
    "RecallDistribution",
    "SimulationResult",
    "Speedup",
    "attention_traffic",
    "attention_transfer_fraction",
    "bins_for_recall_xla",
    "buckets_for_recall",
    "compression_ratio",
    "decode_ops",
    "estimate_attention",
    "estimate_decode",
    "estimate_prefill",
    "estimate_request",
    "expected_recall",
    "expected_recall_kb1",
    "expected_recall_multinomial_kb1",
    "expected_recall_xla",
    "hardware_from_spec",
    "k_per_bucket_for_recall",
    "list_hardware",
    "list_models",
    "load_hardware",
    "load_model",
    "measure_host",
    "recall_distribution",
    "recall_lower_bound_kb1",
    "simulate_recall",
    "speedup",
    "transfers",
    "xla_reduction_output_size",
]
