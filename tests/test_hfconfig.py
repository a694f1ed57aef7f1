"""Model shapes from Hugging Face ``config.json`` files (``costmodel.hfconfig``) and user
model TOML files without ``sources``.

The fixtures in ``tests/data/hf_configs`` are hand-written with each family's field names
and the public models' values; where a shipped TOML shape exists the two must agree field by
field. Qwen2 parameter counts are checked against hand sums (Qwen2-0.5B's published total,
494,032,768, is reproduced exactly because its q/k/v biases, 1152 per layer, are added back
by hand).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from costmodel.hfconfig import load_hf_config, model_from_hf_config
from costmodel.shapes import load_model, parse_model
from sparq_cli import main

DATA = Path(__file__).parent / "data" / "hf_configs"
SHAPE_FIELDS = [
    f.name
    for f in dataclasses.fields(load_model("llama-2-7b"))
    if f.name not in ("name", "description", "sources")
]


@pytest.mark.parametrize(
    "name", ["llama-2-7b", "llama-3-8b", "mistral-7b", "gemma-7b", "pythia-1.4b"]
)
def test_hf_config_gives_the_shipped_shape(name):
    hf = load_model(str(DATA / f"{name}.json"))
    shipped = load_model(name)
    assert {f: getattr(hf, f) for f in SHAPE_FIELDS} == {
        f: getattr(shipped, f) for f in SHAPE_FIELDS
    }
    assert hf.n_params == shipped.n_params


def test_family_switches():
    gemma = load_hf_config(DATA / "gemma-7b.json")
    assert gemma.head_dim == 256 and gemma.d_model // gemma.n_heads == 192
    assert gemma.tied_embeddings  # GemmaConfig's default: the file does not say
    neox = load_hf_config(DATA / "pythia-1.4b.json")
    # 8192 = 4 x 2048 would look "ungated" by ratio anyway; GPT-NeoX is ungated by design
    assert not neox.gated_ffn and neox.linear_bias and neox.norm_bias
    # Mistral's intermediate/hidden = 3.5 is gated because the architecture is
    assert load_hf_config(DATA / "mistral-7b.json").gated_ffn


def test_qwen2_parameter_counts_by_hand():
    q7 = load_hf_config(DATA / "qwen2-7b.json")
    assert (q7.n_heads, q7.n_kv_heads, q7.head_dim) == (28, 4, 128)
    emb = 152064 * 3584
    layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944 + 2 * 3584
    assert q7.n_params == 28 * layer + 2 * emb + 3584
    q05 = load_hf_config(DATA / "qwen2-0.5b.json")
    assert q05.tied_embeddings
    assert q05.n_params + 24 * (896 + 128 + 128) == 494_032_768
    assert q05.params_read_per_step == q05.n_params  # tied: the output projection reads it all


def test_name_from_directory(tmp_path):
    d = tmp_path / "Llama-2-7b-hf"
    d.mkdir()
    (d / "config.json").write_text((DATA / "llama-2-7b.json").read_text())
    assert load_model(str(d / "config.json")).name == "Llama-2-7b-hf"


BASE = json.loads((DATA / "llama-3-8b.json").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"hidden_size": None, "vocab_size": None},
         "missing field(s) ['hidden_size', 'vocab_size']"),
        ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]},
         "expected model_type or architectures of a supported family"),
        ({"num_hidden_layers": 32.5}, "field 'num_hidden_layers': expected an integer, got 32.5"),
        ({"tie_word_embeddings": "no"}, "field 'tie_word_embeddings': expected true or false"),
        ({"hidden_size": 4100, "head_dim": None}, "expected a multiple of num_attention_heads"),
        ({"attention_bias": True}, "'attention_bias' (True) and 'mlp_bias' (False)"),
        ({"num_key_value_heads": 5}, "expected a multiple of"),
    ],
)  # fmt: skip
def test_errors_name_the_field(edit, message):
    cfg = {k: v for k, v in BASE.items() if not (k in edit and edit[k] is None)}
    cfg.update({k: v for k, v in edit.items() if v is not None})
    with pytest.raises(ValueError) as exc:
        model_from_hf_config(cfg, origin="cfg.json")
    assert message in str(exc.value)


def test_model_from_hf_config_type_error():
    with pytest.raises(TypeError, match="config: expected a dict"):
        model_from_hf_config("config.json")


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json file not found"):
        load_model(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(str(bad))


TOML = """name = "tiny"
description = "a user's model"
n_layers = 2
d_model = 256
n_heads = 4
n_kv_heads = 2
head_dim = 64
ffn_dim = 512
vocab_size = 1000
gated_ffn = true
linear_bias = false
norm_bias = false
tied_embeddings = true
"""


def test_user_toml_without_sources(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TOML)
    m = load_model(str(p))
    assert m.n_kv_heads == 2 and m.sources == {}
    # some sources are fine; an unknown key is still an error
    p.write_text(TOML + '[sources.n_layers]\nsource = "my notes"\nretrieved = "2026-01-01"\n')
    assert load_model(str(p)).sources == {"n_layers": ("my notes", "2026-01-01")}
    p.write_text(TOML + '[sources.layers]\nsource = "x"\nretrieved = "2026-01-01"\n')
    with pytest.raises(ValueError, match="unknown or absent key"):
        load_model(str(p))


def test_shipped_shapes_still_need_sources():
    with pytest.raises(ValueError, match="missing required key.*sources"):
        parse_model(TOML, "costmodel/models/tiny.toml")


def test_cli_model_from_config_json(capsys):
    argv = ["estimate", "--batch", "1", "--seq-lens", "4096", "--json"]
    assert main([*argv, "--model", str(DATA / "mistral-7b.json")]) == 0
    hf = json.loads(capsys.readouterr().out)["rows"][0]
    assert main([*argv, "--model", "mistral-7b"]) == 0
    shipped = json.loads(capsys.readouterr().out)["rows"][0]
    assert hf["model"] == "mistral-7b"
    for key in ("dense_step_time_s", "sparq_step_time_s", "weights_bytes"):
        assert hf[key] == shipped[key]
    assert main(["estimate", "--model", str(DATA / "nope.json")]) == 2
    assert "config.json file not found" in capsys.readouterr().err
