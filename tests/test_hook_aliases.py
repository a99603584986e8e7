"""Hook-name aliases: every library's naming onto our vocabulary, checked against HF's own modules and hidden_states."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_transformer
from safetensors.torch import save_file

from universality import UniversalityError, load_host, sae
from universality.hosts.aliases import translate
from universality.hosts.hf_layout import block_list, hidden_states_layout

TABLE = [
    # (name, model_type, ours)
    ("blocks.3.hook_resid_post", None, "blocks.3.resid_post"),  # TransformerLens / Llama Scope
    ("blocks.3.hook_resid_pre", None, "blocks.3.resid_pre"),
    ("blocks.3.hook_mlp_out", None, "blocks.3.mlp_out"),
    ("blocks.3.hook_attn_out", None, "blocks.3.mixer_out"),
    ("blocks.3.mlp.hook_post", None, "blocks.3.mlp.act"),
    ("blocks.3.attn.hook_z", None, "blocks.3.attn.z"),
    ("blocks.3.ln2.hook_normalized", None, "blocks.3.mlp_in"),
    ("blocks.3.mlp.hook_out", None, "blocks.3.mlp_out"),  # circuit-tracer
    ("L3R", None, "blocks.3.resid_post"), ("L3A", None, "blocks.3.mixer_out"), ("L3M", None, "blocks.3.mlp_out"),
    ("layers.3", "llama", "blocks.3.resid_post"), ("layers.3.mlp", "llama", "blocks.3.mlp_out"),  # sparsify
    ("layers.3.self_attn", "llama", "blocks.3.mixer_out"), ("model.layers.3", "llama", "blocks.3.resid_post"),
    ("h.3", "gpt2", "blocks.3.resid_post"), ("h.3.mlp", "gpt2", "blocks.3.mlp_out"), ("h.3.attn", "gpt2", "blocks.3.mixer_out"),
    ("gpt_neox.layers.3.attention", "gpt_neox", "blocks.3.mixer_out"),
    ("layers.3.mixer", "mamba", "blocks.3.mixer_out"), ("backbone.layers.3", "mamba", "blocks.3.resid_post"),
    ("blocks.3", "rwkv", "blocks.3.resid_post"), ("blocks.3.feed_forward", "rwkv", "blocks.3.mlp_out"),
    ("blocks.3.attention", "rwkv", "blocks.3.mixer_out"),
    ("resid_post_layer_3", None, "blocks.3.resid_post"), ("mlp_out_layer_3", None, "blocks.3.mlp_out"),  # dictionary_learning
    ("blocks.3.resid_post", None, "blocks.3.resid_post"), ("embed", None, "embed"),  # ours
]


@pytest.mark.parametrize("name, model_type, ours", TABLE)
def test_alias_table(name, model_type, ours):
    assert translate(name, model_type).name == ours


def test_exactness_and_unmappable_names():
    assert translate("blocks.1.ln2.hook_normalized").exact is False
    assert translate("blocks.1.hook_resid_post").exact is True
    with pytest.raises(UniversalityError, match="hook_resid_mid' has no equivalent in our vocabulary; the nearest point of ours is blocks.<L>.mlp_in"):
        translate("blocks.1.hook_resid_mid")
    with pytest.raises(UniversalityError, match="names block 7; this model has blocks 0..2"):
        translate("layers.7", "llama", n_layers=3)
    with pytest.raises(UniversalityError, match="depends on the model's depth"):
        translate("hidden_states[2]")
    with pytest.raises(UniversalityError, match="matches no known naming"):
        translate("transformer.wte")


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_hf_names_hold_what_hf_computes(save_model, model_type):
    """hidden_states[i] with HF's off-by-one, and sparsify's module names, against HF's own outputs."""
    model = tiny_transformer(model_type)
    host = load_host(save_model(model), device="cpu")
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    blocks = block_list(model)
    seen = {}
    handles = [blocks[1].register_forward_hook(lambda m, a, o: seen.__setitem__("block", o[0] if isinstance(o, tuple) else o)),
               blocks[1].mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", o))]
    with torch.no_grad():
        hs = model(tokens, output_hidden_states=True).hidden_states
    for h in handles:
        h.remove()
    _, cache = host.run_with_cache(tokens)
    n = host.n_layers
    for i in range(n + 1):
        name = translate(f"hidden_states[{i}]", host.model_type, n).name
        torch.testing.assert_close(cache[name], hs[i], rtol=0, atol=1e-5)
    assert translate("hidden_states[1]", model_type, n).name == "blocks.0.resid_post"  # not block 1: the embeddings come first
    assert translate("hidden_states[-1]", model_type, n).name == "final_norm"
    fam = {"gpt2": ("h.1", "h.1.mlp"), "llama": ("layers.1", "layers.1.mlp")}[model_type]
    torch.testing.assert_close(cache[translate(fam[0], model_type, n).name], seen["block"], rtol=0, atol=1e-5)
    torch.testing.assert_close(cache[translate(fam[1], model_type, n).name], seen["mlp"], rtol=0, atol=1e-5)
    assert hidden_states_layout(model, tokens).names[1] == translate("hidden_states[1]", model_type, n).name


def test_loading_with_a_host_sets_the_hook_in_its_vocabulary(tmp_path, save_model):
    host = load_host(save_model(tiny_transformer("gpt2")), device="cpu")
    folder = tmp_path / "h.1"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(64, 32, generator=g), "encoder.bias": torch.zeros(64), "W_dec": torch.randn(64, 32, generator=g),
               "b_dec": torch.zeros(32)}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": 64, "d_in": 32}))
    coder = sae.load(folder, host=host)
    assert coder.cfg.hook == "blocks.1.resid_post" and coder.provenance.source_hook == "h.1"
    lm = sae.evaluate_lm_loss(host, coder, None, torch.randint(0, 97, (2, 8), generator=g))
    assert lm.zero_ablation > lm.clean
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": 64, "d_in": 32}))
    moved = tmp_path / "h.7"
    folder.rename(moved)
    with pytest.raises(UniversalityError, match="names block 7; this model has blocks 0..2"):
        sae.load(moved, host=host)
    wide = tmp_path / "h.0"
    wide.mkdir()
    save_file({"encoder.weight": torch.randn(8, 16), "encoder.bias": torch.zeros(8), "W_dec": torch.randn(8, 16), "b_dec": torch.zeros(16)},
              str(wide / "sae.safetensors"))
    (wide / "cfg.json").write_text(json.dumps({"k": 2, "num_latents": 8, "d_in": 16}))
    with pytest.raises(UniversalityError, match="reads 16-wide activations but 'blocks.0.resid_post' of this host is 32 wide"):
        sae.load(wide, host=host)
