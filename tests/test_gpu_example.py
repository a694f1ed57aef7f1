"""The GPU example (examples/gpu_sparq) in Triton's interpreter on the CPU: every golden case
passes the checker, for both step-1 variants and both selections. Skips cleanly without torch
and triton, which are example-only dependencies (docs/gpu.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from reference._golden_io import save_cases  # noqa: E402
from reference.validation import adversarial_cases, check_sparq, standard_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "examples" / "gpu_sparq" / "run_golden.py"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(
    "variant", [[], ["--fma", "--select", "topk"]], ids=["dot-radix", "fma-topk"]
)
def test_gpu_example_passes_golden_suites_in_interpreter(tmp_path, dtype, variant):
    cases = standard_cases(dtype) + adversarial_cases(dtype)
    save_cases(cases, tmp_path / "gold")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, str(RUNNER), str(tmp_path / "gold"), str(tmp_path / "out"),
           "--device", "cpu", *variant]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    for case in cases:
        with np.load(tmp_path / "out" / f"{case.name}.npz") as z:
            outputs = {k: z[k] for k in z.files}
        report = check_sparq(case, outputs)
        assert report.passed, str(report)
