"""The checker's tolerances are sound: monotone in the judged dtype's precision.

An emulated naive run at precision ``p`` (either rounding route) is a legitimate
implementation in ``p``; an implementation judged as a dtype ``D`` no more precise than ``p``
may keep any tensor in ``p`` (e.g. an fp16 kernel that keeps alpha in fp32). So every such
run must pass every case when judged as ``D``: a more accurate implementation never fails.
"""

import numpy as np
import pytest

from reference import sparq_attention_twin
from reference.precision import Precision
from reference.validation import (
    PRECISION_ORDER,
    STEPS,
    UNIT_ROUNDOFF,
    _floor,
    adversarial_cases,
    check_sparq,
    standard_cases,
)

LOW = PRECISION_ORDER[1:]  # float32, float16, bfloat16


def _steps(st):
    return {f: np.asarray(getattr(st, f)) for f in STEPS}


def _run(case, precision, reorder):
    q, K, V, mask = (case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    return sparq_attention_twin(q, K, V, mask=mask, precision=Precision(precision, reorder=reorder),
                                **case.params)  # fmt: skip


@pytest.fixture(scope="module", params=["float32", "float16", "bfloat16"])
def suite(request):
    return standard_cases(request.param) + adversarial_cases(request.param)


@pytest.mark.slow
@pytest.mark.parametrize("p", LOW)
@pytest.mark.parametrize("reorder", [False, True])
def test_emulated_run_passes_when_judged_as_any_less_precise_dtype(suite, p, reorder):
    worst = {}
    for case in suite:
        got = _steps(_run(case, p, reorder))
        for judged in PRECISION_ORDER[PRECISION_ORDER.index(p) :]:
            report = check_sparq(case, got, dtype=judged)
            assert report.passed, f"{p} run (reorder={reorder}) judged as {judged}:\n{report}"
            for r in report.results:
                if r.max_error is not None and r.tolerance:
                    key = (judged, r.step)
                    worst[key] = max(worst.get(key, 0.0), r.max_error / r.tolerance)
    assert max(worst.values()) <= 1.0


def test_k_ge_s_alpha_float32_run_judged_as_float16():
    # The degenerate case that made the tolerance go the wrong way: k >= S gives alpha = 1
    # exactly in float16 (naive error 0, and flash-attention's floor 2|(1 + 0.3) - 0.3 - 1|
    # vanishes in float16), while a float32 implementation's alpha is 1 - O(2**-24).
    case = next(c for c in adversarial_cases("float16") if c.name == "k-ge-S")
    got = _steps(_run(case, "float32", False))
    assert np.abs(got["alpha"] - 1.0).max() > 0  # the float32 run is not exactly 1
    report = check_sparq(case, got, dtype="float16")
    assert report.passed, str(report)
    tol = next(r.tolerance for r in report.results if r.step == "alpha")
    assert tol >= UNIT_ROUNDOFF["float16"]  # one float16 unit roundoff of alpha = 1


def test_floor_monotone_on_awkward_values():
    # Values where flash-attention's rule degenerates in one dtype but not another.
    vals = [np.array([1.0]), np.array([1.0 - 2.0**-40]), np.array([0.7, 1.3]),
            np.array([65504.0]), np.array([3.0e-5])]  # fmt: skip
    for v in vals:
        floors = [_floor(v, d) for d in PRECISION_ORDER]
        assert floors == sorted(floors), (v, floors)


def test_failure_message_shows_the_difference():
    case = standard_cases("float32")[0]
    got = _steps(case.expected)
    got["out"] = got["out"].copy()
    got["out"][0, 0, 0] += 1e-3
    report = check_sparq(case, {"out": got["out"]}, dtype="float32")
    assert not report.passed
    msg = report.first_failure.message
    assert "relative error" in msg
    # 17 significant digits: got and truth differ visibly in the printed numbers
    got_s, truth_s = msg.split(": got ")[1].split(", truth ")
    assert got_s.split()[0] != truth_s.split()[0]
