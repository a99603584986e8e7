"""Formats: own save→load identity; sparsify and SAELens folders built here, encoded with each library's formula."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from universality import UniversalityError, sae


def _randomise(coder: sae.SparseCoder, seed: int) -> sae.SparseCoder:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in coder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if hasattr(coder, "log_threshold"):
            coder.log_threshold.copy_(torch.full_like(coder.log_threshold, 0.2).log())
        if isinstance(coder, sae.BatchTopKCoder):
            coder.threshold.fill_(0.25)
    return coder


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu", "jumprelu"])
def test_save_load_identity(tmp_path, kind):
    own = {"k": 3} if kind in ("topk", "batchtopk") else {}
    cfg = sae.CoderConfig(kind=kind, d_in=9, n_latents=21, seed=4, input_scale=1.7, output_scale=1.7, hook="blocks.1.resid_post", **own)
    coder = _randomise(sae.build_coder(cfg), 1)
    coder.save(tmp_path / kind)
    assert (tmp_path / kind / "cfg.json").is_file() and (tmp_path / kind / "sae.safetensors").is_file()
    back = sae.load(tmp_path / kind)
    assert type(back) is type(coder) and back.cfg == coder.cfg
    for name, t in coder.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    x = torch.randn(40, 9)
    assert torch.equal(back.encode(x), coder.encode(x))
    assert torch.equal(back(x), coder(x))
    assert sae.detect_format(tmp_path / kind) == "universality"


def test_skip_transcoder_save_load(tmp_path):
    cfg = sae.CoderConfig(kind="topk", d_in=7, d_out=5, transcoder=True, skip=True, n_latents=16, k=2, target_hook="blocks.0.mlp_out")
    coder = _randomise(sae.build_coder(cfg), 2)
    back = sae.load(coder.save(tmp_path / "tc"))
    x = torch.randn(10, 7)
    assert torch.equal(back(x), coder(x))
    assert back.W_skip.shape == (5, 7)


def _sparsify_folder(path, d_in, n, k, d_out=None, skip=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    t = {"encoder.weight": torch.randn(n, d_in, generator=g), "encoder.bias": torch.randn(n, generator=g) * 0.1,
         "W_dec": torch.randn(n, d_out, generator=g), "b_dec": torch.randn(d_out, generator=g) * 0.1}
    if skip:
        t["W_skip"] = torch.randn(d_out, d_in, generator=g) * 0.1
    path.mkdir()
    save_file(t, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"expansion_factor": 32, "normalize_decoder": True, "num_latents": n, "k": k,
                                               "multi_topk": False, "skip_connection": skip, "transcode": d_out != d_in, "d_in": d_in}))
    return t


def _sparsify_encode(t, x, k, transcode):
    """sparsify's definition: top-k of ReLU(encoder(x - b_dec)), b_dec not subtracted for transcoders."""
    sae_in = x if transcode else x - t["b_dec"]
    pre = torch.relu(sae_in @ t["encoder.weight"].T + t["encoder.bias"])
    acts, idx = pre.topk(k, dim=-1)
    out = x.new_zeros(x.shape[0], t["W_dec"].shape[0]).scatter(1, idx, acts)
    recon = out @ t["W_dec"] + t["b_dec"]
    if "W_skip" in t:
        recon = recon + x @ t["W_skip"].T
    return out, recon


@pytest.mark.parametrize("d_out, skip", [(None, False), (6, True)])
def test_sparsify_folder(tmp_path, d_out, skip):
    t = _sparsify_folder(tmp_path / "layers.3", d_in=10, n=40, k=5, d_out=d_out, skip=skip)
    coder = sae.load(tmp_path / "layers.3")
    assert sae.detect_format(tmp_path / "layers.3") == "sparsify"
    x = torch.randn(30, 10)
    want_codes, want_recon = _sparsify_encode(t, x, 5, transcode=d_out is not None)
    torch.testing.assert_close(coder.encode(x), want_codes)
    torch.testing.assert_close(coder(x), want_recon)


def _saelens_folder(path, arch, d_in, d_sae, k=None, seed=0, apply_b_dec=True):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g) * 0.1}
    if arch == "jumprelu":
        t["threshold"] = torch.rand(d_sae, generator=g) * 1.5
    cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", "hook_name": "blocks.2.hook_resid_pre"}
    if k is not None:
        cfg["k"] = k
    path.mkdir()
    save_file(t, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return t


def _saelens_encode(t, x, arch, k=None, apply_b_dec=True):
    """SAELens's definitions: hidden_pre = (x - b_dec*apply_b_dec_to_input) @ W_enc + b_enc;
    standard: ReLU(hidden_pre); topk: ReLU of the k largest hidden_pre, others 0;
    jumprelu: ReLU(hidden_pre) * (hidden_pre > threshold)."""
    hidden_pre = (x - t["b_dec"] * apply_b_dec) @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        return torch.relu(hidden_pre)
    if arch == "topk":
        v, i = hidden_pre.topk(k, dim=-1)
        return torch.zeros_like(hidden_pre).scatter(-1, i, torch.relu(v))
    return torch.relu(hidden_pre) * (hidden_pre > t["threshold"])


@pytest.mark.parametrize("arch, k", [("standard", None), ("topk", 4), ("jumprelu", None)])
def test_saelens_folder(tmp_path, arch, k):
    t = _saelens_folder(tmp_path / arch, arch, d_in=8, d_sae=32, k=k)
    coder = sae.load(tmp_path / arch)
    assert sae.detect_format(tmp_path / arch) == "saelens"
    assert coder.cfg.hook == "blocks.2.resid_pre"  # TransformerLens' name translated into our vocabulary
    assert coder.provenance.source_hook == "blocks.2.hook_resid_pre"
    x = torch.randn(50, 8) * 2
    want = _saelens_encode(t, x, arch, k)
    torch.testing.assert_close(coder.encode(x), want)
    torch.testing.assert_close(coder.decode(want), want @ t["W_dec"] + t["b_dec"])


def test_saelens_without_b_dec_on_input(tmp_path):
    t = _saelens_folder(tmp_path / "s", "standard", d_in=6, d_sae=12, apply_b_dec=False)
    x = torch.randn(9, 6)
    torch.testing.assert_close(sae.load(tmp_path / "s").encode(x), _saelens_encode(t, x, "standard", apply_b_dec=False))


def test_unknown_folder_is_one_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "cfg.json").write_text("{}")
    (tmp_path / "x" / "weights.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UniversalityError, match="not a known dictionary format"):
        sae.load(tmp_path / "x")
    with pytest.raises(UniversalityError, match="does not exist"):
        sae.load(tmp_path / "missing")


def test_each_kind_registers_once():
    assert set(sae.registered_kinds()) == {"topk", "batchtopk", "relu", "jumprelu", "gated"}
    with pytest.raises(TypeError, match="already registered"):
        @sae.register_kind
        class Again(sae.TopKCoder):
            kind = "topk"
