"""Tests of costmodel.shapes: model shapes reproduce published parameter counts; the loader.

Sources: "paper" = Ribar et al., SparQ Attention, ICML 2024 (arXiv 2312.04985v6); "blog" =
the authors' blog post on SparQ (Llama 2 7B on A100 latency table); "H100 run" = this repo's
benchmarks/gpu_decode_attention.py on an NVIDIA H100 80GB HBM3 (SXM), stored in
docs/costmodel_h100_measurements.json. Hand calculations are written out in the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from costmodel.shapes import list_models, load_model

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ model shapes
# Parameter totals: Pythia paper (Biderman et al. 2023) Table 1 for Pythia; Hugging Face
# model cards / safetensors totals for the others.
PUBLISHED_PARAMS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "mistral-7b": 7_241_732_096,
    "gemma-7b": 8_537_680_896,
    "pythia-1.4b": 1_414_647_808,
    "pythia-2.8b": 2_775_208_960,
    "pythia-6.9b": 6_857_302_016,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_model_shapes_reproduce_published_parameter_counts(name):
    assert load_model(name).n_params == PUBLISHED_PARAMS[name]


def test_model_shapes_match_paper_table_g1():
    # paper Table G1: head dim d and group size g
    g1 = {
        "llama-2-7b": (128, 1),
        "llama-2-13b": (128, 1),
        "llama-3-8b": (128, 4),
        "mistral-7b": (128, 4),
        "gemma-7b": (256, 1),
        "pythia-1.4b": (128, 1),
        "pythia-2.8b": (80, 1),
        "pythia-6.9b": (128, 1),
    }
    for name, (d, g) in g1.items():
        m = load_model(name)
        assert (m.head_dim, m.group_size) == (d, g)
    assert load_model("llama-3-70b").group_size == 8
    assert set(PUBLISHED_PARAMS) <= set(list_models())


MODEL_GOOD = (ROOT / "costmodel" / "models" / "llama-2-7b.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("n_layers = 32\n", "n_layers = 32\nrope_theta = 1e4\n"), "unknown"),
        (lambda t: t.replace("ffn_dim = 11008\n", ""), "missing.*ffn_dim"),
        (lambda t: t.replace("n_kv_heads = 32", "n_kv_heads = 5"), "multiple of"),
        (lambda t: t.replace("n_layers = 32", "n_layers = 0"), "n_layers.*>= 1"),
        (lambda t: t.replace("head_dim = 128", "head_dim = 127.5"), "head_dim.*integer"),
        (lambda t: t.replace("gated_ffn = true", "gated_ffn = 1"), "gated_ffn.*true or false"),
        (lambda t: t.replace("[sources.vocab_size]", "[sources.vocab]"), "sources"),
    ],
)
def test_model_loader_rejects_bad_files(tmp_path, edit, match):
    p = tmp_path / "bad_model.toml"
    p.write_text(edit(MODEL_GOOD))
    with pytest.raises(ValueError, match=match) as info:
        load_model(str(p))
    assert "bad_model.toml" in str(info.value)
