"""Model shapes from a Hugging Face ``config.json`` (standard library only).

Five families, told apart by ``model_type`` (else the first of ``architectures``):

========== ============================ ===== ============ ========== =================
family     architectures                gated linear bias  norm bias  tied embeddings
                                                                      when not given
========== ============================ ===== ============ ========== =================
llama      ``LlamaForCausalLM``         yes   ``attention_bias`` no   false
mistral    ``MistralForCausalLM``       yes   no           no         false
gemma      ``GemmaForCausalLM``         yes   no           no         true
qwen2      ``Qwen2ForCausalLM``         yes   no (q/k/v    no         false
                                              biases not
                                              counted)
gpt_neox   ``GPTNeoXForCausalLM``       no    yes          yes        false
========== ============================ ===== ============ ========== =================

The gated MLP (three FFN matrices) follows from the architecture (these Llama-style blocks
have ``gate_proj``/``up_proj``/``down_proj``; GPT-NeoX has ``dense_h_to_4h``/
``dense_4h_to_h``), never from the ratio of ``intermediate_size`` to ``hidden_size``.
"Tied embeddings when not given" is the default of that family's ``transformers``
configuration class, used when the file has no ``tie_word_embeddings``.

Fields read (all families): ``num_hidden_layers``, ``hidden_size``,
``num_attention_heads``, ``intermediate_size``, ``vocab_size``; optional
``num_key_value_heads`` (default ``num_attention_heads``), ``head_dim`` (default
``hidden_size / num_attention_heads``, which must then divide exactly) and
``tie_word_embeddings``; Llama's ``attention_bias`` and ``mlp_bias`` (both or neither: the
shape has one switch). Qwen2's q/k/v projection biases (``n_layers x (n_heads + 2 x
n_kv_heads) x head_dim`` values, under 0.01% of the parameters) are not counted. Mistral's
``sliding_window`` does not change the shape; the cost model prices the full cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from costmodel._tomlio import MAX_FILE_BYTES, DataFileNotFoundError, show
from costmodel.shapes import ModelShape

__all__ = ["FAMILIES", "model_from_hf_config", "load_hf_config"]

#: family -> (architecture class, gated FFN, norm bias, default tie_word_embeddings)
FAMILIES: dict[str, tuple[str, bool, bool, bool]] = {
    "llama": ("LlamaForCausalLM", True, False, False),
    "mistral": ("MistralForCausalLM", True, False, False),
    "gemma": ("GemmaForCausalLM", True, False, True),
    "qwen2": ("Qwen2ForCausalLM", True, False, False),
    "gpt_neox": ("GPTNeoXForCausalLM", False, True, False),
}
_REQUIRED = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


def _family(config: dict, origin: str) -> str:
    mt = config.get("model_type")
    if isinstance(mt, str) and mt in FAMILIES:
        return mt
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        for fam, (arch, *_rest) in FAMILIES.items():
            if archs[0] == arch:
                return fam
    known = ", ".join(f"{f} ({a})" for f, (a, *_r) in FAMILIES.items())
    raise ValueError(
        f"{origin}: expected model_type or architectures of a supported family ({known}), "
        f"got model_type={show(mt)}, architectures={show(archs)}"
    )


def _int(config: dict, key: str, origin: str) -> int:
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{origin}: field '{key}': expected an integer, got {show(v)}")
    return v


def _bool(config: dict, key: str, default: bool, origin: str) -> bool:
    v = config.get(key, default)
    if not isinstance(v, bool):
        raise ValueError(f"{origin}: field '{key}': expected true or false, got {show(v)}")
    return v


def model_from_hf_config(
    config: dict, *, name: str | None = None, origin: str = "config"
) -> ModelShape:
    """The :class:`~costmodel.shapes.ModelShape` of a parsed Hugging Face ``config.json``.

    Parameters
    ----------
    config : dict
        The parsed JSON object.
    name : str or None
        The shape's name (default ``origin``).
    origin : str
        Where the config came from, for messages and the description.

    Raises
    ------
    TypeError
        ``config`` is not a dict.
    ValueError
        Unsupported family, a missing field (every missing field is named), a field of the
        wrong type, or an inconsistent shape.
    """
    if not isinstance(config, dict):
        raise TypeError(
            f"config: expected a dict (a parsed config.json), got {type(config).__name__}"
        )
    fam = _family(config, origin)
    arch, gated, norm_bias, tie_default = FAMILIES[fam]
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(
            f"{origin}: missing field(s) {missing} (a {fam} config.json needs {list(_REQUIRED)})"
        )
    n_layers = _int(config, "num_hidden_layers", origin)
    d_model = _int(config, "hidden_size", origin)
    n_heads = _int(config, "num_attention_heads", origin)
    ffn = _int(config, "intermediate_size", origin)
    vocab = _int(config, "vocab_size", origin)
    n_kv = _int(config, "num_key_value_heads", origin) if config.get(
        "num_key_value_heads") is not None else n_heads  # fmt: skip
    if config.get("head_dim") is not None:
        head_dim = _int(config, "head_dim", origin)
    else:
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(
                f"{origin}: field 'hidden_size' ({d_model}): expected a multiple of "
                f"num_attention_heads ({n_heads}) when head_dim is not given"
            )
        head_dim = d_model // n_heads
    tied = _bool(config, "tie_word_embeddings", tie_default, origin)
    if fam == "gpt_neox":
        linear_bias = True
    elif fam == "llama":
        ab = _bool(config, "attention_bias", False, origin)
        mb = _bool(config, "mlp_bias", False, origin)
        if ab != mb:
            raise ValueError(
                f"{origin}: fields 'attention_bias' ({ab}) and 'mlp_bias' ({mb}): expected "
                "equal values (the model shape has one linear_bias switch)"
            )
        linear_bias = ab
    else:
        linear_bias = False
    label = origin if name is None else name
    return ModelShape(
        name=label,
        description=f"from Hugging Face config.json ({fam}, {arch}): {origin}",
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        ffn_dim=ffn,
        vocab_size=vocab,
        gated_ffn=gated,
        linear_bias=linear_bias,
        norm_bias=norm_bias,
        tied_embeddings=tied,
    )


def load_hf_config(path: str | os.PathLike, *, argname: str = "path") -> ModelShape:
    """Read a ``config.json`` file and return its shape (:func:`model_from_hf_config`).

    The name is the file's directory (``.../Llama-2-7b-hf/config.json`` -> ``Llama-2-7b-hf``)
    when the file is called ``config.json``, else the file's stem. A missing file raises a
    ``FileNotFoundError`` that is also a ``ValueError``; unreadable, too large (over 1 MiB)
    or invalid JSON a ``ValueError``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argname}: expected a config.json path, got {type(path).__name__}")
    p = Path(path)
    s = os.fspath(path)
    try:
        found = p.is_file()
    except OSError:
        found = False
    if not found:
        raise DataFileNotFoundError(f"{argname}: config.json file not found: {show(s)}")
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{argname}: {show(s)}: expected at most {MAX_FILE_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{s}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{argname}: cannot read {show(s)}: {exc.strerror or exc}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{s}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{s}: expected a JSON object, got {type(config).__name__}")
    name = (p.resolve().parent.name or p.stem) if p.name == "config.json" else p.stem
    return model_from_hf_config(config, name=name, origin=s)
