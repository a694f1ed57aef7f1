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


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("n_layers = 32", "n_layers = 100000000"), "n_layers.*<= 16777216"),
        (lambda t: t.replace("vocab_size = 32000", "vocab_size = 1e300"), "vocab_size.*<="),
        (lambda t: t.replace("head_dim = 128", "head_dim = 4096"), "head_dim.*<= 1024"),
        (lambda t: t.replace("n_layers = 32", "n_layers = true"), "n_layers.*number"),
        (lambda t: t.replace("d_model = 4096", "d_model = nan"), "d_model.*finite"),
        (lambda t: t.replace("d_model = 4096", "d_model = " + "[" * 5000 + "]" * 5000),
         "nested too deeply"),
        (lambda t: t.replace('retrieved = "', 'retrieved = "2026-13-45" #', 1), "retrieved"),
    ],
)  # fmt: skip
def test_model_loader_rejects_huge_and_invalid_values(tmp_path, edit, match):
    bad = edit(MODEL_GOOD)
    assert bad != MODEL_GOOD
    p = tmp_path / "bad_model.toml"
    p.write_text(bad)
    with pytest.raises(ValueError, match=match) as info:
        load_model(str(p))
    assert "bad_model.toml" in str(info.value)


def test_model_shape_construction_validated_like_the_file():
    import dataclasses

    from costmodel.shapes import ModelShape

    m = load_model("llama-2-7b")
    for changes, exc, match in [
        (dict(n_kv_heads=0), ValueError, "^n_kv_heads: expected >= 1"),
        (dict(n_kv_heads=5), ValueError, r"^n_heads \(32\): expected a multiple of n_kv_heads"),
        (dict(head_dim=128.5), ValueError, "^head_dim: expected an integer"),
        (dict(d_model="4096"), TypeError, "^d_model: expected a number"),
        (dict(n_layers=True), TypeError, "^n_layers: expected a number"),
        (dict(gated_ffn=1), TypeError, "^gated_ffn: expected a bool"),
        (dict(vocab_size=2**60), ValueError, "^vocab_size: expected <= 16777216"),
        (dict(name=""), ValueError, "^name: expected a non-empty string"),
        (dict(sources={"x": ("a", "2024-01-01")}), ValueError, "^sources: expected keys"),
    ]:
        with pytest.raises(exc, match=match):
            dataclasses.replace(m, **changes)
    same = dataclasses.replace(m, head_dim=128.0)
    assert same == m and isinstance(same.head_dim, int)
    assert isinstance(ModelShape(**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)}),
                      ModelShape)  # fmt: skip


def test_load_model_bad_arguments():
    with pytest.raises(TypeError, match="name_or_path: expected a model shape name"):
        load_model(None)
    with pytest.raises(ValueError, match="name_or_path: unknown model 'gpt-9'"):
        load_model("gpt-9")
    with pytest.raises(FileNotFoundError, match="model shape file not found"):
        load_model("/nonexistent/m.toml")
