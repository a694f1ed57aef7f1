"""Eager (op-by-op) decode attention timed by wall clock: ``implementation="eager"``.

The fused model (:mod:`costmodel.estimate`) prices one tuned kernel per step, timed on the
device. An eager implementation issues one framework op at a time from the host and is timed
the way the paper's public SparQ microbenchmark times a call: synchronise, start the clock,
call, synchronise, stop the clock. This module lists the ops each method issues
(:func:`eager_ops`) and prices them (:func:`price_eager`):

- every op costs the host ``dispatch(op)`` (the profile's ``host_dispatch_*_s`` by op class,
  measured in a hot loop of one op), and every kernel op after the first of a call
  ``host_dispatch_mixed_s`` more (a sequence of different ops, issued after a
  synchronisation, runs colder than a hot loop);
- an op that launches a kernel runs on the device for ``latency + max(bytes / (eta BW),
  flops / (eta peak))`` (top-k ops: ``topk latency + bytes / topk rate``), where latency is
  ``kernel_latency_s`` for the method's main kernels (fused attention, the step-1 kernel)
  and ``op_device_s`` for the generic framework ops, which stream at ``op_mem_efficiency x
  BW`` instead of ``mem_efficiency x BW`` when the profile gives it; a kernel cannot start
  before the host has issued it nor before the previous kernel has finished (one stream);
- the call ends when both the host and the device are done, plus ``sync_latency_s``.

On a CPU (profile ``kind = "cpu"``) the framework runs each op on the calling thread's pool
before returning: host and device times add up (no overlap).

Op lists (per call, i.e. per layer; every op works on the whole batch):

dense (1 op): ``scaled_dot_product_attention`` (class ``attention``, the fused kernel's
bytes and FLOPs).

sparq (22 kernel ops, 7 views), the public microbenchmark's ``sparq_attn`` with its custom
step-1 kernel:

==  =====================================  ===========  ======================================
#   op                                     class        bytes per (sequence, KV head)
==  =====================================  ===========  ======================================
1   ``abs(q)``                             elementwise  ``2 g d e``
2   ``topk(|q|, r)``                       topk         ``g d e + g r (e + 8)``
3   ``sum`` of the r largest ``|q|``       elementwise  ``g r e + g e``
4   ``sum |q|``                            elementwise  ``g d e + g e``
5-7 ``d * a``, ``/ b``, ``sqrt``           elementwise  ``2 g e``, ``3 g e``, ``2 g e``
8   step 1: gather r rows of K^T, q . k    custom       the fused step-1 kernel's bytes
9   scores ``/ scale`` (in place)          elementwise  ``2 n_sel S e``
10  ``softmax`` of the scores              elementwise  ``2 n_sel S e``
11  ``topk(scores, k)``                    topk         ``n_sel (S e + k (e + 8))``
12  gather k rows of K                     elementwise  ``n_sel k (row + 8 + d e)``
13  gather k rows of V                     elementwise  ``n_sel k (row + 8 + d e)``
14  ``q @ K_g^T``                          matmul       ``n_sel k d e + g d e + g k e``
15  ``/ sqrt(d)`` (in place)               elementwise  ``2 g k e``
16  ``softmax``                            elementwise  ``2 g k e``
17  ``p @ V_g``                            matmul       ``g k e + n_sel k d e + g d e``
18  ``alpha = sum`` of top-k scores        elementwise  ``n_sel k e + g e``
19  ``alpha * y``                          elementwise  ``3 g d e``
20  ``1 - alpha``                          elementwise  ``2 g e``
21  ``(1 - alpha) * v_mean``               elementwise  ``d e + g e + g d e``
22  ``+``                                  elementwise  ``3 g d e``
==  =====================================  ===========  ======================================

(``row = ceil(d e / T) T``; ``n_sel`` selections per KV head; step 1's bytes are the fused
model's ``step1_columns + step1_q_scores``, with K stored twice or once.) The 7 views
(index/expand of the top-k indices, the transpose in ``q @ K^T`` and four reshapes around
the custom kernel) cost ``host_dispatch_view_s`` each and launch nothing. The custom step-1
kernel runs one program per (sequence, query head) row: with
``program_bandwidth_bytes_per_s`` in the profile its bandwidth is at most ``rows x`` that.
The public microbenchmark neither appends k, v to the cache nor updates ``v_mean``; neither
does this list.

Other methods have no eager op list (a ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.hardware import Hardware
from costmodel.traffic import Traffic, _check_int

__all__ = [
    "EagerOp",
    "eager_ops",
    "price_eager",
    "op_bandwidth",
    "OP_CLASSES",
    "SPARQ_KERNEL_OPS",
]

#: op classes and the profile field that prices their host dispatch
OP_CLASSES = {
    "elementwise": "host_dispatch_s",
    "matmul": "host_dispatch_matmul_s",
    "topk": "host_dispatch_topk_s",
    "attention": "host_dispatch_attention_s",
    "custom": "host_dispatch_custom_s",
    "view": "host_dispatch_view_s",
}
#: kernel-launching ops of SparQ's eager list
SPARQ_KERNEL_OPS = 22
_SPARQ_VIEWS = 7


@dataclass(frozen=True)
class EagerOp:
    """One framework op of an eager call (totals over the batch, heads and layers).

    ``main`` ops (fused attention, the step-1 kernel) take ``kernel_latency_s`` as their
    device floor, the others ``op_device_s``; ``rows`` is the number of programs of a
    one-program-per-row kernel (0: not such a kernel).
    """

    name: str
    op_class: str
    bytes: float
    flops: float
    main: bool = False
    rows: int = 0


def eager_ops(
    traffic: Traffic,
    *,
    batch: int,
    n_heads: int,
    n_kv_heads: int,
    seq_len: int,
    head_dim: int,
    r: int | None,
    k: int | None,
    gqa_selection: str,
    transaction_bytes: int,
    n_layers: int,
) -> list[EagerOp]:
    """The op list of one eager call (see the module docstring), repeated ``n_layers``
    times; bytes from ``traffic`` (the fused byte model of the same call) where a step is
    the same. The shape must be the one ``traffic`` was computed for (sizes positive
    integers, ``n_heads`` a multiple of ``n_kv_heads``)."""
    if not isinstance(traffic, Traffic):
        raise TypeError(f"traffic: expected a Traffic, got {type(traffic).__name__}")
    for name, value in (("batch", batch), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads),
                        ("seq_len", seq_len), ("head_dim", head_dim), ("n_layers", n_layers),
                        ("transaction_bytes", transaction_bytes)):  # fmt: skip
        _check_int(name, value)
    if n_heads % n_kv_heads:
        raise ValueError(
            f"n_heads: expected a multiple of n_kv_heads ({n_kv_heads}), got {n_heads}"
        )
    m = traffic.method
    if m == "dense":
        ops = [
            EagerOp(
                "sdpa", "attention", traffic.bytes / n_layers, traffic.flops / n_layers, main=True
            )
        ]
        return ops * n_layers
    if m != "sparq":
        raise ValueError(
            f"method: implementation='eager' has op lists for 'dense' and 'sparq', got {m!r}"
        )
    r, k = _check_int("r", r), _check_int("k", k)
    if gqa_selection not in ("shared", "per_head"):
        raise ValueError(f"gqa_selection: expected 'shared' or 'per_head', got {gqa_selection!r}")
    e = traffic.dtype_bytes
    d = head_dim
    g = n_heads // n_kv_heads
    S_steps = {s.name: s for s in traffic.steps}
    n_kv = batch * n_kv_heads  # per layer
    n_sel = 1 if gqa_selection == "shared" else g
    T = transaction_bytes
    row = -(-d * e // T) * T
    S = seq_len
    step1_bytes = (S_steps["step1_columns"].bytes + S_steps["step1_q_scores"].bytes) / n_layers
    step1_flops = S_steps["step1_columns"].flops / n_layers

    def per(b):
        return float(n_kv * b)

    ops = [
        EagerOp("abs_q", "elementwise", per(2 * g * d * e), per(g * d)),
        EagerOp("topk_q", "topk", per(g * d * e + g * r * (e + 8)), 0.0),
        EagerOp("sum_top_q", "elementwise", per(g * r * e + g * e), per(g * r)),
        EagerOp("sum_q", "elementwise", per(g * d * e + g * e), per(g * d)),
        EagerOp("scale_mul", "elementwise", per(2 * g * e), per(g)),
        EagerOp("scale_div", "elementwise", per(3 * g * e), per(g)),
        EagerOp("scale_sqrt", "elementwise", per(2 * g * e), per(g)),
        EagerOp(
            "step1", "custom", step1_bytes, step1_flops, main=True, rows=batch * n_kv_heads * n_sel
        ),
        EagerOp("scores_div", "elementwise", per(2 * n_sel * S * e), per(n_sel * S)),
        EagerOp("scores_softmax", "elementwise", per(2 * n_sel * S * e), per(5 * n_sel * S)),
        EagerOp("topk_scores", "topk", per(n_sel * (S * e + k * (e + 8))), 0.0),
        EagerOp("gather_k", "elementwise", per(n_sel * k * (row + 8 + d * e)), 0.0),
        EagerOp("gather_v", "elementwise", per(n_sel * k * (row + 8 + d * e)), 0.0),
        EagerOp("qk", "matmul", per(n_sel * k * d * e + g * d * e + g * k * e), per(2 * g * k * d)),
        EagerOp("qk_div", "elementwise", per(2 * g * k * e), per(g * k)),
        EagerOp("softmax", "elementwise", per(2 * g * k * e), per(5 * g * k)),
        EagerOp("pv", "matmul", per(g * k * e + n_sel * k * d * e + g * d * e), per(2 * g * k * d)),
        EagerOp("alpha", "elementwise", per(n_sel * k * e + g * e), per(n_sel * k)),
        EagerOp("alpha_y", "elementwise", per(3 * g * d * e), per(g * d)),
        EagerOp("one_minus_alpha", "elementwise", per(2 * g * e), per(g)),
        EagerOp("mix_v_mean", "elementwise", per(d * e + g * e + g * d * e), per(g * d)),
        EagerOp("add", "elementwise", per(3 * g * d * e), per(g * d)),
    ]
    ops += [EagerOp(f"view{i + 1}", "view", 0.0, 0.0) for i in range(_SPARQ_VIEWS)]
    return ops * n_layers


def dispatch_s(hw: Hardware, op_class: str) -> float:
    """Host time of one op of ``op_class`` on ``hw`` (class field, else ``host_dispatch_s``;
    views 0 without their field)."""
    v = getattr(hw, OP_CLASSES[op_class])
    if v is not None:
        return v
    return 0.0 if op_class == "view" else hw.host_dispatch_s


def device_s(op: EagerOp, hw: Hardware, *, eff_bw: float, eff_flops: float) -> float:
    """Device time of one op on ``hw`` (0 for a view)."""
    if op.op_class == "view":
        return 0.0
    if op.op_class == "topk":
        lat = hw.topk_latency_s if hw.topk_latency_s is not None else hw.kernel_latency_s
        return lat + op.bytes / hw.topk_bytes_per_s
    if op.main:
        lat = hw.kernel_latency_s
    else:
        lat = hw.op_device_s if hw.op_device_s is not None else hw.kernel_latency_s
    return lat + max(op.bytes / op_bandwidth(op, hw, eff_bw), op.flops / eff_flops)


def op_bandwidth(op: EagerOp, hw: Hardware, eff_bw: float) -> float:
    """Bandwidth an op streams at: ``eff_bw`` (``mem_efficiency`` x the memory it reads) for
    the main kernels, capped at ``rows x program_bandwidth_bytes_per_s`` for a
    one-program-per-row kernel; the generic framework ops at ``op_mem_efficiency /
    mem_efficiency`` of it when the profile gives ``op_mem_efficiency`` (on a CPU every op:
    they are all the framework's own kernels)."""
    bw = eff_bw
    if (hw.kind == "cpu" or not op.main) and hw.op_mem_efficiency is not None:
        bw = eff_bw * hw.op_mem_efficiency / hw.mem_efficiency
    if op.rows and hw.program_bandwidth_bytes_per_s is not None:
        bw = min(bw, op.rows * hw.program_bandwidth_bytes_per_s)
    return bw


def price_eager(
    ops: list[EagerOp], hw: Hardware, *, eff_bw: float, eff_flops: float, n_calls: int
) -> dict:
    """Wall time of ``n_calls`` eager calls issuing ``ops`` (split evenly) on ``hw``.

    Returns ``{"time_s", "host_s", "device_s", "sync_s", "per_op": [(name, class, host,
    device)]}``: ``host_s`` is the total dispatch time, ``device_s`` the summed device time,
    ``time_s`` the wall time of the pipeline (GPU: host and device overlap, one stream; CPU:
    they add up) plus one ``sync_latency_s`` (the ``n_calls`` layers are issued back to back
    and synchronised once, as a decode step is).
    """
    missing = [f for f in ("host_dispatch_s", "sync_latency_s") if getattr(hw, f) is None]
    if missing:
        raise ValueError(
            f"hardware: implementation='eager' needs the profile fields {missing}, which "
            f"profile {hw.name!r} does not give (see `sparq hardware calibrate`)"
        )
    per_op = []
    t_host = t_dev = 0.0
    host_total = dev_total = 0.0
    cpu = hw.kind == "cpu"
    mixed = hw.host_dispatch_mixed_s or 0.0
    first = True
    for op in ops:
        h = dispatch_s(hw, op.op_class)
        if op.op_class != "view":
            h += 0.0 if first else mixed
            first = False
        dv = device_s(op, hw, eff_bw=eff_bw, eff_flops=eff_flops)
        per_op.append((op.name, op.op_class, h, dv))
        host_total += h
        dev_total += dv
        t_host += h
        if cpu:
            t_host += dv
        elif op.op_class != "view":
            t_dev = max(t_host, t_dev) + dv
    del n_calls  # one synchronisation whatever the number of layers
    sync = hw.sync_latency_s
    return {
        "time_s": max(t_host, t_dev) + sync,
        "host_s": host_total,
        "device_s": dev_total,
        "sync_s": sync,
        "per_op": per_op,
    }
