"""What :func:`reference.validation.check_sparq` accepts as an implementation's outputs.

* :func:`as_output_arrays` turns every step value into a host NumPy array: NumPy arrays,
  torch tensors on any device (``.detach().cpu()``; bfloat16 and other dtypes NumPy lacks
  become float32), objects with ``__dlpack__`` (``np.from_dlpack``) or ``__array__``
  (``np.asarray``), Python lists, tuples and numbers. ``ml_dtypes`` floats (bfloat16,
  float8, ...) become float32; with ``judged_dtype="bfloat16"`` a uint16 array for a
  floating-point step is read as bfloat16 bit patterns. torch is imported only by the
  tensor's own methods: it is never imported here.
* :func:`dtype_problems` says which converted steps have a dtype no implementation can
  mean: floating-point steps need a float dtype, ``components``/``positions`` an integer
  one. Each becomes a failing step of the report (the rule ``check_sparq`` always had for
  integer steps), never a silent cast: complex, string, object, bool and integer arrays
  for a floating-point step used to be cast to float64 (dropping imaginary parts).
* :func:`call_implementation` calls a callable implementation on read-only copies of the
  case's inputs, so the case itself can never change, and compares SHA-256 checksums of
  the copies before and after: an implementation that writes into its inputs anyway
  (making a copy writeable through its base, raw pointers, ...) gets a failing ``inputs``
  entry in the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
from collections.abc import Callable, Mapping

import numpy as np

#: steps holding indices; every other step holds floating-point values
INTEGER_STEPS = ("components", "positions")
#: the pseudo-step of a report entry saying the implementation changed its inputs
INPUTS_STEP = "inputs"


def _steps_and_inputs():
    from reference.validation import INPUTS, STEPS

    return STEPS, INPUTS


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _from_torch(x) -> np.ndarray:
    t = x.detach()
    if getattr(t, "is_conj", None) is not None and t.is_conj():
        t = t.resolve_conj()
    t = t.cpu()
    try:
        return t.numpy()
    except TypeError:  # bfloat16, float8, ...: dtypes NumPy does not have
        if t.is_floating_point():
            return t.float().numpy()
        raise


def _from_ml_dtypes(a: np.ndarray) -> np.ndarray:
    """``ml_dtypes`` arrays (kind ``V``): floats to float32, small ints to int64."""
    name = a.dtype.name
    if "float" in name:
        return a.astype(np.float32)
    if "int" in name:
        return a.astype(np.int64)
    return a


def _to_numpy(x) -> np.ndarray:
    """One step value as a host NumPy array; raises TypeError or ValueError on failure."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch_tensor(x):
        return _from_torch(x)
    if isinstance(x, np.generic | numbers.Number):
        return np.asarray(x)
    errors = []
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError) as exc:
            errors.append(f"np.from_dlpack: {exc}")
            try:  # a DLPack 1.0 producer on a device can copy to the host itself
                return np.from_dlpack(x, device="cpu", copy=True)
            except (TypeError, ValueError, RuntimeError, BufferError) as exc2:
                errors.append(f"np.from_dlpack(device='cpu'): {exc2}")
    if hasattr(x, "__array__"):
        return np.asarray(x)
    if isinstance(x, list | tuple):
        return np.asarray(x)
    why = f" ({'; '.join(errors)})" if errors else ""
    raise TypeError(f"expected an array, got {type(x).__name__}{why}")


def as_output_arrays(outputs, judged_dtype: str) -> dict[str, np.ndarray]:
    """``outputs`` (step name -> array-like) as host NumPy arrays, keyed like ``outputs``.

    Raises ``TypeError`` when ``outputs`` is not a mapping or a value cannot be made an
    array at all (``outputs['out']: expected an array, got NoneType``), ``ValueError`` for
    an unknown step name. Dtypes are not judged here (see :func:`dtype_problems`), except
    that ``ml_dtypes`` and torch-only float dtypes become float32 and, for
    ``judged_dtype == "bfloat16"``, uint16 floating-point steps are read as bfloat16 bits.
    """
    steps, _ = _steps_and_inputs()
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"outputs: expected a mapping of step name -> array, got {type(outputs).__name__}"
        )
    unknown = [k for k in outputs if k not in steps]
    if unknown:
        names = sorted(map(repr, unknown))
        raise ValueError(f"outputs: unknown steps [{', '.join(names)}]; expected some of {steps}")
    arrays = {}
    for name, value in outputs.items():
        try:
            a = _to_numpy(value)
        except (TypeError, ValueError, RuntimeError, BufferError) as exc:
            raise TypeError(f"outputs[{name!r}]: {exc}") from exc
        if a.dtype.kind == "V" and a.dtype.type.__module__.startswith("ml_dtypes"):
            a = _from_ml_dtypes(a)
        if judged_dtype == "bfloat16" and name not in INTEGER_STEPS and a.dtype == np.uint16:
            a = (a.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = a
    return arrays


def dtype_problems(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Step -> message for every array whose dtype the step cannot have."""
    problems = {}
    for name, a in arrays.items():
        if name in INTEGER_STEPS:
            if a.dtype.kind not in "iu":
                problems[name] = f"expected integer indices, got {a.dtype}"
        elif a.dtype.kind != "f":
            hint = ""
            if a.dtype == np.uint16:
                hint = " (bfloat16 bit patterns in uint16 are read only with dtype='bfloat16')"
            problems[name] = f"expected real floating-point values, got {a.dtype}{hint}"
    return problems


def call_implementation(case, fn: Callable) -> tuple[object, list[str]]:
    """Call ``fn(q, k_cache, v_cache, mask, **case.params)`` on read-only copies of the
    case's inputs; return what it returned and the names of the inputs it modified."""
    _, inputs = _steps_and_inputs()
    copies, before = {}, {}
    for k in inputs:
        c = np.array(case.inputs[k], copy=True)
        c.flags.writeable = False
        copies[k] = c
        before[k] = _sha256(c)
    views = []
    for k in inputs:
        v = copies[k].view()  # not owning its data: its flag cannot be set back to True
        v.flags.writeable = False
        views.append(v)
    result = fn(*views, **case.params)
    modified = [k for k in inputs if _sha256(copies[k]) != before[k]]
    return result, modified


def prepare_outputs(case, outputs, judged_dtype: str):
    """Resolve ``outputs`` (mapping or callable) into ``(arrays, failures)``: the arrays
    that can be judged and ``{step: message}`` of entries that fail before judging
    (the ``inputs`` pseudo-step and steps with an impossible dtype)."""
    failures = {}
    if callable(outputs):
        outputs, modified = call_implementation(case, outputs)
        if modified:
            failures[INPUTS_STEP] = (
                f"the implementation modified its input{'s' if len(modified) > 1 else ''}"
                f" {', '.join(modified)} (SHA-256 changed); inputs must be treated as"
                " read-only (the case itself is unchanged: the implementation got copies)"
            )
        if not isinstance(outputs, Mapping):
            raise TypeError(
                "outputs: expected the callable to return a mapping of step name -> array,"
                f" got {type(outputs).__name__}"
            )
    arrays = as_output_arrays(outputs, judged_dtype)
    bad = dtype_problems(arrays)
    failures.update(bad)
    return {k: v for k, v in arrays.items() if k not in bad}, failures


def with_failures(report, failures: Mapping[str, str]):
    """``report`` with the entries of ``failures`` as failing steps: the ``inputs`` entry
    first, a step's entry in place of its "not provided" entry."""
    from reference.validation import StepResult

    steps, _ = _steps_and_inputs()
    results = [r for r in report.results if r.step not in failures]
    results += [StepResult(step, "fail", message=msg) for step, msg in failures.items()]
    order = {INPUTS_STEP: -1, **{s: i for i, s in enumerate(steps)}}
    results.sort(key=lambda r: order.get(r.step, len(steps)))
    return dataclasses.replace(report, results=tuple(results))


def _json_float(x):
    """A float for ``json.dumps(allow_nan=False)``: finite as float, else "nan"/"inf"/"-inf"."""
    if x is None:
        return None
    x = float(x)
    if np.isfinite(x):
        return x
    return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")


def step_ratio(max_error, tolerance):
    """``max_error / tolerance`` as a float (``inf`` for an error over a zero tolerance,
    0 for no error), or None when either is unknown."""
    if max_error is None or tolerance is None:
        return None
    e, t = float(max_error), float(tolerance)
    if t == 0.0:
        return 0.0 if e == 0.0 else float("inf")
    return e / t


def report_to_dict(report) -> dict:
    """JSON-ready form of a :class:`reference.validation.CheckReport`."""
    first = report.first_failure
    return dict(
        case=report.case,
        shape=report.shape,
        dtype=report.dtype,
        passed=bool(report.passed),
        first_failure=None if first is None else first.step,
        results=[
            dict(
                step=r.step,
                status=r.status,
                max_error=_json_float(r.max_error),
                tolerance=_json_float(r.tolerance),
                ratio=_json_float(step_ratio(r.max_error, r.tolerance)),
                where=r.where,
                message=r.message,
                not_judged=int(r.not_judged),
            )
            for r in report.results
        ],
    )
