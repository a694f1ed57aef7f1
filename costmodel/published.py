"""Predicted vs published / measured numbers (the table in docs/costmodel.md).

Run ``python -m costmodel.published`` to print the table in Markdown. The numbers are data,
not code: ``costmodel/data/published.toml`` (shipped with the package) holds one row per
compared figure with its source, its unit, the quantity the model computes (``metric``) and
the model configuration; rows measured in this repo read their value from a JSON file next to
it (``h100_measurements.json``). :func:`evaluate` turns each row into (published, predicted,
error) by calling the model with the row's configuration; errors are reported as they come
out, including where the model misses. Unknown, missing or mistyped keys in the data are
rejected with a ``ValueError`` naming the row and the key.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from costmodel._tomlio import check_keys, get_bool, get_number, get_str, loads_toml
from costmodel.estimate import estimate_attention, estimate_decode
from costmodel.traffic import transfers

__all__ = [
    "DATA_PACKAGE",
    "PUBLISHED_FILE",
    "PublishedRow",
    "comparison_rows",
    "evaluate",
    "load_measurements",
    "load_published",
    "markdown_table",
    "parse_published",
    "summary_table",
    "BASES",
]

DATA_PACKAGE = "costmodel.data"
PUBLISHED_FILE = "published.toml"

# unit -> factor from the model's base unit (seconds, or a plain ratio)
_UNITS = {"x": 1, "s": 1, "ms": 1e3, "us": 1e6}
_TIME_UNITS = {"s", "ms", "us"}

# config key -> kind ("int", "bool", "str", "number", "int_pair")
_CONFIG_KINDS = {
    "method": "str",
    "hardware": "str",
    "model": "str",
    "dtype": "str",
    "gqa_selection": "str",
    "batch": "int",
    "n_heads": "int",
    "n_kv_heads": "int",
    "seq_len": "int",
    "head_dim": "int",
    "r": "int",
    "k": "int",
    "store_k_twice": "bool",
    "ideal": "bool",
    "weight_bytes_per_param": "number",
    "seq_lens": "int_pair",
    "implementation": "str",
    "resident": "bool",
    "rows": "int",
    "n": "int",
}
#: what a row's number is to the model: the profile was fitted to it ("fitted"), it was not
#: used to fit anything ("predicted"), or it checks a formula ("formula")
BASES = ("fitted", "predicted", "formula")
# keys that go to the SparQ side only of a speed-up (the dense baseline does not take them)
_SPARQ_ONLY = {"r", "k", "store_k_twice", "gqa_selection"}


@dataclass(frozen=True)
class _Metric:
    required: frozenset[str]
    optional: frozenset[str]
    note_fields: frozenset[str]
    # (config, unit scale) -> (predicted in `unit`, fields for the note)
    compute: Callable[[Mapping[str, Any], float], tuple[float, dict[str, Any]]]


def _transfers_ratio(c, scale):
    d = c["head_dim"]
    el = transfers("sparq", seq_len=c["seq_len"], head_dim=d, r=c["r"], k=c["k"]) - 4 * d
    return 2 * c["seq_len"] * d / el * scale, {}


def _attention(c):
    kw = dict(c)
    return estimate_attention(kw.pop("method"), **kw)


def _attention_time(c, scale):
    e = _attention(c)
    return e.time_s * scale, {"bound": e.bound, "topk_share": e.topk_s / e.time_s}


def _attention_time_per_sequence(c, scale):
    e = _attention(c)
    return e.time_s / c["batch"] * scale, {"bound": e.bound, "topk_share": e.topk_s / e.time_s}


def _split_sparq(c):
    common = {k: v for k, v in c.items() if k not in _SPARQ_ONLY}
    only = {k: v for k, v in c.items() if k in _SPARQ_ONLY}
    return common, only


def _attention_speedup(c, scale):
    common, only = _split_sparq(c)
    dense = estimate_attention("dense", **common)
    sparq = estimate_attention("sparq", **only, **common)
    return dense.time_s / sparq.time_s * scale, {}


def _topk_time(c, scale):
    from costmodel.estimate import _resolve_hw
    from costmodel.traffic import dtype_bytes

    hw = _resolve_hw(c["hardware"])
    _, e = dtype_bytes(c.get("dtype", "float16"))
    t0 = hw.topk_latency_s if hw.topk_latency_s is not None else hw.kernel_latency_s
    nbytes = c["rows"] * (c["n"] * e + 8 * c["k"])
    return (t0 + nbytes / hw.topk_bytes_per_s) * scale, {}


def _decode(c):
    kw = dict(c)
    return estimate_decode(kw.pop("model"), **kw)


def _decode_part(part):
    def compute(c, scale):
        calibrated = _decode({**c, "ideal": False})
        return part(_decode(c)) * scale, {"calibrated": part(calibrated) * scale}

    return compute


def _decode_speedup(c, scale):
    common, only = _split_sparq(c)
    model = common.pop("model")
    dense = estimate_decode(model, method="dense", **common)
    sparq = estimate_decode(model, method="sparq", **only, **common)
    return dense.time_s / sparq.time_s * scale, {}


def _decode_fit(c):
    kw = dict(c)
    s0, s1 = kw.pop("seq_lens")
    t0, t1 = (_decode({**kw, "seq_len": s}).time_s for s in (s0, s1))
    slope = (t1 - t0) / (s1 - s0)
    return slope, t0 - slope * s0


def _decode_time_slope(c, scale):
    return _decode_fit(c)[0] * scale, {}


def _decode_time_intercept(c, scale):
    return _decode_fit(c)[1] * scale, {}


_ATTN = frozenset({"hardware", "batch", "n_heads", "seq_len", "head_dim"})
_ATTN_OPT = frozenset(
    {"n_kv_heads", "dtype", "r", "k", "store_k_twice", "gqa_selection", "ideal", "implementation",
     "resident"}
)  # fmt: skip
_DEC = frozenset({"model", "hardware", "batch", "seq_len"})
_DEC_OPT = frozenset({"dtype", "weight_bytes_per_param", "ideal", "implementation"})
_DEC_SPARQ = frozenset({"r", "k", "store_k_twice", "gqa_selection"})

_METRICS: dict[str, _Metric] = {
    "topk_time": _Metric(
        frozenset({"hardware", "rows", "n", "k"}), frozenset({"dtype"}), frozenset(), _topk_time
    ),
    "transfers_ratio": _Metric(
        frozenset({"seq_len", "head_dim", "r", "k"}), frozenset(), frozenset(), _transfers_ratio
    ),
    "attention_time": _Metric(
        _ATTN | {"method"}, _ATTN_OPT, frozenset({"bound", "topk_share"}), _attention_time
    ),
    "attention_time_per_sequence": _Metric(
        _ATTN | {"method"},
        _ATTN_OPT,
        frozenset({"bound", "topk_share"}),
        _attention_time_per_sequence,
    ),
    "attention_speedup": _Metric(_ATTN | {"r", "k"}, _ATTN_OPT, frozenset(), _attention_speedup),
    "decode_step_time": _Metric(
        _DEC,
        _DEC_OPT | _DEC_SPARQ | {"method"},
        frozenset({"calibrated"}),
        _decode_part(lambda e: e.time_s),
    ),
    "decode_attention_time": _Metric(
        _DEC,
        _DEC_OPT | _DEC_SPARQ | {"method"},
        frozenset({"calibrated"}),
        _decode_part(lambda e: e.attention.time_s),
    ),
    "decode_weights_time": _Metric(
        _DEC,
        _DEC_OPT | _DEC_SPARQ | {"method"},
        frozenset({"calibrated"}),
        _decode_part(lambda e: e.weights_s),
    ),
    "decode_speedup": _Metric(
        _DEC | {"r", "k"}, _DEC_OPT | _DEC_SPARQ, frozenset(), _decode_speedup
    ),
    "decode_time_slope": _Metric(
        (_DEC - {"seq_len"}) | {"seq_lens"},
        _DEC_OPT | _DEC_SPARQ | {"method"},
        frozenset(),
        _decode_time_slope,
    ),
    "decode_time_intercept": _Metric(
        (_DEC - {"seq_len"}) | {"seq_lens"},
        _DEC_OPT | _DEC_SPARQ | {"method"},
        frozenset(),
        _decode_time_intercept,
    ),
}


@dataclass(frozen=True)
class PublishedRow:
    """One compared figure: ``published`` is in ``unit`` (measured rows: already read)."""

    quantity: str
    source: str
    citation: str
    published: float
    unit: str
    metric: str
    config: Mapping[str, Any]
    note: str = ""
    measured: Mapping[str, Any] | None = field(default=None)
    basis: str = "predicted"


# ------------------------------------------------------------------------------- loading
def load_measurements(name: str) -> dict:
    """A JSON measurement file shipped in ``costmodel/data`` (e.g. ``h100_measurements.json``)."""
    if not isinstance(name, str) or "/" in name or os.sep in name or not name.endswith(".json"):
        raise ValueError(f"measurement file: expected a .json name in {DATA_PACKAGE}, got {name!r}")
    path = resources.files(DATA_PACKAGE) / name
    if not path.is_file():
        raise FileNotFoundError(f"measurement file {name!r} is not shipped in {DATA_PACKAGE}")
    return json.loads(path.read_text(encoding="utf-8"))


def _get_config(raw: Any, metric: _Metric, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: key 'config': expected a table ([row.config])")
    origin = f"{where} [config]"
    check_keys(raw, required=set(metric.required), optional=set(metric.optional), origin=origin)
    out: dict[str, Any] = {}
    for key in raw:
        kind = _CONFIG_KINDS[key]
        if kind == "str":
            out[key] = get_str(raw, key, origin)
        elif kind == "bool":
            out[key] = get_bool(raw, key, origin)
        elif kind == "int":
            out[key] = get_number(raw, key, origin, minimum=1, integer=True)
        elif kind == "number":
            out[key] = get_number(raw, key, origin, minimum=0, strict_min=True)
        else:  # int_pair
            pair = raw[key]
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                or not 0 < pair[0] < pair[1]
            ):
                raise ValueError(
                    f"{origin}: key '{key}': expected two increasing positive integers,"
                    f" got {pair!r}"
                )
            out[key] = tuple(pair)
    return out


def _note_fields(note: str, where: str) -> set[str]:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(note) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{where}: key 'note' is not a valid format string: {exc}") from None
    return names


def _measured_value(raw: Any, unit: str, where: str) -> float:
    origin = f"{where} [measured]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: key 'measured': expected a table ([row.measured])")
    check_keys(raw, required={"file", "table", "field", "where"},
               optional={"over", "over_table"}, origin=origin)  # fmt: skip
    name = get_str(raw, "file", origin)
    table = get_str(raw, "table", origin)
    fld = get_str(raw, "field", origin)
    over = get_str(raw, "over", origin) if "over" in raw else None
    if "over_table" in raw and over is None:
        raise ValueError(f"{origin}: key 'over_table' needs 'over'")
    over_table = get_str(raw, "over_table", origin) if "over_table" in raw else table
    match = raw["where"]
    if not isinstance(match, Mapping) or not match:
        raise ValueError(f"{origin}: key 'where': expected a non-empty table of values to match")
    for f in (fld,) if over is None else (fld, over):
        if not f.endswith("_s"):
            raise ValueError(
                f"{origin}: measured field {f!r}: expected a time in seconds (name ending in _s)"
            )
    if over is None and unit not in _TIME_UNITS:
        raise ValueError(
            f"{origin}: measured field {fld!r}: expected the row's unit one of "
            f"{sorted(_TIME_UNITS)}, got unit {unit!r}"
        )
    if over is not None and unit != "x":
        raise ValueError(f"{origin}: a ratio (field / over) needs unit 'x', got {unit!r}")
    data = load_measurements(name)
    values = []
    pairs = [(table, fld)] if over is None else [(table, fld), (over_table, over)]
    for tbl, f in pairs:
        rows = data.get(tbl)
        if not isinstance(rows, list):
            raise ValueError(f"{origin}: {name} has no table {tbl!r}")
        hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        if len(hits) != 1:
            raise ValueError(
                f"{origin}: {len(hits)} rows of {name} [{tbl}] match {dict(match)}, expected 1"
            )
        value = hits[0].get(f)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{origin}: {name} [{tbl}] field {f!r} is {value!r}, not a time")
        values.append(value)
    if over is not None:
        return values[0] / values[1]
    return values[0] * _UNITS[unit]


_ROW_KEYS = {"quantity", "source", "unit", "metric", "config"}
_ROW_OPTIONAL = {"note", "published", "measured", "basis"}


def _parse_row(raw: Any, i: int, citations: Mapping[str, str], origin: str) -> PublishedRow:
    where = f"{origin} row {i + 1}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table ([[row]])")
    if isinstance(raw.get("quantity"), str):
        where = f"{where} ({raw['quantity']!r})"
    check_keys(raw, required=_ROW_KEYS, optional=_ROW_OPTIONAL, origin=where)
    quantity = get_str(raw, "quantity", where)
    source = get_str(raw, "source", where)
    if source not in citations:
        raise ValueError(f"{where}: source {source!r} has no [sources.{source!r}] citation")
    unit = get_str(raw, "unit", where, choices=set(_UNITS))
    metric_name = get_str(raw, "metric", where, choices=set(_METRICS))
    metric = _METRICS[metric_name]
    note = get_str(raw, "note", where) if "note" in raw else ""
    bad = sorted(_note_fields(note, where) - metric.note_fields)
    if bad:
        raise ValueError(
            f"{where}: note names unknown field(s) {bad}; metric {metric_name!r} provides "
            f"{sorted(metric.note_fields)}"
        )
    config = _get_config(raw["config"], metric, where)
    if ("published" in raw) == ("measured" in raw):
        raise ValueError(f"{where}: give exactly one of 'published' and [row.measured]")
    measured = None
    if "published" in raw:
        published = get_number(raw, "published", where, minimum=0, strict_min=True)
    else:
        measured = raw["measured"]
        published = _measured_value(measured, unit, where)
    basis = get_str(raw, "basis", where, choices=set(BASES)) if "basis" in raw else "predicted"
    return PublishedRow(
        quantity=quantity,
        source=source,
        citation=citations[source],
        published=published,
        unit=unit,
        metric=metric_name,
        config=config,
        note=note,
        measured=measured,
        basis=basis,
    )


def parse_published(text: str, origin: str = PUBLISHED_FILE) -> list[PublishedRow]:
    """Parse the published-numbers TOML strictly; a ``ValueError`` names file, row and key."""
    data = loads_toml(text, origin)
    check_keys(data, required={"sources", "row"}, optional=set(), origin=origin)
    sources = data["sources"]
    if not isinstance(sources, Mapping):
        raise ValueError(f"{origin}: key 'sources': expected a table of [sources.\"LABEL\"]")
    citations: dict[str, str] = {}
    for label, entry in sources.items():
        where = f"{origin} [sources.{label!r}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a table with a citation")
        check_keys(entry, required={"citation"}, optional=set(), origin=where)
        citations[label] = get_str(entry, "citation", where)
    raw_rows = data["row"]
    if not isinstance(raw_rows, list) or not raw_rows:
        raise ValueError(f"{origin}: key 'row': expected a non-empty array of tables ([[row]])")
    rows = [_parse_row(raw, i, citations, origin) for i, raw in enumerate(raw_rows)]
    unused = sorted(set(citations) - {r.source for r in rows})
    if unused:
        raise ValueError(f"{origin}: [sources] entries no row uses: {unused}")
    return rows


def load_published(path: str | os.PathLike | None = None) -> list[PublishedRow]:
    """The shipped ``costmodel/data/published.toml`` (default), or a TOML file at ``path``."""
    if path is None:
        text = (resources.files(DATA_PACKAGE) / PUBLISHED_FILE).read_text(encoding="utf-8")
        return parse_published(text, f"{DATA_PACKAGE.replace('.', '/')}/{PUBLISHED_FILE}")
    p = Path(path)
    return parse_published(p.read_text(encoding="utf-8"), str(p))


# ---------------------------------------------------------------------------- evaluation
def evaluate(row: PublishedRow) -> dict:
    """Call the model with the row's configuration: the table row as a dict."""
    predicted, fields = _METRICS[row.metric].compute(row.config, _UNITS[row.unit])
    published = row.published
    err = (predicted - published) / published if published else math.nan
    return dict(
        quantity=row.quantity,
        source=row.source,
        citation=row.citation,
        published=published,
        predicted=predicted,
        unit=row.unit,
        error=err,
        note=row.note.format(**fields),
        basis=row.basis,
        hardware=row.config.get("hardware", ""),
    )


def comparison_rows(rows: list[PublishedRow] | None = None) -> list[dict]:
    """Every data row evaluated, in file order (default: the shipped data)."""
    return [evaluate(r) for r in (load_published() if rows is None else rows)]


def markdown_table(rows: list[dict] | None = None) -> str:
    rows = comparison_rows() if rows is None else rows
    out = [
        "| quantity | source | published / measured | predicted | error | basis | note |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return f"{v:.4g}"

    for r in rows:
        out.append(
            f"| {r['quantity']} | {r['source']} | {fmt(r['published'])} {r['unit']} | "
            f"{fmt(r['predicted'])} {r['unit']} | {r['error']:+.1%} | {r.get('basis', '')} | "
            f"{r['note']} |"
        )
    return "\n".join(out)


def summary_table(rows: list[dict] | None = None) -> str:
    """Median and largest |error| per device (profile) and basis, Markdown."""
    import statistics

    rows = comparison_rows() if rows is None else rows
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        key = (r.get("hardware") or "(formula)", r.get("basis", "predicted"))
        groups.setdefault(key, []).append(abs(r["error"]))
    out = ["| device | basis | rows | median abs error | max abs error |", "|---|---|---|---|---|"]
    for (dev, basis), errs in sorted(groups.items()):
        out.append(
            f"| {dev} | {basis} | {len(errs)} | {statistics.median(errs):.1%} | {max(errs):.1%} |"
        )
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
    print()
    print(summary_table())
