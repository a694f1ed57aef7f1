"""The checker must pass correct implementations and catch typical kernel bugs."""

import math

import numpy as np
import pytest

from reference import sparq_attention, sparq_attention_twin
from reference.validation import (
    STEPS,
    adversarial_cases,
    check_sparq,
    load_cases,
    make_case,
    save_cases,
    standard_cases,
)


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in standard_cases("float16") + adversarial_cases("float16")}


def steps_of(st):
    return {f: np.array(getattr(st, f)) for f in STEPS}


def run(case, **over):
    q, K, V, mask = (case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    params = {**case.params, **over}
    return sparq_attention(q, K, V, mask=mask, return_steps=True, **params)


def test_truth_and_naive_same_precision_pass_everywhere(cases):
    for case in cases.values():
        assert check_sparq(case, steps_of(case.expected)).passed, case.name
        emulated = run(case, precision="float16")
        report = check_sparq(case, steps_of(emulated))
        assert report.passed, str(report)


def test_kernel_output_in_float64_passes_with_float64_tolerances(cases):
    case = cases["gqa4"]
    report = check_sparq(case, steps_of(run(case)), dtype="float64")
    assert report.passed, str(report)
    # ... but a float16-accurate output does not pass as float64
    assert not check_sparq(case, steps_of(run(case, precision="float16")), dtype="float64").passed


def test_output_perturbation_is_caught_and_located(cases):
    case = cases["mha"]
    out = steps_of(case.expected)
    out["out"] = out["out"].copy()
    out["out"][1, 2, 5] += 0.05  # fp16 naive error here is ~1e-3
    report = check_sparq(case, out)
    f = report.first_failure
    assert f is not None and f.step == "out" and f.where == "(b=1, h=2, c=5)"


def test_sqrt_d_temperature_bug_is_caught_in_temperature_and_approx_logits(cases):
    case = cases["gqa4"]
    buggy = steps_of(run(case, temperature="sqrt_d"))
    report = check_sparq(case, buggy)
    assert report.first_failure.step == "temperature"
    del buggy["temperature"]
    assert check_sparq(case, buggy).first_failure.step == "approx_logits"


def test_wrong_component_is_caught(cases):
    case = cases["gqa4"]
    out = steps_of(case.expected)
    q = case.inputs["q"].astype(np.float64)
    a = np.abs(q[0, :4]).sum(0)  # group 0 of batch 0
    out["components"] = out["components"].copy()
    out["components"][0, 0, -1] = int(np.argmin(a))  # the weakest component instead
    f = check_sparq(case, {"components": out["components"]}).first_failure
    assert f is not None and f.step == "components" and "below the r-th best" in f.message


def test_missing_local_window_is_caught(cases):
    case = cases["mha"]
    pos = case.expected.positions.copy()
    mask = case.inputs["mask"]
    S = mask.shape[1]
    # replace the current token (the most recent valid position) by an unselected position
    spare = next(j for j in range(S) if mask[0, j] and j not in pos[0, 0])
    pos[0, 0][pos[0, 0] == S - 1] = spare
    f = check_sparq(case, {"positions": pos}).first_failure
    assert f is not None and f.step == "positions" and "local window" in f.message


def test_poor_position_is_caught_but_a_tied_swap_is_not(cases):
    case = cases["mha"]
    st = case.expected
    b, g = 0, 1
    valid = np.flatnonzero(case.inputs["mask"][b])
    score = st.approx_logits[b, g][valid]
    pos = st.positions.copy()
    worst_unselected = valid[np.argmin(score)]
    non_local = pos[b, g, case.params["local_window"] :]
    pos[b, g, case.params["local_window"] + len(non_local) - 1] = worst_unselected
    f = check_sparq(case, {"positions": pos}).first_failure
    assert f is not None and f.step == "positions" and "selection score" in f.message

    # A swap with an exactly tied unselected position (integer inputs) must pass, judged with
    # the implementation's positions injected into the later steps.
    tied = cases["ties"]
    st = tied.expected
    k, lw, per = tied.params["k"], tied.params["local_window"], 1
    pos = None
    for b in range(st.positions.shape[0]):
        valid = np.flatnonzero(tied.inputs["mask"][b])
        for g in range(st.positions.shape[1]):
            s = st.approx_logits[b, g * per : (g + 1) * per][:, valid].sum(0)
            n = min(k, len(valid))
            if n == len(valid):
                continue
            last = st.positions[b, g, n - 1]  # the weakest selected non-local position
            rest = valid[: len(valid) - lw]
            boundary = s[np.searchsorted(valid, last)]
            twins = [j for j in rest if j not in st.positions[b, g]
                     and s[np.searchsorted(valid, j)] == boundary]  # fmt: skip
            if twins:
                pos = st.positions.copy()
                pos[b, g, n - 1] = twins[0]
                break
        if pos is not None:
            break
    assert pos is not None, "the ties case should contain a tie at the selection boundary"
    q, K, V, mask = (tied.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    injected = sparq_attention_twin(q, K, V, mask=mask, inject_positions=pos, **tied.params)
    report = check_sparq(tied, steps_of(injected))
    assert report.passed, str(report)
    # the output differs from the un-injected truth, which is why injection matters
    assert not np.allclose(injected.out, tied.expected.out)


def test_alpha_without_reallocation_is_caught(cases):
    case = cases["gqa4"]
    buggy = steps_of(run(case, reallocate=False))
    buggy["v_mean"] = case.expected.v_mean
    f = check_sparq(case, {k: buggy[k] for k in ("alpha", "out")}).first_failure
    assert f is not None and f.step == "alpha"


def test_v_mean_over_garbage_is_caught(cases):
    case = cases["garbage-padding"]
    V = case.inputs["v_cache"].astype(np.float64)
    f = check_sparq(case, {"v_mean": V.mean(axis=2)}).first_failure
    assert f is not None and f.step == "v_mean"


def test_nan_and_shape_errors_are_reported(cases):
    case = cases["s1"]
    out = steps_of(case.expected)
    out["out"] = out["out"].copy()
    out["out"][0, 0, 0] = np.nan
    f = check_sparq(case, out).first_failure
    assert f.step == "out" and "non-finite" in f.message
    f = check_sparq(case, {"alpha": np.zeros((3, 3))}).first_failure
    assert f.step == "alpha" and "expected shape" in f.message
    with pytest.raises(ValueError, match="unknown steps"):
        check_sparq(case, {"output": out["out"]})


def test_callable_and_not_provided(cases):
    case = cases["gqa3-odd"]

    def impl(q, k_cache, v_cache, mask, **params):
        st = sparq_attention(q, k_cache, v_cache, mask=mask, return_steps=True, **params)
        return {"out": st.out, "positions": st.positions}

    report = check_sparq(case, impl)
    assert report.passed
    status = {r.step: r.status for r in report.results}
    assert status["components"] == "not provided" and status["out"] == "pass"


def test_save_load_roundtrip_and_tamper_detection(tmp_path):
    cases = [make_case("tiny", B=2, H=2, Hkv=1, S=9, d=4, r=2, k=3, local_window=1, seed=3)]
    save_cases(cases, tmp_path)
    back = load_cases(tmp_path)[0]
    for name in ("q", "k_cache", "v_cache", "mask"):
        np.testing.assert_array_equal(back.inputs[name], cases[0].inputs[name])
    np.testing.assert_array_equal(back.expected.positions, cases[0].expected.positions)
    assert back.params == cases[0].params
    with np.load(tmp_path / "tiny.npz") as z:
        arrays = dict(z)
    arrays["q"][0, 0, 0] += 1
    np.savez_compressed(tmp_path / "tiny.npz", **arrays)
    with pytest.raises(ValueError, match="checksum mismatch for array 'q'"):
        load_cases(tmp_path)


def test_inputs_are_stored_in_the_case_dtype():
    c = make_case("bf", B=1, H=2, Hkv=1, S=5, d=4, r=2, k=2, dtype="bfloat16", seed=4)
    q32 = c.inputs["q"]
    assert q32.dtype == np.float32
    assert (q32.view(np.uint32) & 0xFFFF == 0).all()  # bfloat16 values held in float32
    assert math.isfinite(float(c.expected.out.sum()))


def test_injecting_the_truths_own_choices_reproduces_it(cases):
    case = cases["gqa4"]
    q, K, V, mask = (case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    st = sparq_attention_twin(q, K, V, mask=mask, inject_components=case.expected.components,
                               inject_positions=case.expected.positions, **case.params)  # fmt: skip
    for f in STEPS:
        np.testing.assert_array_equal(getattr(st, f), getattr(case.expected, f))
    with pytest.raises(ValueError, match="expected distinct valid positions"):
        bad = case.expected.positions.copy()
        bad[0, 0, 1] = bad[0, 0, 0]
        sparq_attention_twin(q, K, V, mask=mask, inject_positions=bad, **case.params)


@pytest.mark.parametrize(
    "subset", [None, ("out",), ("positions", "out"), ("components", "out"), ("alpha", "v_mean")]
)
def test_an_independent_float32_implementation_passes_with_any_subset(subset):
    # tests/_independent.py is written apart from the reference (batched NumPy, float32);
    # near-ties in steps it does not return leave rows unjudged instead of failing them.
    from tests._independent import sparq_float32

    for case in standard_cases("float32") + adversarial_cases("float32"):
        outs = sparq_float32(*(case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask")),
                             **case.params)  # fmt: skip
        if subset is not None:
            outs = {k: outs[k] for k in subset}
        report = check_sparq(case, outs)
        assert report.passed, str(report)


def test_window_on_indices_instead_of_valid_positions_is_caught():
    from tests._independent import sparq_float32

    case = {c.name: c for c in adversarial_cases("float32")}["holes"]
    outs = sparq_float32(*(case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask")),
                         window_bug=True, **case.params)  # fmt: skip
    f = check_sparq(case, outs).first_failure
    assert f is not None and f.step == "positions" and "local window" in f.message
    f = check_sparq(case, {"out": outs["out"]}).first_failure
    assert f is not None and f.step == "out"


def test_nothing_provided_does_not_pass(cases):
    report = check_sparq(cases["s1"], {})
    assert not report.passed and report.first_failure is None
    assert "nothing was judged" in str(report)
