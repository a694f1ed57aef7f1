"""The checker's public surface: what ``check_sparq`` accepts as outputs, how a callable
implementation is called, ``assert_sparq_matches``, ``CheckReport.to_dict`` and
``sparq check --json``."""

import ctypes
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reference._checker_io import as_output_arrays
from reference.validation import (
    STEPS,
    CheckReport,
    StepResult,
    assert_sparq_matches,
    check_sparq,
    make_case,
    save_cases,
)
from sparq_cli import main

ROOT = Path(__file__).resolve().parents[1]


def small(name="small", dtype="float32", seed=3):
    return make_case(name, B=2, H=4, Hkv=2, S=40, d=16, r=4, k=8, local_window=2, dtype=dtype,
                     seed=seed, values="heavy")  # fmt: skip


@pytest.fixture(scope="module")
def case():
    return small()


@pytest.fixture(scope="module")
def bf16_case():
    return small("small-bf16", dtype="bfloat16")


def truth(case):
    return {f: np.array(getattr(case.expected, f)) for f in STEPS}


def status(report):
    return {r.step: r.status for r in report.results}


# ------------------------------------------------------------------------------------------
# 1. Array types
# ------------------------------------------------------------------------------------------


class ArrayLike:
    """Only ``__array__`` (like JAX arrays, pandas objects)."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


class DLPackOnly:
    """Only the DLPack protocol (like a CPU tensor of some other framework)."""

    def __init__(self, a):
        self._a = np.ascontiguousarray(a)

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_truth_passes_as_numpy_lists_array_protocol_and_dlpack(case):
    t = truth(case)
    assert check_sparq(case, t).passed
    as_f16 = lambda a: a.astype(np.float16) if a.dtype.kind == "f" else a  # noqa: E731
    for wrap in (lambda a: a.tolist(), ArrayLike, DLPackOnly, as_f16):
        outputs = {k: wrap(v) for k, v in t.items()}
        report = check_sparq(case, outputs, dtype="float16" if wrap is as_f16 else None)
        assert report.passed, str(report)
        assert set(status(report).values()) == {"pass"}
    # the protocols really are used: a wrong value through them is caught
    bad = {k: DLPackOnly(v) for k, v in t.items()}
    bad["out"] = DLPackOnly(t["out"] + 1.0)
    assert check_sparq(case, bad).first_failure.step == "out"
    assert check_sparq(case, {"out": ArrayLike(t["out"] - 1.0)}).first_failure.step == "out"


def test_as_output_arrays_converts_each_kind():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = as_output_arrays(
        {"out": x.tolist(), "y": ArrayLike(x), "alpha": DLPackOnly(x), "v_mean": x}, "float32"
    )
    for k, a in got.items():
        assert isinstance(a, np.ndarray), k
        np.testing.assert_array_equal(a, x)
    assert got["out"].dtype == np.float64 and got["y"].dtype == np.float32


def test_bfloat16_bits_in_uint16_only_when_judged_as_bfloat16(bf16_case):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = truth(bf16_case)
    as_bf16 = {k: (v.astype(ml_dtypes.bfloat16) if v.dtype.kind == "f" else v)
               for k, v in t.items()}  # fmt: skip
    report = check_sparq(bf16_case, as_bf16)
    assert report.passed, str(report)
    bits = {k: (v.view(np.uint16) if v.dtype != t[k].dtype else v) for k, v in as_bf16.items()}
    assert bits["out"].dtype == np.uint16
    report = check_sparq(bf16_case, bits)  # the case's dtype is bfloat16
    assert report.passed, str(report)
    # the conversion is exact: bit pattern -> the float32 holding that bfloat16 value
    conv = as_output_arrays({"out": bits["out"]}, "bfloat16")["out"]
    assert conv.dtype == np.float32
    np.testing.assert_array_equal(conv, as_bf16["out"].astype(np.float32))
    # judged as another dtype, uint16 is not reinterpreted: a failing step with a hint
    report = check_sparq(bf16_case, {"out": bits["out"]}, dtype="float32")
    f = report.first_failure
    assert f.step == "out" and "uint16" in f.message and "dtype='bfloat16'" in f.message
    # a wrong bit pattern is caught
    wrong = bits["out"].copy()
    wrong[0, 0, 0] ^= 0x4000  # flips an exponent bit
    assert check_sparq(bf16_case, {"out": wrong}).first_failure.step == "out"


@pytest.mark.parametrize("kind", ["complex", "str", "object", "bool", "int"])
def test_impossible_dtypes_for_float_steps_are_failed_steps(case, kind):
    out = truth(case)["out"]
    a = dict(complex=out.astype(np.complex128), str=out.astype(str), object=out.astype(object),
             bool=out > 0, int=np.round(out).astype(np.int64))[kind]  # fmt: skip
    report = check_sparq(case, {**truth(case), "out": a})
    f = report.first_failure
    assert not report.passed
    assert f.step == "out" and f.status == "fail"
    assert f.message == f"expected real floating-point values, got {a.dtype}"
    assert status(report)["y"] == "pass"  # the rest is still judged
    assert [r.step for r in report.results] == list(STEPS)


def test_integer_steps_need_integers(case):
    t = truth(case)
    report = check_sparq(case, {**t, "components": t["components"].astype(np.float32)})
    f = report.first_failure
    assert f.step == "components" and f.message == "expected integer indices, got float32"
    report = check_sparq(case, {**t, "positions": t["positions"].astype(np.complex64)})
    assert report.first_failure.step == "positions"


@pytest.mark.parametrize(
    "value, what",
    [(None, "NoneType"), (object(), "object"), ("1.0", "str"), ([[1.0, 2.0], [3.0]], "")],
)
def test_unconvertible_values_are_a_type_error_naming_the_step(case, value, what):
    with pytest.raises(TypeError, match=r"outputs\['alpha'\]: .*" + what):
        check_sparq(case, {"alpha": value})


def test_outputs_must_be_a_mapping_of_known_steps(case):
    with pytest.raises(TypeError, match="outputs: expected a mapping of step name -> array, got"):
        check_sparq(case, [case.expected.out])
    with pytest.raises(ValueError, match=r"outputs: unknown steps \['logits'\]"):
        check_sparq(case, {"logits": case.expected.approx_logits})


class FakeTorchTensor:
    """Mimics the torch.Tensor methods the checker uses, for machines without torch: a
    bfloat16 tensor's ``numpy()`` raises TypeError like torch's, ``float()`` converts."""

    __module__ = "torch"

    def __init__(self, a, bf16=False, device="cuda:0"):
        self._a, self._bf16, self.device = np.asarray(a), bf16, device
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        self.device = "cpu"
        return self

    def is_floating_point(self):
        return self._a.dtype.kind == "f"

    def float(self):
        return FakeTorchTensor(self._a.astype(np.float32), device=self.device)

    def numpy(self):
        if self.device != "cpu":
            raise TypeError("can't convert cuda:0 device type tensor to numpy")
        if self._bf16:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self._a


def test_torch_like_objects_are_detached_moved_to_host_and_bf16_widened(case):
    t = truth(case)
    tensors = {k: FakeTorchTensor(v, bf16=v.dtype.kind == "f") for k, v in t.items()}
    report = check_sparq(case, tensors)
    assert report.passed, str(report)
    assert tensors["out"].calls == ["detach", "cpu"]


def test_torch_is_not_imported_for_non_torch_outputs(case, tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        from reference.validation import check_sparq, make_case
        c = make_case("t", B=1, H=2, Hkv=1, S=16, d=8, r=2, k=4, local_window=1,
                      dtype="float32")
        e = c.expected
        r = check_sparq(c, {{"out": e.out.tolist(), "y": e.y.astype(np.float16)}},
                        dtype="float16")
        assert "torch" not in sys.modules
        print(r.passed)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_real_torch_tensors(case):
    torch = pytest.importorskip("torch")
    t = truth(case)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        tensors = {k: torch.from_numpy(v).to(dev) for k, v in t.items()}
        tensors["out"] = tensors["out"].clone().requires_grad_(True)
        assert check_sparq(case, tensors).passed, dev
        bf16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
                for k, v in tensors.items()}  # fmt: skip
        report = check_sparq(case, bf16, dtype="bfloat16")
        assert report.passed, str(report)
        broken = dict(tensors, out=tensors["out"].detach() + 1.0)
        assert check_sparq(case, broken).first_failure.step == "out"
        cplx = dict(tensors, out=tensors["out"].detach().to(torch.complex64))
        assert "complex64" in check_sparq(case, cplx).first_failure.message


# ------------------------------------------------------------------------------------------
# 2. Callables
# ------------------------------------------------------------------------------------------


def snapshot(case):
    return {k: v.copy() for k, v in case.inputs.items()}


def assert_unchanged(case, before):
    for k, v in before.items():
        assert case.inputs[k].dtype == v.dtype
        np.testing.assert_array_equal(case.inputs[k], v, err_msg=k)


def test_well_behaved_callable_gets_read_only_inputs_and_params(case):
    seen = {}

    def impl(q, k_cache, v_cache, mask, **params):
        seen.update(params=params, arrays=(q, k_cache, v_cache, mask))
        return truth(case)

    report = check_sparq(case, impl)
    assert report.passed and "inputs" not in status(report)
    assert seen["params"] == case.params
    for a, name in zip(seen["arrays"], ("q", "k_cache", "v_cache", "mask"), strict=True):
        assert not a.flags.writeable, name
        assert not np.shares_memory(a, case.inputs[name]), name  # a copy, not the case's
        np.testing.assert_array_equal(a, case.inputs[name])
        assert a.dtype == case.inputs[name].dtype


def test_setting_the_writeable_flag_on_an_input_is_refused_by_numpy(case):
    before = snapshot(case)

    def impl(q, k_cache, v_cache, mask, **params):
        k_cache.setflags(write=True)  # a view of a read-only array: numpy refuses
        k_cache[...] = 0
        return truth(case)

    with pytest.raises(ValueError, match="WRITEABLE"):
        check_sparq(case, impl)
    assert_unchanged(case, before)


def test_writing_into_inputs_through_the_base_is_a_failing_inputs_entry(case):
    before = snapshot(case)

    def impl(q, k_cache, v_cache, mask, **params):
        out = truth(case)
        k_cache.base.setflags(write=True)  # the copy owns its data: numpy allows this
        k_cache.setflags(write=True)
        np.copyto(k_cache, 0)
        return out

    report = check_sparq(case, impl)
    assert not report.passed
    f = report.first_failure
    assert f.step == "inputs" and report.results[0].step == "inputs"
    assert "modified its input k_cache" in f.message
    assert status(report)["out"] == "pass"  # the outputs are still judged
    assert_unchanged(case, before)
    with pytest.raises(AssertionError, match="modified its input k_cache"):
        assert_sparq_matches(case, impl)


def test_writing_into_inputs_through_a_raw_pointer_is_caught(case):
    before = snapshot(case)

    def impl(q, k_cache, v_cache, mask, **params):
        buf = (ctypes.c_char * q.nbytes).from_address(q.ctypes.data)
        alias = np.ndarray(q.shape, q.dtype, buffer=buf)  # writeable alias of the copy
        alias[0, 0, 0] += 1.0
        mask_alias = np.ndarray(mask.shape, mask.dtype, buffer=(ctypes.c_char * mask.nbytes)
                                .from_address(mask.ctypes.data))  # fmt: skip
        mask_alias[0, 0] = not mask_alias[0, 0]
        return truth(case)

    report = check_sparq(case, impl)
    f = report.first_failure
    assert f.step == "inputs" and "inputs q, mask" in f.message
    assert_unchanged(case, before)


def test_callable_must_return_a_mapping(case):
    with pytest.raises(TypeError, match="outputs: expected the callable to return a mapping"):
        check_sparq(case, lambda *a, **kw: (case.expected.out,))


# ------------------------------------------------------------------------------------------
# 3. assert_sparq_matches, 4. to_dict
# ------------------------------------------------------------------------------------------


def test_assert_sparq_matches(case):
    t = truth(case)
    assert assert_sparq_matches(case, t) is None
    assert assert_sparq_matches(case, lambda *a, **kw: t, dtype="float16") is None
    bad = dict(t, out=t["out"] + 0.5)
    with pytest.raises(AssertionError) as info:
        assert_sparq_matches(case, bad)
    assert str(info.value) == str(check_sparq(case, bad))
    with pytest.raises(AssertionError, match="nothing was judged"):
        assert_sparq_matches(case, {})
    with pytest.raises(ValueError, match="dtype: expected one of"):
        assert_sparq_matches(case, t, dtype="float8")


def test_to_dict_is_json_and_complete(case):
    t = truth(case)
    bad = dict(t, out=t["out"] + 0.5)
    report = check_sparq(case, bad)
    d = report.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert (d["case"], d["shape"], d["dtype"]) == (case.name, case.shape, "float32")
    assert d["passed"] is False and d["first_failure"] == "out"
    assert [r["step"] for r in d["results"]] == list(STEPS)
    by = {r["step"]: r for r in d["results"]}
    out = by["out"]
    assert set(out) == {"step", "status", "max_error", "tolerance", "ratio", "where", "message",
                        "not_judged"}  # fmt: skip
    assert out["status"] == "fail" and out["where"] == report.first_failure.where
    assert type(out["max_error"]) is float and type(out["tolerance"]) is float
    assert math.isclose(out["ratio"], out["max_error"] / out["tolerance"]) and out["ratio"] > 1
    assert by["y"]["ratio"] <= 1
    good = check_sparq(case, t).to_dict()
    assert good["passed"] is True and good["first_failure"] is None


def test_to_dict_non_finite_and_unknown_values():
    report = CheckReport("x", "B=1", "float16", (
        StepResult("alpha", "fail", float("inf"), 1e-3, "(b=0, h=0)", "m"),
        StepResult("y", "fail", np.float64(2.0), 0.0),
        StepResult("v_mean", "pass", 0.0, 0.0),
        StepResult("out", "fail", float("nan"), 1.0, message="non-finite"),
        StepResult("temperature", "not provided"),
    ))  # fmt: skip
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    by = {r["step"]: r for r in json.loads(text)["results"]}
    assert by["alpha"]["max_error"] == "inf" and by["alpha"]["ratio"] == "inf"
    assert by["y"]["max_error"] == 2.0 and by["y"]["ratio"] == "inf"
    assert by["v_mean"]["ratio"] == 0.0
    assert by["out"]["max_error"] == "nan" and by["out"]["ratio"] == "nan"
    assert by["temperature"]["max_error"] is None and by["temperature"]["ratio"] is None
    assert d["first_failure"] == "alpha"


# ------------------------------------------------------------------------------------------
# 5. sparq check --json and exit statuses
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden(tmp_path_factory, case):
    d = tmp_path_factory.mktemp("gold")
    other = small("other", seed=4)
    save_cases([case, other], d)
    return d, [case, other]


def write_outputs(d, cases, broken=()):
    d.mkdir(exist_ok=True)
    for c in cases:
        t = truth(c)
        if c.name in broken:
            t["out"] = t["out"] + 0.5
        np.savez(d / f"{c.name}.npz", **t)


def test_cli_json_all_pass(tmp_path, golden, capsys):
    gold, cases = golden
    write_outputs(tmp_path / "o", cases)
    capsys.readouterr()
    assert main(["check", str(gold), str(tmp_path / "o"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON document
    assert [r["case"] for r in doc["reports"]] == [c.name for c in cases]
    assert all(r["passed"] for r in doc["reports"])
    s = doc["summary"]
    assert (s["cases"], s["passed"], s["failed"], s["not_provided"]) == (2, 2, 0, 0)
    results = [r for rep in doc["reports"] for r in rep["results"]]
    ratios = [r["ratio"] for r in results if r["ratio"] is not None]
    assert s["largest_ratio"] == max(ratios) and 0 <= s["largest_ratio"] <= 1


def test_cli_json_failure_and_missing(tmp_path, golden, capsys):
    gold, cases = golden
    out = tmp_path / "o"
    write_outputs(out, cases, broken=("other",))
    capsys.readouterr()
    assert main(["check", str(gold), str(out), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [r["passed"] for r in doc["reports"]] == [True, False]
    assert doc["reports"][1]["first_failure"] == "out"
    assert doc["summary"]["failed"] == 1 and doc["summary"]["largest_ratio"] > 1
    (out / "other.npz").unlink()
    assert main(["check", str(gold), str(out), "--json"]) == 1  # missing fails by default
    doc = json.loads(capsys.readouterr().out)
    assert doc["not_provided"] == ["other"] and doc["summary"]["not_provided"] == 1
    assert main(["check", str(gold), str(out), "--json", "--allow-missing"]) == 0
    json.loads(capsys.readouterr().out)


def test_cli_nothing_judged_fails(tmp_path, golden, capsys):
    gold, _ = golden
    # an empty suite cannot be written, and a hand-made empty manifest is refused on load:
    # never "0 passed, 0 failed" with exit 0
    with pytest.raises(ValueError, match="no cases"):
        save_cases([], tmp_path / "empty")
    empty = tmp_path / "empty2"
    empty.mkdir()
    manifest = json.loads((gold / "manifest.json").read_text())
    (empty / "manifest.json").write_text(json.dumps({**manifest, "cases": []}))
    (tmp_path / "o").mkdir()
    capsys.readouterr()
    assert main(["check", str(empty), str(tmp_path / "o")]) == 2
    assert "no cases" in capsys.readouterr().err
    # every outputs file missing, even with --allow-missing, judges nothing
    assert main(["check", str(gold), str(tmp_path / "o"), "--allow-missing"]) == 1


def test_cli_text_output_unchanged_and_bf16_bits(tmp_path, golden, bf16_case, capsys):
    gold, cases = golden
    write_outputs(tmp_path / "o", cases)
    capsys.readouterr()
    assert main(["check", str(gold), str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith("2 passed, 0 failed, 0 not provided")
    assert "case small (" in text and not text.lstrip().startswith("{")
    # bfloat16 bit patterns in an outputs file, judged as bfloat16
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g2, o2 = tmp_path / "g2", tmp_path / "o2"
    save_cases([bf16_case], g2)
    o2.mkdir()
    t = truth(bf16_case)
    bits = {k: (v.astype(ml_dtypes.bfloat16).view(np.uint16) if v.dtype.kind == "f" else v)
            for k, v in t.items()}  # fmt: skip
    np.savez(o2 / f"{bf16_case.name}.npz", **bits)
    assert main(["check", str(g2), str(o2), "--dtype", "bfloat16"]) == 0
    assert main(["check", str(g2), str(o2), "--dtype", "float32", "--json"]) == 1
    capsys.readouterr()
    np.savez(o2 / f"{bf16_case.name}.npz", logits=t["out"])  # unknown step: exit 2
    assert main(["check", str(g2), str(o2)]) == 2
    assert "unknown steps" in capsys.readouterr().err
