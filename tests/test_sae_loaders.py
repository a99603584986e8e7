"""Loaders: folders built from each library's documented layout, checked against float64 transcriptions of its forward.

Llama Scope / lm_saes: the original loader's folding steps are transcribed
step by step (dataset norm into biases and decoder, then decoder-column norms
into the encoder, then the scalar-threshold JumpReLU), independently of the
closed form our loader implements. The real libraries' own code is exercised in
tests/test_sae_interop.py.
"""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import save_file

from universality import UniversalityError, sae

D, N = 16, 48


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ----- Llama Scope (lm_saes v1) --------------------------------------------------------------------

def _llama_scope_folder(path, seed=0, theta=0.9, norm_in=7.5, norm_out=11.0, transcoder=False):
    """The release layout: hyperparams.json, lm_config.json, checkpoints/final.safetensors (bf16)."""
    g = _g(seed)
    t = {"encoder.weight": torch.randn(N, D, generator=g) * 0.3, "encoder.bias": torch.randn(N, generator=g) * 0.2,
         # decoder columns with norms far from 1 (Llama Scope's average about 1.5)
         "decoder.weight": torch.randn(D, N, generator=g) * (0.2 + torch.rand(N, generator=g) * 0.5),
         "decoder.bias": torch.randn(D, generator=g) * 0.3}
    t = {k: v.to(torch.bfloat16) for k, v in t.items()}
    (path / "checkpoints").mkdir(parents=True)
    save_file(t, str(path / "checkpoints" / "final.safetensors"))
    hook_in = "blocks.3.hook_resid_post" if not transcoder else "blocks.3.ln2.hook_normalized"
    hook_out = "blocks.3.hook_resid_post" if not transcoder else "blocks.3.hook_mlp_out"
    cfg = {"d_model": D, "d_sae": N, "expansion_factor": N // D, "act_fn": "jumprelu", "jump_relu_threshold": theta,
           "norm_activation": "dataset-wise", "dataset_average_activation_norm": {"in": norm_in, "out": norm_out},
           "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False, "sparsity_include_decoder_norm": True,
           "hook_point_in": hook_in, "hook_point_out": hook_out, "top_k": 50, "use_glu_encoder": False}
    (path / "hyperparams.json").write_text(json.dumps(cfg))
    (path / "lm_config.json").write_text(json.dumps({"model_name": "meta-llama/Llama-3.1-8B", "d_model": D}))
    return {k: v.double() for k, v in t.items()}, cfg


def _lm_saes_v1_original(t, cfg, x):
    """The original's steps in float64: standardize_parameters_of_dataset_activation_scaling, transform_to_unit_decoder_norm,
    then encode (JumpReLU at the scalar threshold, no b_D on the input) and decode (nn.Linear with bias)."""
    sd = {k: v.clone() for k, v in t.items()}
    f_in = math.sqrt(cfg["d_model"]) / cfg["dataset_average_activation_norm"]["in"]
    f_out = math.sqrt(cfg["d_model"]) / cfg["dataset_average_activation_norm"]["out"]
    sd["encoder.bias"] = sd["encoder.bias"] / f_in
    sd["decoder.bias"] = sd["decoder.bias"] / f_out
    sd["decoder.weight"] = sd["decoder.weight"] * f_in / f_out
    norm = torch.norm(sd["decoder.weight"], p=2, dim=0)
    sd["decoder.weight"] = sd["decoder.weight"] / norm
    sd["encoder.weight"] = sd["encoder.weight"] * norm[:, None]
    sd["encoder.bias"] = sd["encoder.bias"] * norm
    hidden_pre = x @ sd["encoder.weight"].T + sd["encoder.bias"]
    acts = hidden_pre.where(hidden_pre > cfg["jump_relu_threshold"], torch.zeros(()).double())
    return acts, acts @ sd["decoder.weight"].T + sd["decoder.bias"]


def _issue_closed_form(t, cfg, x):
    """The closed form stated in the issue: s_i = (n_i / f_out)(W_i . (f_in x) + b_i), x_hat = sum z_i d_i / n_i + b / f_out."""
    f_in = math.sqrt(D) / cfg["dataset_average_activation_norm"]["in"]
    f_out = math.sqrt(D) / cfg["dataset_average_activation_norm"]["out"]
    n = t["decoder.weight"].norm(dim=0)
    s = (n / f_out) * ((f_in * x) @ t["encoder.weight"].T + t["encoder.bias"])
    z = torch.where(s > cfg["jump_relu_threshold"], s, torch.zeros(()).double())
    return z, z @ (t["decoder.weight"] / n).T + t["decoder.bias"] / f_out


def _acts(seed, n=200, scale=4.0):
    return torch.randn(n, D, generator=_g(seed)).double() * scale


def test_llama_scope_matches_the_original_folding_in_float64(tmp_path):
    t, cfg = _llama_scope_folder(tmp_path / "L3R")
    assert sae.detect_format(tmp_path / "L3R") == "lm_saes-v1"
    coder = sae.load(tmp_path / "L3R", dtype=torch.float64)
    x = _acts(1)
    want_codes, want_recon = _lm_saes_v1_original(t, cfg, x)
    closed_codes, closed_recon = _issue_closed_form(t, cfg, x)
    torch.testing.assert_close(closed_codes, want_codes, rtol=1e-10, atol=1e-10)  # the issue's formula is the original's
    torch.testing.assert_close(closed_recon, want_recon, rtol=1e-10, atol=1e-10)
    codes = coder.encode(x)
    assert 0 < int((want_codes > 0).sum()) < want_codes.numel() // 2  # a real sparse code, not all or nothing
    assert torch.equal(codes > 0, want_codes > 0)
    torch.testing.assert_close(codes, want_codes, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), want_recon, rtol=1e-10, atol=1e-10)
    assert coder.provenance.skip_bos and coder.provenance.library == "lm_saes"
    assert coder.cfg.hook == "blocks.3.resid_post" and coder.provenance.source_hook == "blocks.3.hook_resid_post"


def test_llama_scope_float32_within_1e5_and_saelens_style_loading_differs(tmp_path):
    t, cfg = _llama_scope_folder(tmp_path / "s", seed=2)
    coder = sae.load(tmp_path / "s")
    x = _acts(3)
    want_codes, want_recon = _lm_saes_v1_original(t, cfg, x)
    got = coder.encode(x.float()).double()
    near = ((want_codes - cfg["jump_relu_threshold"]).abs() < 1e-4) & (want_codes != 0)
    ok = ~near.any(1)  # rows with a pre-activation within float32 rounding of the threshold may flip
    assert ok.float().mean() > 0.95
    torch.testing.assert_close(got[ok], want_codes[ok], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(coder(x.float()).double()[ok], want_recon[ok], rtol=1e-5, atol=1e-4)
    # SAELens' loader leaves out the decoder-norm factor n_i: with norms != 1 its active sets differ from the original's
    f_in = math.sqrt(D) / cfg["dataset_average_activation_norm"]["in"]
    f_out = math.sqrt(D) / cfg["dataset_average_activation_norm"]["out"]
    s_without_norm = ((f_in * x) @ t["encoder.weight"].T + t["encoder.bias"]) / f_out
    assert not torch.equal(s_without_norm > cfg["jump_relu_threshold"], want_codes > 0)


def test_llama_scope_transcoder_and_pt_checkpoint(tmp_path):
    t, cfg = _llama_scope_folder(tmp_path / "tc", seed=4, transcoder=True)
    coder = sae.load(tmp_path / "tc", dtype=torch.float64)
    assert coder.cfg.transcoder and coder.cfg.hook == "blocks.3.mlp_in" and coder.cfg.target_hook == "blocks.3.mlp_out"
    x = _acts(5)
    want_codes, want_recon = _lm_saes_v1_original(t, cfg, x)
    torch.testing.assert_close(coder.encode(x), want_codes, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), want_recon, rtol=1e-10, atol=1e-10)
    # the same checkpoint as a torch file {"sae": state_dict} (read with weights_only=True)
    (tmp_path / "pt" / "checkpoints").mkdir(parents=True)
    torch.save({"sae": {k: v.float() for k, v in t.items()}}, tmp_path / "pt" / "checkpoints" / "final.pt")
    (tmp_path / "pt" / "hyperparams.json").write_text(json.dumps(cfg))
    torch.testing.assert_close(sae.load(tmp_path / "pt", dtype=torch.float64).encode(x), want_codes, rtol=1e-6, atol=1e-6)


# ----- later lm_saes format (config.json, W_E/b_E/W_D/b_D) ----------------------------------------------

def test_lm_saes_v2_gates_on_hidden_pre_times_decoder_norm(tmp_path):
    g = _g(7)
    hook = "blocks.5.hook_resid_post"
    t = {"W_E": torch.randn(D, N, generator=g) * 0.3, "b_E": torch.randn(N, generator=g) * 0.2,
         "W_D": torch.randn(N, D, generator=g) * (0.2 + torch.rand(N, 1, generator=g)), "b_D": torch.randn(D, generator=g) * 0.2,
         "activation_function.log_jumprelu_threshold": (0.3 + torch.rand(N, generator=g)).log(),
         f"dataset_average_activation_norm.{hook}": torch.tensor(9.0)}
    (tmp_path / "v2").mkdir()
    save_file(t, str(tmp_path / "v2" / "sae_weights.safetensors"))
    cfg = {"sae_type": "sae", "d_model": D, "expansion_factor": N / D, "act_fn": "jumprelu", "norm_activation": "dataset-wise",
           "sparsity_include_decoder_norm": True, "use_decoder_bias": True, "hook_point_in": hook, "hook_point_out": hook}
    (tmp_path / "v2" / "config.json").write_text(json.dumps(cfg))
    coder = sae.load(tmp_path / "v2", dtype=torch.float64)
    assert sae.detect_format(tmp_path / "v2") == "lm_saes-v2"
    x = _acts(8)
    T = {k: v.double() for k, v in t.items()}
    f = math.sqrt(D) / 9.0
    hidden_pre = (x * f) @ T["W_E"] + T["b_E"]  # the trainer normalises the input, encode never subtracts b_D
    dn = T["W_D"].norm(dim=1)
    mask = (hidden_pre * dn) > T["activation_function.log_jumprelu_threshold"].exp()
    acts = hidden_pre * mask  # the original's feature_acts (divided back by the decoder norm)
    recon = (acts @ T["W_D"] + T["b_D"]) / f
    codes = coder.encode(x)
    assert torch.equal(codes > 0, mask & (hidden_pre > 0)) and mask.any()
    torch.testing.assert_close(codes, acts * dn, rtol=1e-10, atol=1e-10)  # ours: the gated quantity n_i * hidden_pre
    torch.testing.assert_close(coder(x), recon, rtol=1e-10, atol=1e-10)


# ----- SAELens layouts this suite restates (the library itself: test_sae_interop.py) ----------------

def _saelens(path, arch, tensors, **cfg):
    path.mkdir()
    save_file(tensors, str(path / "sae_weights.safetensors"))
    base = {"architecture": arch, "d_in": D, "d_sae": N, "apply_b_dec_to_input": True, "normalize_activations": "none",
            "metadata": {"hook_name": "blocks.1.hook_mlp_out"}}
    (path / "cfg.json").write_text(json.dumps({**base, **cfg}))


def test_saelens_gated_and_norm_scaling_factor(tmp_path):
    g = _g(9)
    t = {"W_enc": torch.randn(D, N, generator=g) * 0.3, "W_dec": torch.randn(N, D, generator=g) * 0.3, "b_dec": torch.randn(D, generator=g) * 0.2,
         "b_gate": torch.randn(N, generator=g) * 0.3, "r_mag": torch.randn(N, generator=g) * 0.3, "b_mag": torch.randn(N, generator=g) * 0.3}
    _saelens(tmp_path / "g", "gated", t, normalize_activations="expected_average_only_in")
    with pytest.raises(UniversalityError, match="without its norm_scaling_factor"):
        sae.load(tmp_path / "g")
    coder = sae.load(tmp_path / "g", dtype=torch.float64, norm_scaling_factor=0.25)
    assert coder.cfg.kind == "gated" and coder.cfg.hook == "blocks.1.mlp_out"
    T = {k: v.double() for k, v in t.items()}
    # SAELens folds the factor s: W_enc *= s, W_dec /= s, b_dec /= s, then runs its gated encode
    s = 0.25
    W_enc, W_dec, b_dec = T["W_enc"] * s, T["W_dec"] / s, T["b_dec"] / s
    x = _acts(10)
    sae_in = x - b_dec
    active = (sae_in @ W_enc + T["b_gate"]) > 0
    mag = torch.relu(sae_in @ (W_enc * T["r_mag"].exp()) + T["b_mag"])
    want = active * mag
    torch.testing.assert_close(coder.encode(x), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), want @ W_dec + b_dec, rtol=1e-10, atol=1e-10)


def test_saelens_topk_rescaled_by_decoder_norm_and_skip_transcoder(tmp_path):
    g = _g(11)
    t = {"W_enc": torch.randn(D, N, generator=g), "b_enc": torch.randn(N, generator=g) * 0.1,
         "W_dec": torch.randn(N, D, generator=g) * (0.3 + torch.rand(N, 1, generator=g)), "b_dec": torch.randn(D, generator=g) * 0.1}
    _saelens(tmp_path / "t", "topk", t, k=5, rescale_acts_by_decoder_norm=True)
    coder = sae.load(tmp_path / "t", dtype=torch.float64)
    T = {k: v.double() for k, v in t.items()}
    x = _acts(12)
    hp = ((x - T["b_dec"]) @ T["W_enc"] + T["b_enc"]) * T["W_dec"].norm(dim=-1)
    v, i = hp.topk(5, dim=-1)
    want = torch.zeros_like(hp).scatter(-1, i, v.relu())
    torch.testing.assert_close(coder.encode(x), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), want @ (T["W_dec"] / T["W_dec"].norm(dim=-1, keepdim=True)) + T["b_dec"], rtol=1e-10, atol=1e-10)
    t2 = {**t, "threshold": torch.rand(N, generator=g), "W_skip": torch.randn(D, D, generator=g) * 0.1}
    _saelens(tmp_path / "jst", "jumprelu_skip_transcoder", t2, apply_b_dec_to_input=False, d_out=D)
    tc = sae.load(tmp_path / "jst", dtype=torch.float64)
    T2 = {k: v.double() for k, v in t2.items()}
    hp = x @ T2["W_enc"] + T2["b_enc"]
    acts = torch.relu(hp) * (hp > T2["threshold"])
    assert tc.cfg.transcoder and tc.cfg.skip
    torch.testing.assert_close(tc.encode(x), acts, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tc(x), acts @ T2["W_dec"] + T2["b_dec"] + x @ T2["W_skip"].T, rtol=1e-10, atol=1e-10)


def test_saelens_pre_6_topk_layout(tmp_path):
    g = _g(15)
    t = {"W_enc": torch.randn(D, N, generator=g), "b_enc": torch.randn(N, generator=g) * 0.1,
         "W_dec": torch.randn(N, D, generator=g), "b_dec": torch.randn(D, generator=g) * 0.1}
    (tmp_path / "old").mkdir()
    save_file(t, str(tmp_path / "old" / "sae_weights.safetensors"))
    (tmp_path / "old" / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": N, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3},
                                                           "apply_b_dec_to_input": True, "hook_name": "blocks.0.hook_resid_pre"}))
    coder = sae.load(tmp_path / "old", dtype=torch.float64)
    assert coder.cfg.kind == "topk" and coder.cfg.k == 3 and coder.cfg.hook == "blocks.0.resid_pre"
    x = _acts(16)
    hp = (x - t["b_dec"].double()) @ t["W_enc"].double() + t["b_enc"].double()
    v, i = hp.topk(3, dim=-1)
    torch.testing.assert_close(coder.encode(x), torch.zeros_like(hp).scatter(-1, i, v.relu()), rtol=1e-10, atol=1e-10)


# ----- sparsify multi-hookpoint, dictionary_learning, circuit-tracer -----------------------------------

def _sparsify(path, seed, k=4):
    g = _g(seed)
    t = {"encoder.weight": torch.randn(N, D, generator=g), "encoder.bias": torch.randn(N, generator=g) * 0.1,
         "W_dec": torch.randn(N, D, generator=g), "b_dec": torch.randn(D, generator=g) * 0.1}
    path.mkdir(parents=True)
    save_file(t, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"activation": "topk", "num_latents": N, "k": k, "expansion_factor": 3,
                                               "normalize_decoder": True, "multi_topk": False, "skip_connection": False,
                                               "transcode": False, "d_in": D}))
    return t


def test_sparsify_multi_hookpoint_run(tmp_path):
    run = tmp_path / "run"
    t3 = _sparsify(run / "layers.3", 1)
    _sparsify(run / "layers.3.mlp", 2)
    assert sae.detect_format(run) == "sparsify-multi"
    with pytest.raises(UniversalityError, match=r"holds 2 dictionaries \(layers.3, layers.3.mlp\); pick one with hookpoint="):
        sae.load(run)
    coder = sae.load(run, hookpoint="layers.3")
    assert coder.cfg.hook == "blocks.3.resid_post"
    x = torch.randn(20, D)
    pre = torch.relu((x - t3["b_dec"]) @ t3["encoder.weight"].T + t3["encoder.bias"])
    v, i = pre.topk(4, dim=-1)
    torch.testing.assert_close(coder.encode(x), torch.zeros_like(pre).scatter(-1, i, v))
    both = sae.load_set(run)
    assert list(both) == ["layers.3", "layers.3.mlp"] and both["layers.3.mlp"].cfg.hook == "blocks.3.mlp_out"
    with pytest.raises(UniversalityError, match="hookpoint 'layers.9' is not in"):
        sae.load(run, hookpoint="layers.9")


def _dl_forward(cls, t, x):
    """dictionary_learning's default encode/decode per class, in float64."""
    T = {k: v.double() for k, v in t.items() if v.is_floating_point()}
    if cls == "AutoEncoder":
        f = torch.relu((x - T["bias"]) @ T["encoder.weight"].T + T["encoder.bias"])
        return f, f @ T["decoder.weight"].T + T["bias"]
    if cls == "GatedAutoEncoder":
        x_enc = (x - T["decoder_bias"]) @ T["encoder.weight"].T
        f = ((x_enc + T["gate_bias"]) > 0) * torch.relu(T["r_mag"].exp() * x_enc + T["mag_bias"])
        return f, f @ T["decoder.weight"].T + T["decoder_bias"]
    if cls == "JumpReluAutoEncoder":
        pre = x @ T["W_enc"] + T["b_enc"]
        f = torch.relu(pre * (pre > T["threshold"]))
        return f, f @ T["W_dec"] + T["b_dec"]
    post = torch.relu((x - T["b_dec"]) @ T["encoder.weight"].T + T["encoder.bias"])
    if cls == "AutoEncoderTopK":
        v, i = post.topk(int(t["k"]), dim=-1)
        f = torch.zeros_like(post).scatter(-1, i, v)
    else:
        f = post * (post > T["threshold"])
    return f, f @ T["decoder.weight"].T + T["b_dec"]


def _dl_state(cls, seed):
    g = _g(seed)
    if cls == "JumpReluAutoEncoder":
        return {"W_enc": torch.randn(D, N, generator=g) * 0.3, "b_enc": torch.randn(N, generator=g) * 0.1,
                "W_dec": torch.randn(N, D, generator=g) * 0.3, "b_dec": torch.randn(D, generator=g) * 0.1, "threshold": torch.rand(N, generator=g)}
    if cls == "GatedAutoEncoder":
        return {"decoder_bias": torch.randn(D, generator=g) * 0.1, "encoder.weight": torch.randn(N, D, generator=g) * 0.3,
                "r_mag": torch.randn(N, generator=g) * 0.2, "gate_bias": torch.randn(N, generator=g) * 0.2,
                "mag_bias": torch.randn(N, generator=g) * 0.2, "decoder.weight": torch.randn(D, N, generator=g) * 0.3}
    t = {"encoder.weight": torch.randn(N, D, generator=g) * 0.3, "encoder.bias": torch.randn(N, generator=g) * 0.1,
         "decoder.weight": torch.randn(D, N, generator=g) * (0.2 + torch.rand(N, generator=g))}
    if cls == "AutoEncoder":
        t["bias"] = torch.randn(D, generator=g) * 0.1
    else:
        t.update(b_dec=torch.randn(D, generator=g) * 0.1, k=torch.tensor(6, dtype=torch.int), threshold=torch.tensor(0.4))
    return t


@pytest.mark.parametrize("cls", ["AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder", "GatedAutoEncoder"])
def test_dictionary_learning_classes(tmp_path, cls):
    t = _dl_state(cls, 13)
    (tmp_path / "ae").mkdir()
    torch.save(t, tmp_path / "ae" / "ae.pt")
    (tmp_path / "ae" / "config.json").write_text(json.dumps({"trainer": {"dict_class": cls, "layer": 2, "submodule_name": "resid_post_layer_2"}}))
    coder = sae.load(tmp_path / "ae", dtype=torch.float64)
    assert coder.cfg.hook == "blocks.2.resid_post"
    x = _acts(14, scale=2.0)
    f, recon = _dl_forward(cls, t, x)
    codes = coder.encode(x)
    assert torch.equal(codes > 0, f > 0) and (f > 0).any()
    if cls == "AutoEncoder":  # from_pretrained normalises the decoder: codes scale by the column norms
        f = f * t["decoder.weight"].double().norm(dim=0)
    torch.testing.assert_close(codes, f, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), recon, rtol=1e-10, atol=1e-10)


def test_circuit_tracer_transcoder_set(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    layers = {}
    for layer in range(2):
        g = _g(20 + layer)
        t = {"W_enc": torch.randn(N, D, generator=g) * 0.3, "W_dec": torch.randn(N, D, generator=g) * 0.3,
             "b_enc": torch.randn(N, generator=g) * 0.1, "b_dec": torch.randn(D, generator=g) * 0.1, "W_skip": torch.randn(D, D, generator=g) * 0.1}
        save_file(t, str(folder / f"layer_{layer}.safetensors"))
        layers[layer] = t
    (folder / "tiny-relu.yaml").write_text(
        'model_name: "tiny"\nfeature_input_hook: "ln2.hook_normalized"\nfeature_output_hook: "mlp.hook_out"\ntranscoders:\n'
        + "".join(f'  - id: "tc-{i}"\n    layer: {i}\n    filepath: "layer_{i}.safetensors"\n' for i in (1, 0)))
    assert sae.detect_format(folder) == "circuit_tracer"
    coder = sae.load(folder, hookpoint="1", dtype=torch.float64)
    assert coder.cfg.hook == "blocks.1.mlp_in" and coder.cfg.target_hook == "blocks.1.mlp_out" and coder.cfg.skip
    T = {k: v.double() for k, v in layers[1].items()}
    x = _acts(21)
    acts = torch.relu(x @ T["W_enc"].T + T["b_enc"])  # circuit-tracer transposes W_enc to [d_model, d_sae]; same product
    torch.testing.assert_close(coder.encode(x), acts, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(coder(x), acts @ T["W_dec"] + T["b_dec"] + x @ T["W_skip"].T, rtol=1e-10, atol=1e-10)
    assert list(sae.load_set(folder)) == ["tc-0", "tc-1"]


# ----- bad input ----------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    with open(tmp_path / "evil" / "ae.pt", "wb") as fh:
        pickle.dump({"encoder.weight": _Payload(str(marker))}, fh)
    with pytest.raises(UniversalityError, match="refused and nothing in it was run"):
        sae.load(tmp_path / "evil")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(str(marker))))  # the payload does work when unpickled without restriction
    assert marker.exists()


def test_no_layout_names_every_layout_and_its_files(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "weights.bin").write_bytes(b"\x00")
    with pytest.raises(UniversalityError) as e:
        sae.load(tmp_path / "x")
    msg = str(e.value)
    assert "not a known dictionary format" in msg and "\n" not in msg
    for layout in sae.LAYOUTS:
        assert f"{layout.name} ({layout.expects})" in msg


def test_shape_and_dtype_mismatches_name_the_tensor(tmp_path):
    t = _sparsify(tmp_path / "bad", 1)
    save_file({**t, "b_dec": torch.zeros(D + 1)}, str(tmp_path / "bad" / "sae.safetensors"))
    with pytest.raises(UniversalityError, match=r"tensor 'b_dec' of .* has shape \[17\]; expected \[16\]"):
        sae.load(tmp_path / "bad")
    save_file({**t, "encoder.bias": torch.zeros(N, dtype=torch.int32)}, str(tmp_path / "bad" / "sae.safetensors"))
    with pytest.raises(UniversalityError, match="tensor 'encoder.bias' of .* has dtype torch.int32; a floating-point tensor"):
        sae.load(tmp_path / "bad")
    _llama_scope_folder(tmp_path / "ls", theta=0.5)
    cfg = json.loads((tmp_path / "ls" / "hyperparams.json").read_text())
    (tmp_path / "ls" / "hyperparams.json").write_text(json.dumps({**cfg, "norm_activation": "token-wise"}))
    with pytest.raises(UniversalityError, match="norm_activation='token-wise'"):
        sae.load(tmp_path / "ls")
