"""Bucketed SparQ golden cases: built by make_case, judged tie-safely per bucket."""

import numpy as np
import pytest

from reference import sparq_attention
from reference.validation import STEPS, adversarial_cases, check_sparq, make_case

BUCKETED = ("bucketed", "bucketed-contiguous")


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in adversarial_cases("float16") if c.name in BUCKETED}


def _run(case, **over):
    q, K, V, mask = (case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    params = {**case.params, **over}
    st = sparq_attention(q, K, V, mask=mask, return_steps=True, **params)
    return {f: np.asarray(getattr(st, f)) for f in STEPS}


@pytest.mark.parametrize("name", BUCKETED)
def test_bucketed_cases_in_the_suite_and_correct_runs_pass(cases, name):
    case = cases[name]
    assert case.params["topk"] == "bucketed"
    assert check_sparq(case, {f: np.asarray(getattr(case.expected, f)) for f in STEPS}).passed
    assert check_sparq(case, _run(case)).passed
    assert check_sparq(case, _run(case, precision="float16")).passed


@pytest.mark.parametrize("name", BUCKETED)
def test_exact_top_k_instead_of_bucketed_is_caught(cases, name):
    case = cases[name]
    exact = _run(case, topk="exact", num_buckets=None, k_per_bucket=1, interleaved=True)
    assert (exact["positions"] != _run(case)["positions"]).any()  # the planted bug matters
    report = check_sparq(case, {"positions": exact["positions"], "out": exact["out"]})
    assert not report.passed
    assert report.first_failure.step == "positions"
    assert "of its bucket" in report.first_failure.message


def test_wrong_bucket_layout_is_caught(cases):
    case = cases["bucketed"]  # interleaved
    wrong = _run(case, interleaved=False)
    assert (wrong["positions"] != _run(case)["positions"]).any()
    report = check_sparq(case, {"positions": wrong["positions"]})
    assert not report.passed


def test_make_case_accepts_every_option_and_names_bad_ones():
    c = make_case("x", B=1, H=2, Hkv=1, S=50, d=16, r=4, k=10, local_window=2, topk="bucketed",
                  num_buckets=4, k_per_bucket=3, interleaved=False, group_score="probs",
                  selection="head", temperature="sqrt_d", reallocate=False)  # fmt: skip
    assert c.params["num_buckets"] == 4 and c.params["interleaved"] is False
    with pytest.raises(ValueError, match=r"^options: expected SparQ parameters among"):
        make_case("x", B=1, H=2, Hkv=1, S=50, d=16, r=4, k=10, bogus=1)
    with pytest.raises(ValueError, match=r"^num_buckets: required"):
        make_case("x", B=1, H=2, Hkv=1, S=50, d=16, r=4, k=10, topk="bucketed")
    with pytest.raises(ValueError, match=r"^num_buckets, k_per_bucket, interleaved: only used"):
        make_case("x", B=1, H=2, Hkv=1, S=50, d=16, r=4, k=10, num_buckets=3)
    # exact cases keep the parameter set they always had (no 'topk' key)
    assert "topk" not in make_case("x", B=1, H=2, Hkv=1, S=50, d=16, r=4, k=10).params
