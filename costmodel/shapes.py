"""Model shapes as data: one TOML file per model in ``costmodel/models/``.

Only what a decode step's traffic depends on: layer count, widths, heads, FFN size, vocabulary
and the few architecture switches that change the parameter count (gated FFN, biases, tied
embeddings). Every value of a shipped shape cites the Hugging Face ``config.json`` it came
from (``[sources.KEY]`` tables, required there); a user's TOML file may leave ``sources``
out, or give them for some keys. :func:`load_model` also reads a Hugging Face
``config.json`` directly (:mod:`costmodel.hfconfig`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from costmodel._tomlio import (
    check_bool,
    check_date,
    check_keys,
    check_number,
    check_sources,
    check_str,
    load_named,
    loads_toml,
    shipped_names,
    show,
)

__all__ = [
    "MAX_HEAD_DIM",
    "MAX_MODEL_INT",
    "ModelShape",
    "list_models",
    "load_model",
    "parse_model",
]

_INT_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size")

#: largest value of an integer field of a model shape (file or :class:`ModelShape`): far
#: above any real model (vocabularies ~2.6e5, widths ~3e4), small enough that every count
#: the cost model derives from a shape is a finite float
MAX_MODEL_INT = 2**24
#: largest head dimension: real models use 64-256; the expected-transactions sum of
#: :func:`costmodel.traffic.expected_touched_segments` grows ~d^3 (25 ms at d = 1024,
#: 1.2 s at 4096), so the cost model accepts d <= 1024
MAX_HEAD_DIM = 1024
_BOOL_KEYS = ("gated_ffn", "linear_bias", "norm_bias", "tied_embeddings")
_REQUIRED = {"name", "description", *_INT_KEYS, *_BOOL_KEYS}


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's shape.

    Attributes
    ----------
    n_layers, d_model, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size : int
        As in the Hugging Face config (``head_dim`` need not equal ``d_model / n_heads``).
    gated_ffn : bool
        Three FFN matrices (SwiGLU/GeGLU) instead of two.
    linear_bias, norm_bias : bool
        Biases on linear layers (GPT-NeoX) / LayerNorm with bias.
    tied_embeddings : bool
        Output projection shares the embedding matrix.
    """

    name: str
    description: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    gated_ffn: bool
    linear_bias: bool
    norm_bias: bool
    tied_embeddings: bool
    sources: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        values = _validate_shape(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"},
            origin=None,
        )
        for key, value in values.items():
            object.__setattr__(self, key, value)
        if not isinstance(self.sources, dict):
            raise TypeError(f"sources: expected a dict, got {type(self.sources).__name__}")
        checked = {}
        for key, pair in self.sources.items():
            if key not in _INT_KEYS and key not in _BOOL_KEYS:
                raise ValueError(f"sources: expected keys among the shape fields, got {show(key)}")
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"sources[{key!r}]: expected (source, date), got {show(pair)}")
            checked[key] = (
                check_str(pair[0], f"sources[{key!r}] source"),
                check_date(pair[1], f"sources[{key!r}] retrieved"),
            )
        object.__setattr__(self, "sources", checked)

    @property
    def group_size(self) -> int:
        """GQA group size ``g = n_heads / n_kv_heads``."""
        return self.n_heads // self.n_kv_heads

    @property
    def params_per_layer(self) -> int:
        """Parameters of one transformer block (attention, FFN, two norms)."""
        dm, hq, hkv = self.d_model, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        attn = dm * hq + 2 * dm * hkv + hq * dm
        ffn = (3 if self.gated_ffn else 2) * dm * self.ffn_dim
        if self.linear_bias:
            attn += hq + 2 * hkv + dm
            ffn += self.ffn_dim + dm
        norms = 2 * dm * (2 if self.norm_bias else 1)
        return attn + ffn + norms

    @property
    def n_params(self) -> int:
        """Total parameters (embeddings counted once when tied; final norm included)."""
        emb = self.vocab_size * self.d_model * (1 if self.tied_embeddings else 2)
        return (
            self.n_layers * self.params_per_layer
            + emb
            + self.d_model * (2 if self.norm_bias else 1)
        )

    @property
    def params_read_per_step(self) -> int:
        """Parameters a decode step streams from memory: all but the input embedding table.

        The input embedding is a row gather (``d_model`` values per token, counted); with
        tied embeddings the output projection reads the whole shared matrix anyway.
        """
        unread = 0 if self.tied_embeddings else self.vocab_size * self.d_model - self.d_model
        return self.n_params - unread


def _validate_shape(values: dict, *, origin: str | None) -> dict:
    """The one check of a model shape's values, shared by :func:`parse_model` (a file:
    ``ValueError`` naming the file and key) and every :class:`ModelShape` construction
    (``TypeError``/``ValueError`` naming the field): integers in ``[1, MAX_MODEL_INT]``
    (``head_dim <= MAX_HEAD_DIM``; bool is not a number, ``32.5`` is not an integer), real
    bools, non-empty strings, ``n_heads`` a multiple of ``n_kv_heads``."""
    type_error: type[Exception] = ValueError if origin is not None else TypeError

    def label(key: str) -> str:
        return f"{origin}: key '{key}'" if origin is not None else key

    out: dict = {}
    for key in _INT_KEYS:
        hi = MAX_HEAD_DIM if key == "head_dim" else MAX_MODEL_INT
        out[key] = int(
            check_number(values[key], label(key), minimum=1, maximum=hi, integer=True,
                         type_error=type_error)
        )  # fmt: skip
    for key in _BOOL_KEYS:
        v = values[key]
        if origin is not None and not isinstance(v, bool):
            raise ValueError(f"{label(key)}: expected true or false, got {show(v)}")
        out[key] = check_bool(v, label(key))
    for key in ("name", "description"):
        out[key] = check_str(values[key], label(key), type_error=type_error)
    if out["n_heads"] % out["n_kv_heads"]:
        raise ValueError(
            f"{label('n_heads')} ({out['n_heads']}): expected a multiple of "
            f"{'n_kv_heads' if origin is None else repr('n_kv_heads')} ({out['n_kv_heads']})"
        )
    return out


def parse_model(text: str, origin: str, *, require_sources: bool = True) -> ModelShape:
    """Parse and validate one model-shape TOML text.

    With ``require_sources`` (the shipped shapes) a ``[sources.KEY]`` table is required for
    every number and switch; without it (a user's file) ``sources`` may be absent, and the
    keys it gives sources for are checked."""
    data = loads_toml(text, origin)
    required = _REQUIRED | ({"sources"} if require_sources else set())
    check_keys(data, required=required, optional={"sources"}, origin=origin)
    values = _validate_shape(data, origin=origin)
    if "sources" not in data:
        return ModelShape(**values)
    keys = set(_INT_KEYS) | set(_BOOL_KEYS)
    if not require_sources and isinstance(data["sources"], dict):
        keys = keys & set(data["sources"])  # what it gives is checked; others are unknown
    sources = check_sources(data["sources"], keys, origin)
    return ModelShape(sources=sources, **values)


def _parse_user_model(text: str, origin: str) -> ModelShape:
    return parse_model(text, origin, require_sources=False)


def list_models() -> list[str]:
    """Names of the model shapes shipped with the package, sorted."""
    return shipped_names("costmodel.models")


def load_model(name_or_path: str | os.PathLike | ModelShape) -> ModelShape:
    """Load a shipped model shape by name (``"llama-2-7b"``), a TOML file by path, or a
    Hugging Face ``config.json`` (a path ending in ``.json``; :mod:`costmodel.hfconfig`).

    Errors as :func:`costmodel.hardware.load_hardware` (unknown name, invalid or unreadable
    file: ``ValueError``; missing file: ``FileNotFoundError`` that is also a ``ValueError``;
    wrong type: ``TypeError``)."""
    return _load(name_or_path, "name_or_path")


def _load(name_or_path, argname: str) -> ModelShape:
    """:func:`load_model` with errors naming the caller's argument ``argname``."""
    if isinstance(name_or_path, ModelShape):
        return name_or_path
    if isinstance(name_or_path, (str, os.PathLike)):
        s = os.fspath(name_or_path)
        if isinstance(s, str) and s.endswith(".json"):
            from costmodel.hfconfig import load_hf_config

            return load_hf_config(s, argname=argname)
        if isinstance(s, str) and (s.endswith(".toml") or os.sep in s or "/" in s):
            parse = _parse_user_model
        else:
            parse = parse_model
    else:
        parse = parse_model
    return load_named(name_or_path, package="costmodel.models", what="model shape",
                      kinds="models", parse=parse, argname=argname)  # fmt: skip
