"""Fit a hardware profile to the measurements of ``sparq hardware calibrate``.

:func:`fit_profile` takes the measurement dict written by :func:`costmodel._calibrate.measure`
(torch needed only there) and a base profile (datasheet numbers: bandwidth, peaks, capacity),
and returns the calibrated profile plus a report. Nothing here needs torch.

What is fitted, and on what (every fit is least squares on relative errors):

- ``mem_efficiency`` and ``kernel_latency_s``: ``t = t0 + bytes / (eta * BW)`` to the device
  time of the best dense SDPA backend per (batch, S) point (the fused model's meaning), on
  half of the grid (a checkerboard: point ``(i, j)`` of the batch x S grid is fitted when
  ``i + j`` is even); the other half is predicted and its error reported;
- ``topk_latency_s`` and ``topk_bytes_per_s``: ``t = t0_k + rows*(n*e + 8*k) / rate`` to
  ``torch.topk`` on half of its (rows, n) grid, the other half predicted;
- ``program_bandwidth_bytes_per_s``: the step-1 kernel of the op-by-op SparQ (one program
  per row), ``t = t0 + bytes / min(eta BW, rows * p)``, on half of its (batch, S) grid;
- read directly, not fitted: ``host_dispatch_*_s`` (host time per op class),
  ``op_device_s`` (device time of small ops), ``sync_latency_s`` (a synchronised tiny op's
  wall time less its dispatch and device time), ``onchip_bytes`` (the device's L2 size).

Eager wall-clock times (dense SDPA and the op-by-op SparQ) are never fitted: the report
compares them with ``estimate_attention(..., implementation="eager")`` on the calibrated
profile.
"""

from __future__ import annotations

import datetime
import statistics

import numpy as np

from costmodel._tomlio import check_number, show
from costmodel.estimate import estimate_attention
from costmodel.hardware import Hardware
from costmodel.traffic import DTYPE_BYTES, attention_traffic, dtype_bytes

__all__ = [
    "fit_profile",
    "fit_line_relative",
    "checkerboard",
    "report_markdown",
    "SDPA_BACKENDS",
    "ELEMENTWISE_OPS",
]

#: fused SDPA backends the best dense time is taken over (math and the op-by-op are not fused)
SDPA_BACKENDS = ("default", "cudnn", "flash", "efficient")
#: small framework ops whose host and device times give host_dispatch_s and op_device_s
ELEMENTWISE_OPS = ("add", "mul", "div", "abs", "sqrt", "rsub", "sum", "softmax", "gather")
#: per grid section: the shape keys every row must have, and the measured times (seconds) a
#: row may have; each is checked (positive integers, positive finite times) before fitting
_SHAPE_KEYS = {
    "dense": ("batch", "heads", "seq_len", "head_dim"),
    "topk": ("rows", "n", "k"),
    "sparq": ("batch", "heads", "seq_len", "head_dim", "r", "k"),
}
_TIME_KEYS = {
    "dense": tuple(f"{b}_device_s" for b in SDPA_BACKENDS) + ("default_wall_s",),
    "topk": ("time_s",),
    "sparq": tuple(
        f"{mode}_{t}_s" for mode in ("twice", "once") for t in ("step1_device", "device", "wall")
    ),
}


def _check_measurements(meas: dict) -> int:
    """``ValueError`` naming the entry (``meas['dense'][3]['default_device_s']: ...``) for
    anything the fit would divide by or take a size from that is not a positive number;
    returns the bytes per element of ``meas['dtype']``."""
    dtype = meas.get("dtype", "float16")
    try:
        _, e = dtype_bytes(dtype)
    except (TypeError, ValueError):
        raise ValueError(
            f"meas['dtype']: expected one of {sorted(DTYPE_BYTES)}, got {show(dtype)}"
        ) from None

    def positive(value, label, integer=False):
        check_number(
            value, label, minimum=0, strict_min=True, integer=integer, type_error=ValueError
        )

    for sec, shape_keys in _SHAPE_KEYS.items():
        rows = meas.get(sec) or []
        if not isinstance(rows, list):
            raise ValueError(f"meas[{sec!r}]: expected a list of rows, got {show(rows)}")
        for i, row in enumerate(rows):
            where = f"meas[{sec!r}][{i}]"
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a dict, got {show(row)}")
            for key in shape_keys:
                if key not in row:
                    raise ValueError(f"{where}: expected a key {key!r}, got keys {sorted(row)}")
                positive(row[key], f"{where}[{key!r}]", integer=True)
            for key in _TIME_KEYS[sec]:
                if key in row:
                    positive(row[key], f"{where}[{key!r}]")
    for i, row in enumerate(meas.get("read") or []):
        for key in ("bytes", "bytes_per_s"):
            positive(row[key], f"meas['read'][{i}][{key!r}]")
    hops = meas.get("host_ops") or {}
    if not isinstance(hops, dict):
        raise ValueError(f"meas['host_ops']: expected a dict of ops, got {show(hops)}")
    for op, row in hops.items():
        for key in ("host_s", "device_s"):
            if isinstance(row, dict) and key in row:
                positive(row[key], f"meas['host_ops'][{op!r}][{key!r}]")
    sync = meas.get("host_sync") or {}
    if "tiny_op_round_trip_s" in sync:
        positive(sync["tiny_op_round_trip_s"], "meas['host_sync']['tiny_op_round_trip_s']")
    if meas.get("l2_bytes"):
        positive(meas["l2_bytes"], "meas['l2_bytes']")
    return e


def fit_line_relative(x, y) -> tuple[float, float]:
    """``(a, b)`` minimising ``sum(((a + b*x) / y - 1)**2)`` (relative least squares),
    ``a >= 0``, ``b > 0`` (a negative intercept or a non-positive slope is refitted as
    ``a = 0``)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"x, y: expected two 1-d arrays of the same length >= 2, got shapes {x.shape} "
            f"and {y.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x: expected finite values, got {show(x.tolist())}")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(
            f"y: expected positive finite values (they divide), got {show(y.tolist())}"
        )
    A = np.stack([1 / y, x / y], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
    if a < 0 or b <= 0:  # no intercept, or times that do not grow with x: a = 0, b > 0
        a = 0.0
        b = float(np.sum(x / y) / np.sum((x / y) ** 2))
    return float(a), float(b)


def checkerboard(keys_a, keys_b, a, b) -> bool:
    """True when grid point ``(a, b)`` is in the fitted half: ``(index(a) + index(b))`` even
    over the sorted distinct values."""
    return (sorted(set(keys_a)).index(a) + sorted(set(keys_b)).index(b)) % 2 == 0


def _err(pred: float, meas: float) -> float:
    return pred / meas - 1


def _dense_bytes(B, Hh, S, d, dtype, T) -> float:
    return attention_traffic(
        "dense",
        batch=B,
        n_heads=Hh,
        n_kv_heads=Hh,
        seq_len=S,
        head_dim=d,
        dtype=dtype,
        transaction_bytes=T,
    ).bytes


def _fit_mask(points, section: str, a: str = "batch", b: str = "seq_len") -> list[bool]:
    """Per point (a dict with keys ``a`` and ``b``): in the fitted half of the checkerboard;
    ``ValueError`` naming ``meas[section]`` when that half has fewer than 2 points (a grid
    search would otherwise return its first value, fitted to nothing)."""
    As = [p[a] for p in points]
    Bs = [p[b] for p in points]
    fit = [checkerboard(As, Bs, p[a], p[b]) for p in points]
    if sum(fit) < 2:
        raise ValueError(
            f"meas[{section!r}]: expected at least 2 points with (index({a}) + index({b})) "
            f"even to fit on, got {sum(fit)} of {len(points)}"
        )
    return fit


def _grid_search(grid, model, points, fit, key: str) -> float:
    """The value ``g`` of ``grid`` minimising ``sum((model(p, g) / p[key] - 1)**2)`` over the
    fitted points (relative least squares; the first on ties)."""
    loss = [
        sum((model(p, g) / p[key] - 1) ** 2 for p, f in zip(points, fit, strict=True) if f)
        for g in grid
    ]
    return float(grid[int(np.argmin(loss))])


def _row(section: str, p: dict, measured_s: float, predicted_s: float, role: str) -> dict:
    """A report row of a (batch, S) point ``p``."""
    return dict(
        section=section,
        batch=p["batch"],
        seq_len=p["seq_len"],
        measured_s=measured_s,
        predicted_s=predicted_s,
        role=role,
    )


def _mode_rows(section: str, key: str, points, fit, predict) -> list[dict]:
    """Report rows of a SparQ section, one per point and K mode (``"twice"``, ``"once"``)
    measured under ``key.format(mode)``; the K-twice rows of the fitted half are "fitted"
    (the fits use K twice), the rest "predicted"."""
    out = []
    for p, f in zip(points, fit, strict=True):
        for mode in ("twice", "once"):
            k = key.format(mode)
            if k in p:
                role = "fitted" if f and mode == "twice" else "predicted"
                out.append(_row(section.format(mode), p, p[k], predict(p, mode), role))
    return out


def _grid_fit(grid, model, points, key: str, section: str) -> tuple[float, list[dict]]:
    """Grid search of one parameter on the K-twice times (``key.format("twice")``) of the
    fitted half of ``points``; returns the best value and the report rows of every point and
    K mode (:func:`_mode_rows`). ``model(point, value, mode)`` is the predicted time."""
    fit = _fit_mask(points, "sparq")
    best = _grid_search(grid, lambda p, g: model(p, g, "twice"), points, fit, key.format("twice"))
    return best, _mode_rows(section, key, points, fit, lambda p, mode: model(p, best, mode))


def _eager_sparq(hw: Hardware, p: dict, dtype: str, mode: str = "twice"):
    """``estimate_attention`` of the op-by-op SparQ at measured point ``p`` on ``hw``."""
    return estimate_attention(
        "sparq", hardware=hw, batch=p["batch"], n_heads=p["heads"], seq_len=p["seq_len"],
        head_dim=p["head_dim"], dtype=dtype, r=p["r"], k=p["k"],
        store_k_twice=mode == "twice", implementation="eager",
    )  # fmt: skip


def _eager_dense(hw: Hardware, p: dict, dtype: str):
    """``estimate_attention`` of eager SDPA at measured point ``p`` on ``hw``."""
    return estimate_attention(
        "dense", hardware=hw, batch=p["batch"], n_heads=p["heads"], seq_len=p["seq_len"],
        head_dim=p["head_dim"], dtype=dtype, implementation="eager",
    )  # fmt: skip


def fit_profile(
    meas: dict, base: Hardware, *, name: str | None = None, description: str | None = None
) -> tuple[Hardware, dict]:
    """Calibrate ``base`` on ``meas`` (see the module docstring).

    Returns ``(profile, report)``; ``report`` has ``params`` (fitted values), ``rows`` (one
    dict per compared number: section, configuration, measured, predicted, error, ``role``
    "fitted" or "predicted") and ``summary`` (median |error| per section and role).
    """
    if not isinstance(meas, dict):
        raise TypeError(f"meas: expected the measurement dict, got {type(meas).__name__}")
    if not isinstance(base, Hardware):
        raise TypeError(f"base: expected a Hardware, got {type(base).__name__}")
    e = _check_measurements(meas)
    dtype = meas.get("dtype", "float16")
    T = base.mem_transaction_bytes
    dev = meas.get("device_name", "?")
    date = str(meas.get("date_utc", datetime.date.today().isoformat()))[:10]
    where = f"sparq hardware calibrate on {dev} ({date}, torch {meas.get('torch', '?')})"
    rows: list[dict] = []
    params: dict = {}
    sources: dict = dict(base.sources)
    changes: dict = {}

    # ---- read bandwidth (reported; the profile keeps the datasheet peak)
    reads = [r for r in meas.get("read", []) if r["bytes"] >= 2**30]
    if reads:
        params["read_bytes_per_s"] = max(r["bytes_per_s"] for r in reads)

    # ---- dense fused: eta and t0 from the best SDPA backend's device time
    dense = meas.get("dense") or []
    pts = []
    dense_fused = []  # (measured point, index of its report row)
    for r in dense:
        best = [(r[f"{b}_device_s"], b) for b in SDPA_BACKENDS if f"{b}_device_s" in r]
        if not best:
            continue
        t, b = min(best)
        nbytes = _dense_bytes(r["batch"], r["heads"], r["seq_len"], r["head_dim"], dtype, T)
        pts.append((r, t, b, nbytes))
    if len(pts) >= 4:
        fit = _fit_mask([p[0] for p in pts], "dense")
        x = [p[3] for p, f in zip(pts, fit, strict=True) if f]
        y = [p[1] for p, f in zip(pts, fit, strict=True) if f]
        t0, inv = fit_line_relative(x, y)
        eta = 1.0 / (inv * base.mem_bandwidth_bytes_per_s)
        params.update(
            kernel_latency_s=t0, mem_efficiency=eta, dense_fit_points=len(x), dense_points=len(pts)
        )
        if eta > 1:
            params["mem_efficiency_note"] = f"fitted eta {eta:.4f} > 1 clipped to 1"
            eta = 1.0
        changes.update(mem_efficiency=eta, kernel_latency_s=t0)
        for (r, t, b, _), f in zip(pts, fit, strict=True):
            dense_fused.append((r, len(rows)))
            rows.append(
                dict(
                    section="dense fused (device time)",
                    batch=r["batch"],
                    seq_len=r["seq_len"],
                    backend=b,
                    measured_s=t,
                    role="fitted" if f else "predicted",
                )
            )

    # ---- top-k
    tk = meas.get("topk") or []
    if len(tk) >= 4:
        fit = _fit_mask(tk, "topk", "rows", "n")
        xb = [r["rows"] * (r["n"] * e + 8 * r["k"]) for r in tk]
        lat, inv = fit_line_relative(
            [b for b, f in zip(xb, fit, strict=True) if f],
            [r["time_s"] for r, f in zip(tk, fit, strict=True) if f],
        )
        params.update(topk_latency_s=lat, topk_bytes_per_s=1 / inv)
        changes.update(topk_latency_s=lat, topk_bytes_per_s=1 / inv)
        for r, b, f in zip(tk, xb, fit, strict=True):
            rows.append(
                dict(
                    section="topk (device time)",
                    rows=r["rows"],
                    n=r["n"],
                    k=r["k"],
                    measured_s=r["time_s"],
                    predicted_s=lat + b * inv,
                    role="fitted" if f else "predicted",
                )
            )

    # ---- host side
    hops = meas.get("host_ops") or {}

    def host(name):
        v = hops.get(name, {})
        return v.get("host_s")

    simple = [host(n) for n in ELEMENTWISE_OPS if host(n) is not None]
    if simple:
        changes["host_dispatch_s"] = statistics.median(simple)
        for field, names in (
            ("host_dispatch_matmul_s", ("matmul",)),
            ("host_dispatch_topk_s", ("topk_d", "topk_1k")),
            ("host_dispatch_attention_s", ("sdpa_default",)),
            ("host_dispatch_custom_s", ("gather_bmv",)),
            ("host_dispatch_view_s", ("view",)),
        ):
            vals = [host(n) for n in names if host(n) is not None]
            if vals:
                changes[field] = statistics.median(vals)
        devs = [hops[n]["device_s"] for n in ELEMENTWISE_OPS if "device_s" in hops.get(n, {})]
        if devs:
            changes["op_device_s"] = statistics.median(devs)
        sync = meas.get("host_sync") or {}
        add = hops.get("add", {})
        if "tiny_op_round_trip_s" in sync and "host_s" in add:
            sync_s = sync["tiny_op_round_trip_s"] - add["host_s"] - add.get("device_s", 0.0)
            changes["sync_latency_s"] = max(0.0, sync_s)
            if sync_s < 0:
                params["sync_latency_s_note"] = (
                    f"round trip less dispatch and device time is {sync_s:.4g} s < 0: set to 0"
                )
    if meas.get("l2_bytes"):
        changes["onchip_bytes"] = float(meas["l2_bytes"])

    hw = base.replace(**changes) if changes else base

    def calibrated(field: str, value: float, grid) -> None:
        nonlocal hw
        params[field] = value
        if value in (grid[0], grid[-1]):  # the loss still falls past the grid: say so
            params[f"{field}_note"] = (
                f"{value:.4g} is an end of the search grid [{grid[0]:.4g}, {grid[-1]:.4g}]: "
                "a bound, not a fitted minimum"
            )
        hw = hw.replace(**{field: value})
        changes[field] = value

    sparq = meas.get("sparq") or []

    # ---- step-1 program bandwidth (one program per row)
    sp = [r for r in sparq if "twice_step1_device_s" in r]
    if len(sp) >= 4:
        eff = hw.mem_efficiency * hw.mem_bandwidth_bytes_per_s

        def step1(r, mode):
            tr = attention_traffic(
                "sparq",
                batch=r["batch"],
                n_heads=r["heads"],
                n_kv_heads=r["heads"],
                seq_len=r["seq_len"],
                head_dim=r["head_dim"],
                dtype=dtype,
                r=r["r"],
                k=r["k"],
                store_k_twice=mode == "twice",
                gqa_selection="shared",
                transaction_bytes=T,
            ).by_name()
            return tr["step1_columns"] + tr["step1_q_scores"]

        def pred(r, p, mode):
            rows_ = r["batch"] * r["heads"]
            return hw.kernel_latency_s + step1(r, mode) / min(eff, rows_ * p)

        grid = np.logspace(8, 12, 801)
        section = "sparq step 1, K {} (device time)"
        p_best, fitted_rows = _grid_fit(grid, pred, sp, "{}_step1_device_s", section)
        calibrated("program_bandwidth_bytes_per_s", p_best, grid)
        rows += fitted_rows

    eager_ready = hw.host_dispatch_s is not None and hw.sync_latency_s is not None

    # ---- generic framework ops' bandwidth: device time of the op-by-op SparQ (CUDA graph)
    sd = [r for r in sparq if "twice_device_s" in r]
    if len(sd) >= 4 and eager_ready:

        def device_total(r, eta_op, mode):
            est = _eager_sparq(hw.replace(op_mem_efficiency=eta_op), r, dtype, mode)
            return est.params["device_s"]

        grid = np.linspace(0.01, 1.0, 100)
        section = "sparq eager device time, K {} (CUDA graph)"
        g_best, fitted_rows = _grid_fit(grid, device_total, sd, "{}_device_s", section)
        calibrated("op_mem_efficiency", g_best, grid)
        rows += fitted_rows

    # ---- extra host time per op of a mixed sequence: the host-bound op-by-op SparQ
    sw = [r for r in sparq if "twice_wall_s" in r]
    if len(sw) >= 4 and eager_ready:
        fit = _fit_mask(sw, "sparq")
        grid = np.linspace(0.0, 50e-6, 501)
        m_best = _grid_search(
            grid,
            lambda r, m: _eager_sparq(hw.replace(host_dispatch_mixed_s=m), r, dtype).time_s,
            sw,
            fit,
            "twice_wall_s",
        )
        calibrated("host_dispatch_mixed_s", m_best, grid)
        fitted_sparq = {(r["batch"], r["seq_len"]) for r, f in zip(sw, fit, strict=True) if f}
    else:
        fitted_sparq = set()

    # ---- predictions on the calibrated profile
    for r, i in dense_fused:  # each point's own shape; streamed from memory, as measured
        rows[i]["predicted_s"] = estimate_attention(
            "dense",
            hardware=hw,
            batch=r["batch"],
            n_heads=r["heads"],
            seq_len=r["seq_len"],
            head_dim=r["head_dim"],
            dtype=dtype,
            resident=False,
        ).time_s
    if eager_ready:
        dense_wall = [d for d in dense if "default_wall_s" in d]
        for r in dense_wall:
            est = _eager_dense(hw, r, dtype)
            section = "dense eager SDPA default (wall clock)"
            rows.append(_row(section, r, r["default_wall_s"], est.time_s, "predicted"))
        for r in sparq:
            for mode in ("twice", "once"):
                if f"{mode}_wall_s" not in r:
                    continue
                est = _eager_sparq(hw, r, dtype, mode)
                fitted = mode == "twice" and (r["batch"], r["seq_len"]) in fitted_sparq
                role = "fitted" if fitted else "predicted"
                section = f"sparq eager K {mode} (wall clock)"
                rows.append(_row(section, r, r[f"{mode}_wall_s"], est.time_s, role))
                same = (
                    d
                    for d in dense_wall
                    if (d["batch"], d["seq_len"]) == (r["batch"], r["seq_len"])
                )
                dense_row = next(same, None)
                if dense_row is not None:
                    rows.append(
                        dict(
                            section=f"sparq eager speed-up vs eager SDPA, K {mode}",
                            batch=r["batch"],
                            seq_len=r["seq_len"],
                            measured_x=dense_row["default_wall_s"] / r[f"{mode}_wall_s"],
                            predicted_x=_eager_dense(hw, r, dtype).time_s / est.time_s,
                            role=role,
                        )
                    )
    for row in rows:
        if "measured_s" in row:
            row["error"] = _err(row["predicted_s"], row["measured_s"])
        else:
            row["error"] = _err(row["predicted_x"], row["measured_x"])

    # ---- sources of the changed fields
    npts = {s: sum(1 for r in rows if r["section"] == s) for s in {r["section"] for r in rows}}
    summary = {}
    for s in sorted(npts):
        for role in ("fitted", "predicted"):
            errs = [abs(r["error"]) for r in rows if r["section"] == s and r["role"] == role]
            if errs:
                summary[f"{s} [{role}]"] = dict(
                    n=len(errs), median_abs_error=statistics.median(errs), max_abs_error=max(errs)
                )

    def med(section, role="predicted"):
        v = summary.get(f"{section} [{role}]")
        return f"{v['median_abs_error']:.1%}" if v else "n/a"

    dsec = "dense fused (device time)"
    texts = {
        "mem_efficiency": f"measured: {where}: t = t0 + bytes/(eta BW) fitted to the best fused "
        f"SDPA backend's device time (CUDA graph, L2 defeated) on half of the (batch, S) grid; "
        f"median |error| on the other half {med(dsec)}; plain read plateau "
        f"{params.get('read_bytes_per_s', float('nan')):.3g} B/s",
        "kernel_latency_s": f"measured: {where}: t0 of the same fit (device side: ramp, tail, "
        "split reduction; no host dispatch)",
        "topk_bytes_per_s": f"measured: {where}: torch.topk fp16 rows, t = t0 + "
        f"rows*(n*e + 8k)/rate on half of the (rows, n) grid; median |error| on the other half "
        f"{med('topk (device time)')}",
        "topk_latency_s": f"measured: {where}: t0 of the top-k fit",
        "host_dispatch_s": f"measured: {where}: median host time per call of 400 back-to-back "
        "small elementwise/reduction/gather ops",
        "host_dispatch_matmul_s": f"measured: {where}: host time per small matmul",
        "host_dispatch_topk_s": f"measured: {where}: host time per small torch.topk",
        "host_dispatch_attention_s": f"measured: {where}: host time per small SDPA call "
        "(default backend)",
        "host_dispatch_custom_s": f"measured: {where}: host time per launch of the Triton "
        "step-1 kernel with its wrapper",
        "host_dispatch_view_s": f"measured: {where}: host time per transpose view",
        "op_device_s": f"measured: {where}: median device time of the small ops (CUDA graph)",
        "op_mem_efficiency": f"measured: {where}: fitted to the device time (CUDA graph) of "
        f"the op-by-op SparQ (K twice) on half of its (batch, S) grid, step 1 and top-k as "
        f"calibrated; median |error| on the other half "
        f"{med('sparq eager device time, K twice (CUDA graph)')}",
        "host_dispatch_mixed_s": f"measured: {where}: fitted to the wall time of the op-by-op "
        f"SparQ (K twice) on half of its (batch, S) grid with every other field fixed; median "
        f"|error| on the other half {med('sparq eager K twice (wall clock)')}",
        "sync_latency_s": f"measured: {where}: wall time of sync; op; sync on a tiny op less "
        "its host dispatch and device time",
        "onchip_bytes": f"measured: {where}: torch.cuda.get_device_properties().L2_cache_size",
        "program_bandwidth_bytes_per_s": f"measured: {where}: step-1 kernel with one program "
        f"per (batch, head) row, t = t0 + bytes/min(eta BW, rows p) on half of its (batch, S) "
        f"grid (K twice); median |error| on the other half "
        f"{med('sparq step 1, K twice (device time)')}",
    }
    today = datetime.date.today().isoformat()
    for key in changes:
        sources[key] = (texts.get(key, f"measured: {where}"), today)
    final = {}
    if name is not None:
        final["name"] = name
    if description is not None:
        final["description"] = description
    hw = hw.replace(sources=sources, origin="calibrated", **final)
    report = {"params": params, "rows": rows, "summary": summary, "device": dev, "date": date}
    return hw, report


def report_markdown(report: dict) -> str:
    """The report as Markdown: fitted parameters, per-section summary, every row."""
    out = [f"Calibration of {report['device']} ({report['date']})", ""]
    for k, v in report["params"].items():
        out.append(f"- {k} = {v:.4g}" if isinstance(v, float) else f"- {k} = {v}")
    out += [
        "",
        "| section | role | n | median abs error | max abs error |",
        "|---|---|---|---|---|",
    ]
    for k, v in report["summary"].items():
        sec, role = k.rsplit(" [", 1)
        out.append(
            f"| {sec} | {role[:-1]} | {v['n']} | {v['median_abs_error']:.1%} | "
            f"{v['max_abs_error']:.1%} |"
        )
    out += [
        "",
        "| section | configuration | measured | predicted | error | role |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        cfg = ", ".join(
            f"{k}={r[k]}" for k in ("batch", "seq_len", "rows", "n", "k", "backend") if k in r
        )
        if "measured_s" in r:
            m, p = f"{r['measured_s'] * 1e6:.1f} us", f"{r['predicted_s'] * 1e6:.1f} us"
        else:
            m, p = f"{r['measured_x']:.3g}x", f"{r['predicted_x']:.3g}x"
        out.append(f"| {r['section']} | {cfg} | {m} | {p} | {r['error']:+.1%} | {r['role']} |")
    return "\n".join(out)
