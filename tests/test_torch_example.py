"""The PyTorch example passes every golden case on the CPU in float32, float16 and bfloat16
(skipped cleanly where torch is not installed; CI does not install it)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from reference.validation import adversarial_cases, check_sparq, standard_cases

torch = pytest.importorskip("torch")

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "torch_sparq.py"


def _example():
    spec = importlib.util.spec_from_file_location("torch_sparq_example", _EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_example_passes_every_case_on_cpu(dtype):
    ex = _example()
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    worst = 0.0
    for case in standard_cases(dtype) + adversarial_cases(dtype):
        q, K, V = (torch.from_numpy(np.ascontiguousarray(case.inputs[n])).to(tdt)
                   for n in ("q", "k_cache", "v_cache"))  # fmt: skip
        mask = torch.from_numpy(case.inputs["mask"])
        steps = ex.sparq_torch(q, K, V, mask, **case.params)
        report = check_sparq(case, steps)  # torch tensors are accepted as they are
        assert report.passed, str(report)
        d = report.to_dict()
        worst = max(worst, max((r["ratio"] or 0.0) for r in d["results"]
                               if isinstance(r["ratio"], float)))  # fmt: skip
    assert worst <= 1.0
