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
        ["--select", "tourk", "--tour", "2"],
        ["--config", "fmac-bs64-ch16-tourk2"],
    ],
    ids=["default-fma-tour8", "dot-radix", "fma-topk", "loop-tour2", "tourk2", "fmac-tourk2"],
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


_TOUR_KERNEL_CHECK = r"""
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
from kernels import _p2, _tour_kernel

rng = np.random.default_rng(11)
for sub, n, k in ((2, 64, 5), (4, 256, 20), (8, 1024, 64), (1, 32, 32), (16, 96, 3)):
    x = rng.integers(-3, 4, size=(5, n)).astype(np.float32)  # heavy ties
    x[1] = rng.normal(size=n)
    x[2, rng.random(n) < 0.8] = -np.inf
    x[3, -4:] = np.inf
    x[4, :] = -np.inf
    x[4, [1, 7]] = 2.0
    score = torch.from_numpy(x)
    nsub = n // sub
    submax = score.view(5, nsub, sub).amax(-1).contiguous()
    kr = min(k, nsub)
    runs = torch.empty((5, kr), dtype=torch.int64)
    idx = torch.empty((5, k), dtype=torch.int64)
    vals = torch.empty((5, k), dtype=torch.float32)
    _tour_kernel[(5,)](score, submax, runs, idx, vals, n, nsub, kr, k,
                       SUB=sub, NR=_p2(nsub), NC=_p2(kr * sub))
    for i in range(5):
        want = np.lexsort((np.arange(n), -x[i]))[:k]  # value descending, index ascending
        assert idx[i].tolist() == want.tolist(), (sub, n, k, i, idx[i].tolist(), want.tolist())
        np.testing.assert_array_equal(vals[i].numpy(), x[i, want])
print("ok")
"""


def test_tour_kernel_matches_a_full_sort_with_exact_ties(tmp_path):
    """The one-program tournament (select="tourk") in Triton's interpreter against a full
    lexsort of each row (value descending, index ascending): the same positions in the same
    order, ties included, on rows with heavy ties, -inf, +inf and fewer finite entries than
    k."""
    script = tmp_path / "check_tour.py"
    script.write_text(_TOUR_KERNEL_CHECK)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, str(script), str(RUNNER.parent)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
