"""A whole request: prefill of a ``prompt_len``-token prompt, then ``gen_len`` decode steps.

Prefill (:func:`estimate_prefill`) is priced with the same roofline as a decode kernel,
``t0 + max(bytes / (eta_mem BW), FLOPs / (eta_flop peak))``, per op:

- the weights' GEMMs: every layer's weights once, ``2 x params x batch x prompt_len``
  FLOPs (compute-bound for any real prompt), the output projection for the last position
  only (the first generated token); one launch per layer plus one;
- causal attention of each layer (a fused flash-style kernel): ``2 x d x P (P + 1)`` FLOPs
  per query head (``QK^T`` and ``PV`` over the ``P (P + 1) / 2`` causal pairs); bytes: Q, K, V
  read once, the output written, and the KV cache written (K twice when SparQ keeps its
  transposed copy);
- with ``tp > 1``: two all-reduces per layer of ``batch x prompt_len x d_model``
  activations (:func:`costmodel.estimate.allreduce_time`).

SparQ does not change prefill (it is dense attention) except for writing the second copy of
K. Decode step ``i`` (``0 <= i < gen_len``) attends over ``S_i = prompt_len + i + 1``
positions (the prompt, the ``i`` tokens generated so far and the current one) and is
:func:`costmodel.estimate.estimate_decode` at that length, SparQ with ``k = floor(S_i /
k_divisor)``. Up to :data:`EXACT_STEPS` steps are summed one by one; a longer generation is
summed by the trapezoid rule over :data:`EXACT_STEPS` + 1 evenly spaced steps (the step time
is close to linear in ``S``; ``decode_sampled`` says which).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from costmodel import shapes as _shapes
from costmodel.estimate import (
    BUCKETED_TOPK_SPEEDUP,
    DecodeEstimate,
    _resolve_hw,
    _roofline,
    _size,
    allreduce_time,
    estimate_decode,
    ideal_hardware,
    tp_heads,
)
from costmodel.hardware import Hardware
from costmodel.shapes import ModelShape
from costmodel.traffic import dtype_bytes

__all__ = [
    "EXACT_STEPS",
    "MAX_GEN_LEN",
    "PrefillEstimate",
    "RequestEstimate",
    "estimate_prefill",
    "estimate_request",
]

#: decode steps summed one by one; more are summed by the trapezoid rule
EXACT_STEPS = 1024
#: largest ``gen_len`` (and ``prompt_len + gen_len``) a request estimate takes
MAX_GEN_LEN = 2**24


@dataclass(frozen=True)
class PrefillEstimate:
    """Prefill of one batch of prompts on one device (all ``tp`` devices in parallel).

    ``time_s = weights_s + attention_s + allreduce_s``; ``*_bound`` is the roofline bound of
    that part; bytes and FLOPs are one device's totals."""

    time_s: float
    weights_s: float
    weights_bytes: float
    weights_flops: float
    weights_bound: str
    attention_s: float
    attention_bytes: float
    attention_flops: float
    attention_bound: str
    allreduce_s: float
    kv_write_bytes: float
    allreduce_message_bytes: float = 0.0


@dataclass(frozen=True)
class RequestEstimate:
    """Prefill plus ``gen_len`` decode steps for ``batch`` requests.

    Attributes
    ----------
    time_s : float
        ``prefill.time_s + decode_s``.
    decode_s : float
        The sum of the decode steps.
    first_step, last_step : DecodeEstimate
        The first (``S = prompt_len + 1``) and last (``S = prompt_len + gen_len``) steps.
    decode_sampled : bool
        Whether the sum used the trapezoid rule (``gen_len > EXACT_STEPS``).
    tokens_per_s : float
        ``batch x gen_len / time_s``.
    """

    model: str
    hardware: str
    method: str
    batch: int
    prompt_len: int
    gen_len: int
    tp: int
    prefill: PrefillEstimate
    decode_s: float
    first_step: DecodeEstimate
    last_step: DecodeEstimate
    decode_sampled: bool
    time_s: float
    tokens_per_s: float


def estimate_prefill(
    model: ModelShape | str,
    *,
    hardware: Hardware | str,
    batch: int,
    prompt_len: int,
    dtype: str = "float16",
    weight_bytes_per_param: float | None = None,
    store_k_twice: bool = False,
    ideal: bool = False,
    tp: int = 1,
) -> PrefillEstimate:
    """Prefill time of ``batch`` prompts of ``prompt_len`` tokens (see the module docstring).

    ``store_k_twice`` adds the write of SparQ's second copy of K. Arguments are checked as in
    :func:`costmodel.estimate.estimate_decode`.
    """
    from costmodel._tomlio import check_bool, check_real
    from costmodel.estimate import MAX_WEIGHT_BYTES_PER_PARAM

    hw = _resolve_hw(hardware)
    if not isinstance(model, (ModelShape, str, os.PathLike)):
        raise TypeError(
            f"model: expected a ModelShape or a model name/path, got {type(model).__name__}"
        )
    m = _shapes._load(model, "model")
    B = _size("batch", batch)
    P = _size("prompt_len", prompt_len)
    store_k_twice = check_bool(store_k_twice, "store_k_twice")
    ideal = check_bool(ideal, "ideal")
    heads, kv = tp_heads(m, hw, tp)
    tp = int(tp)
    dname, e = dtype_bytes(dtype)
    wb = (
        float(e)
        if weight_bytes_per_param is None
        else check_real(
            "weight_bytes_per_param", weight_bytes_per_param, maximum=MAX_WEIGHT_BYTES_PER_PARAM
        )
    )
    hwe = ideal_hardware(hw) if ideal else hw
    bw = hwe.mem_efficiency * hwe.mem_bandwidth_bytes_per_s
    fl = hwe.flop_efficiency * hwe.peak_flops(dname)
    t0 = hwe.kernel_latency_s
    L, d = m.n_layers, m.head_dim
    layer_params = L * m.params_per_layer / tp
    head_params = m.params_read_per_step / tp - layer_params
    w_bytes = (layer_params + head_params) * wb
    w_flops = 2.0 * layer_params * B * P + 2.0 * head_params * B
    _, _, w_s, w_bound = _roofline(w_bytes, w_flops, bw, fl, (L + 1) * t0)
    kv_write = B * P * (3 if store_k_twice else 2) * kv * d * e
    a_bytes = L * (B * P * (2 * heads + 2 * kv) * d * e + kv_write)
    a_flops = L * 2.0 * B * heads * d * P * (P + 1)
    _, _, a_s, a_bound = _roofline(a_bytes, a_flops, bw, fl, L * t0)
    msg = float(B * P * m.d_model * e) if tp > 1 else 0.0
    ar_s = 2 * L * allreduce_time(msg, tp, hw, ideal=ideal)
    return PrefillEstimate(
        time_s=w_s + a_s + ar_s,
        weights_s=w_s,
        weights_bytes=w_bytes,
        weights_flops=w_flops,
        weights_bound=w_bound,
        attention_s=a_s,
        attention_bytes=a_bytes,
        attention_flops=a_flops,
        attention_bound=a_bound,
        allreduce_s=ar_s,
        kv_write_bytes=L * kv_write,
        allreduce_message_bytes=msg,
    )


def estimate_request(
    model: ModelShape | str,
    *,
    hardware: Hardware | str,
    batch: int,
    prompt_len: int,
    gen_len: int,
    method: str = "dense",
    dtype: str = "float16",
    weight_bytes_per_param: float | None = None,
    r: int | None = None,
    k_divisor: int = 16,
    store_k_twice: bool = True,
    gqa_selection: str = "shared",
    topk: str = "exact",
    bucketed_topk_speedup: float = BUCKETED_TOPK_SPEEDUP,
    ideal: bool = False,
    implementation: str = "fused",
    tp: int = 1,
) -> RequestEstimate:
    """Prefill plus ``gen_len`` decode steps (see the module docstring).

    ``method="sparq"`` uses ``r`` and ``k = floor(S / k_divisor)`` at every step (the prompt
    must be long enough for ``k >= 1`` at the first step). Other arguments as in
    :func:`costmodel.estimate.estimate_decode`; ``gen_len`` and ``prompt_len + gen_len`` are
    at most :data:`MAX_GEN_LEN`.
    """
    hw = _resolve_hw(hardware)
    m = _shapes._load(model, "model") if not isinstance(model, ModelShape) else model
    B = _size("batch", batch)
    P = _size("prompt_len", prompt_len)
    N = _size("gen_len", gen_len)
    if P + N > MAX_GEN_LEN:
        raise ValueError(
            f"gen_len: expected prompt_len + gen_len <= {MAX_GEN_LEN}, got {P} + {N} = {P + N}"
        )
    kdiv = _size("k_divisor", k_divisor)
    sparq = method == "sparq"
    if sparq and (P + 1) < kdiv:
        raise ValueError(
            f"prompt_len: k = floor(S / {kdiv}) would be 0 at the first step (S = {P + 1}); "
            f"expected prompt_len >= {kdiv - 1}, got {P}"
        )
    pre = estimate_prefill(
        m,
        hardware=hw,
        batch=B,
        prompt_len=P,
        dtype=dtype,
        weight_bytes_per_param=weight_bytes_per_param,
        store_k_twice=bool(sparq and store_k_twice),
        ideal=ideal,
        tp=tp,
    )
    common = dict(
        hardware=hw,
        batch=B,
        method=method,
        dtype=dtype,
        weight_bytes_per_param=weight_bytes_per_param,
        ideal=ideal,
        implementation=implementation,
        tp=tp,
    )
    if sparq:
        common.update(
            store_k_twice=store_k_twice,
            gqa_selection=gqa_selection,
            topk=topk,
            bucketed_topk_speedup=bucketed_topk_speedup,
        )

    def step(i: int) -> DecodeEstimate:
        S = P + i + 1
        extra = dict(r=r, k=S // kdiv) if sparq else {}
        return estimate_decode(m, seq_len=S, **common, **extra)

    sampled = N > EXACT_STEPS
    if not sampled:
        steps = [step(i) for i in range(N)]
        decode_s = sum(s.time_s for s in steps)
        first, last = steps[0], steps[-1]
    else:
        idx = [round(j * (N - 1) / EXACT_STEPS) for j in range(EXACT_STEPS + 1)]
        steps = [step(i) for i in idx]
        decode_s = 0.0
        for j in range(EXACT_STEPS):
            decode_s += (idx[j + 1] - idx[j]) * (steps[j].time_s + steps[j + 1].time_s) / 2
        decode_s += (steps[0].time_s + steps[-1].time_s) / 2  # the end points count once each
        first, last = steps[0], steps[-1]
    total = pre.time_s + decode_s
    return RequestEstimate(
        model=m.name,
        hardware=hw.name,
        method=method,
        batch=B,
        prompt_len=P,
        gen_len=N,
        tp=int(tp),
        prefill=pre,
        decode_s=decode_s,
        first_step=first,
        last_step=last,
        decode_sampled=sampled,
        time_s=total,
        tokens_per_s=B * N / total,
    )
