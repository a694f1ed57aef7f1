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
    "variant",
    [
        [],
        ["--step1", "dot", "--bs", "512", "--select", "radix"],
        ["--fma", "--bs", "512", "--select", "topk"],
        ["--step1", "loop", "--select", "tour", "--tour", "2"],
    ],
    ids=["default-fma-tour8", "dot-radix", "fma-topk", "loop-tour2"],
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


@pytest.mark.parametrize("sub", [1, 2, 4, 16])
def test_tournament_topk_keeps_a_top_k(sub):
    """The two-level tournament against a sort of the whole row (the oracle): same multiset
    of values, distinct indices that point at them; rows with heavy ties, -inf (masked) and
    +inf (local window) entries, fewer finite entries than k, and k >= the runs."""
    import torch

    sys.path.insert(0, str(RUNNER.parent))
    from kernels import tournament_topk

    rng = np.random.default_rng(7)
    n = 64 * sub
    x = rng.integers(-3, 4, size=(6, n)).astype(np.float32)  # many ties
    x[1] = rng.normal(size=n)
    x[2, rng.random(n) < 0.7] = -np.inf
    x[3, -5:] = np.inf
    x[4, :] = -np.inf
    x[4, [3, 50]] = 1.0  # fewer finite entries than k
    score = torch.from_numpy(x)
    submax = score.view(6, n // sub, sub).amax(-1)
    for k in (1, 7, 20, 64):
        for sorted_out in (False, True):
            vals, idx = tournament_topk(score, submax, sub, k, sorted_out)
            want = np.sort(x, axis=1)[:, ::-1][:, :k]
            got = np.sort(vals.numpy(), axis=1)[:, ::-1]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.take_along_axis(x, idx.numpy(), 1), vals.numpy())
            assert all(len(set(row)) == k for row in idx.numpy().tolist())
            if sorted_out:
                np.testing.assert_array_equal(vals.numpy(), want)  # descending
