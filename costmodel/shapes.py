"""Model shapes as data: one TOML file per model in ``costmodel/models/``.

Only what a decode step's traffic depends on: layer count, widths, heads, FFN size, vocabulary
and the few architecture switches that change the parameter count (gated FFN, biases, tied
embeddings). Every value cites the Hugging Face ``config.json`` it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from costmodel._tomlio import (
    check_keys,
    check_sources,
    get_bool,
    get_number,
    get_str,
    load_named,
    loads_toml,
    shipped_names,
)

__all__ = ["ModelShape", "list_models", "load_model", "parse_model"]

_INT_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size")
_BOOL_KEYS = ("gated_ffn", "linear_bias", "norm_bias", "tied_embeddings")
_REQUIRED = {"name", "description", "sources", *_INT_KEYS, *_BOOL_KEYS}


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


def parse_model(text: str, origin: str) -> ModelShape:
    """Parse and validate one model-shape TOML text."""
    data = loads_toml(text, origin)
    check_keys(data, required=_REQUIRED, optional=set(), origin=origin)
    ints = {k: int(get_number(data, k, origin, minimum=1, integer=True)) for k in _INT_KEYS}
    bools = {k: get_bool(data, k, origin) for k in _BOOL_KEYS}
    sources = check_sources(data["sources"], set(_INT_KEYS) | set(_BOOL_KEYS), origin)
    if ints["n_heads"] % ints["n_kv_heads"]:
        raise ValueError(
            f"{origin}: key 'n_heads' ({ints['n_heads']}): expected a multiple of "
            f"'n_kv_heads' ({ints['n_kv_heads']})"
        )
    return ModelShape(
        name=get_str(data, "name", origin),
        description=get_str(data, "description", origin),
        sources=sources,
        **ints,
        **bools,
    )


def list_models() -> list[str]:
    """Names of the model shapes shipped with the package, sorted."""
    return shipped_names("costmodel.models")


def load_model(name_or_path: str | os.PathLike | ModelShape) -> ModelShape:
    """Load a shipped model shape by name (``"llama-2-7b"``) or a TOML file by path."""
    if isinstance(name_or_path, ModelShape):
        return name_or_path
    return load_named(name_or_path, package="costmodel.models", what="model shape",
                      kinds="models", parse=parse_model)  # fmt: skip
