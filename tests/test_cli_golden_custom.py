"""`sparq golden --shape ...`: one custom case, every SparQ option, named errors."""

import json

import numpy as np
import pytest

from reference import sparq_attention
from reference.validation import STEPS, check_sparq, load_cases
from sparq_cli.cli import main


def test_custom_bucketed_case_round_trip(tmp_path, capsys):
    out = tmp_path / "g"
    rc = main(["golden", "--out", str(out), "--shape", "2,6,3,97,16", "--r", "4", "--k", "20",
               "--local-window", "3", "--topk", "bucketed", "--num-buckets", "7",
               "--k-per-bucket", "3", "--contiguous", "--selection", "head",
               "--group-score", "probs", "--dtype", "float32", "--seed", "5",
               "--holes"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["cases"]) == 1
    (case,) = load_cases(out)
    assert case.inputs["q"].shape == (2, 6, 16) and case.inputs["k_cache"].shape == (2, 3, 97, 16)
    assert case.inputs["k_cache"].dtype == np.float32
    p = case.params
    assert (p["topk"], p["num_buckets"], p["k_per_bucket"], p["interleaved"]) == (
        "bucketed", 7, 3, False)  # fmt: skip
    assert (p["selection"], p["group_score"], p["local_window"]) == ("head", "probs", 3)
    assert (~case.inputs["mask"]).any()  # --holes
    q, K, V, mask = (case.inputs[k] for k in ("q", "k_cache", "v_cache", "mask"))
    st = sparq_attention(q, K, V, mask=mask, return_steps=True, **p)
    assert check_sparq(case, {f: np.asarray(getattr(st, f)) for f in STEPS}).passed


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--shape", "2,8,3,50,16", "--r", "4", "--k", "8"], "expected H a multiple of Hkv"),
        (["--shape", "2,8,2,50", "--r", "4", "--k", "8"], "expected B,H,Hkv,S,d"),
        (["--shape", "2,8,2,50,16", "--r", "0", "--k", "8"], "argument --r: expected an int >= 1"),
        (["--shape", "64,64,64,65536,128", "--r", "4", "--k", "8"], "B*Hkv*S*d <= 2147483648"),
        (["--shape", "1,64,64,65536,128", "--r", "4", "--k", "8"], "Hkv*S*d <= 268435456"),
    ],
)
def test_custom_case_argument_errors(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        main(["golden", "--out", str(tmp_path / "g"), *argv])
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--shape", "2,8,2,50,16", "--k", "8"], "--r and --k are required"),
        (["--shape", "2,8,2,50,16", "--r", "17", "--k", "8"], "r: expected an int <= the head dim"),
        (["--shape", "2,8,2,50,16", "--r", "4", "--k", "8", "--num-buckets", "2"],
         "only with --topk bucketed"),
        (["--shape", "2,8,2,50,16", "--r", "4", "--k", "8", "--suite", "standard"],
         "--suite: not with --shape"),
        (["--shape", "2,8,2,50,16", "--r", "4", "--k", "9", "--topk", "bucketed",
          "--num-buckets", "2"], "num_buckets * k_per_bucket: expected >= k - local_window"),
    ],
)  # fmt: skip
def test_custom_case_value_errors(tmp_path, capsys, argv, msg):
    rc = main(["golden", "--out", str(tmp_path / "g"), *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert "sparq golden: error:" in err and msg in err
