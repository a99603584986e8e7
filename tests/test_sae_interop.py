"""Against the real libraries (the optional ``interop`` extra): each library's own save code writes the folder, its own
forward is the reference, ours must agree to 1e-5 (float32). Exports are read back by the libraries' own loaders.

Skipped with the reason when a library is absent. dictionary_learning 0.1.0's package
``__init__`` imports nnsight 0.3, which does not import under transformers 5; the
test puts a stand-in ``nnsight`` module in ``sys.modules`` (only its activation
buffer uses it) so that the library's own dictionary classes are the ones run.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from universality import sae

D, N = 16, 48
TOL = dict(rtol=1e-5, atol=1e-5)


def _randomise(module: torch.nn.Module, seed: int, positive=("threshold",)) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name.endswith(s) for s in positive):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.05)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _x(seed, d=D, n=64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 2


# ----- SAELens ---------------------------------------------------------------------------------------

SAELENS_CASES = [("StandardSAEConfig", {}), ("TopKSAEConfig", {"k": 5}), ("JumpReLUSAEConfig", {}), ("GatedSAEConfig", {}),
                 ("SkipTranscoderConfig", {"d_out": D, "apply_b_dec_to_input": False}),
                 ("JumpReLUTranscoderConfig", {"d_out": D, "apply_b_dec_to_input": False})]


@pytest.mark.parametrize("config_name, extra", SAELENS_CASES, ids=[c for c, _ in SAELENS_CASES])
def test_saelens_saved_folders_match_saelens_forward(tmp_path, config_name, extra):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (pip install 'universality[interop]')")
    cfg = getattr(sae_lens, config_name)(d_in=D, d_sae=N, dtype="float32", device="cpu", **extra)
    ref = sae_lens.SAE.from_dict(cfg.to_dict())
    _randomise(ref, 1)
    ref.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    ref.save_model(tmp_path / "s")
    ours = sae.load(tmp_path / "s")
    x = _x(2)
    with torch.no_grad():
        want_codes = ref.encode(x)
        torch.testing.assert_close(ours.encode(x), want_codes, **TOL)
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert (want_codes > 0).any() and (want_codes == 0).any()
    assert ours.cfg.hook == "blocks.2.resid_post"


@pytest.mark.parametrize("kind, extra", [("relu", {}), ("topk", {"k": 4}), ("jumprelu", {}), ("batchtopk", {"k": 4}), ("gated", {}),
                                         ("jumprelu", {"transcoder": True, "skip": True})])
def test_export_to_saelens_opens_in_saelens(tmp_path, kind, extra):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (pip install 'universality[interop]')")
    coder = sae.build_coder(sae.CoderConfig(kind=kind, d_in=D, n_latents=N, input_scale=1.7, output_scale=1.7 if not extra.get("transcoder") else 0.6,
                                            hook="blocks.1.resid_post", **extra))
    _randomise(coder, 3, positive=("log_threshold",))
    if kind == "batchtopk":
        coder.threshold.fill_(0.3)
    sae.to_saelens(coder, tmp_path / "out")
    ref = sae_lens.SAE.load_from_disk(tmp_path / "out")
    x = _x(4)
    with torch.no_grad():
        torch.testing.assert_close(ref.encode(x), coder.encode(x), **TOL)
        torch.testing.assert_close(ref(x), coder(x), **TOL)
    assert ref.cfg.metadata.hook_name == "blocks.1.resid_post"


# ----- sparsify ----------------------------------------------------------------------------------------

def _sparsify_dense(ref, x):
    enc = ref.encode(x)
    return torch.zeros(x.shape[0], ref.num_latents).scatter(1, enc.top_indices, enc.top_acts), ref.decode(enc.top_acts, enc.top_indices)


@pytest.mark.parametrize("transcode, skip", [(False, False), (True, True)])
def test_sparsify_saved_folders_match_sparsify_forward(tmp_path, transcode, skip):
    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is not installed (pip install 'universality[interop]')")
    ref = sparsify.SparseCoder(D, sparsify.SparseCoderConfig(num_latents=N, k=5, transcode=transcode, skip_connection=skip))
    _randomise(ref, 5)
    ref.save_to_disk(tmp_path / "layers.2")
    ours = sae.load(tmp_path / "layers.2")
    x = _x(6)
    with torch.no_grad():
        codes, recon = _sparsify_dense(ref, x)
        if skip:
            recon = recon + x @ ref.W_skip.mT
        torch.testing.assert_close(ours.encode(x), codes, **TOL)
        torch.testing.assert_close(ours(x), recon, **TOL)
        torch.testing.assert_close(ours(x), ref(x).sae_out, **TOL)


def test_export_to_sparsify_opens_in_sparsify(tmp_path):
    sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is not installed (pip install 'universality[interop]')")
    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=D, n_latents=N, k=6, input_scale=0.4, output_scale=0.4))
    _randomise(coder, 7)
    sae.to_sparsify(coder, tmp_path / "layers.0")
    ref = sparsify.SparseCoder.load_from_disk(tmp_path / "layers.0")
    x = _x(8)
    with torch.no_grad():
        codes, recon = _sparsify_dense(ref, x)
        torch.testing.assert_close(codes, coder.encode(x), **TOL)
        torch.testing.assert_close(recon, coder(x), **TOL)


# ----- dictionary_learning -----------------------------------------------------------------------------

@pytest.fixture
def dictionary_learning(monkeypatch):
    pytest.importorskip("einops", reason="dictionary-learning is not installed (pip install 'universality[interop]')")
    import importlib.util

    if importlib.util.find_spec("dictionary_learning") is None:
        pytest.skip("dictionary-learning is not installed (pip install 'universality[interop]')")
    stand_in = types.ModuleType("nnsight")
    stand_in.LanguageModel = object
    monkeypatch.setitem(sys.modules, "nnsight", stand_in)
    import dictionary_learning as dl
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {"AutoEncoder": lambda: dl.AutoEncoder(D, N), "AutoEncoderTopK": lambda: AutoEncoderTopK(D, N, 6),
            "BatchTopKSAE": lambda: BatchTopKSAE(D, N, 6), "JumpReluAutoEncoder": lambda: dl.JumpReluAutoEncoder(D, N),
            "GatedAutoEncoder": lambda: dl.GatedAutoEncoder(D, N), "module": dl}


@pytest.mark.parametrize("cls", ["AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder", "GatedAutoEncoder"])
def test_dictionary_learning_ae_pt_matches_its_forward(tmp_path, dictionary_learning, cls):
    ref = dictionary_learning[cls]()
    _randomise(ref, 9)
    if cls == "BatchTopKSAE":
        ref.threshold.fill_(0.2)
    (tmp_path / "trainer_0").mkdir()
    torch.save(ref.state_dict(), tmp_path / "trainer_0" / "ae.pt")
    (tmp_path / "trainer_0" / "config.json").write_text(json.dumps({"trainer": {"dict_class": cls, "submodule_name": "resid_post_layer_1"}}))
    ours = sae.load(tmp_path / "trainer_0")
    if cls == "AutoEncoder":  # the library's own loader normalises the decoder by default
        ref = type(ref).from_pretrained(tmp_path / "trainer_0" / "ae.pt")
    x = _x(10)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), ref.encode(x), **TOL)
        torch.testing.assert_close(ours(x), ref(x), **TOL)
