"""Planted kernel bugs are caught on the standard and adversarial suites (bucketed included),
and the same implementation without a bug passes every case.

The implementation is ``tests/_independent.py`` (batched float32 NumPy, written apart from
the reference), judged as float32 and as float16 (cases stored in that dtype)."""

import numpy as np
import pytest

from reference.validation import adversarial_cases, check_sparq, standard_cases
from tests._independent import BUGS, sparq_float32


@pytest.fixture(scope="module", params=["float32", "float16"])
def suite(request):
    return standard_cases(request.param) + adversarial_cases(request.param)


def _outputs(case, bug=None):
    return sparq_float32(*(case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask")),
                         bug=bug, **case.params)  # fmt: skip


def test_correct_implementation_passes_every_case(suite):
    for case in suite:
        report = check_sparq(case, _outputs(case))
        assert report.passed, str(report)


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_is_caught(suite, bug):
    caught = []
    for case in suite:
        with np.errstate(all="ignore"):
            report = check_sparq(case, _outputs(case, bug))
        if not report.passed:
            caught.append(case.name)
    assert caught, f"{bug} passed every case"
    if bug in ("no-reallocation", "sqrt-d-temperature", "v-mean-unmasked"):
        assert len(caught) >= 10, (bug, caught)  # visible almost everywhere
