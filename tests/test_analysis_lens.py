"""Logit and tuned lens: save → load identity, recovery of known affine maps, curves and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affine_host import AffineHost
from universality import UniversalityError
from universality.analysis.lens import (TunedLens, TunedLensConfig, collect_streams, kl_to_final, lens_curves,
                                        mean_interval, train_tuned_lens)


def _tokens(host, n_seq=24, t=16, seed=0):
    return torch.randint(0, host.vocab_size, (n_seq, t), generator=torch.Generator().manual_seed(seed))


def test_unembed_of_last_stream_is_the_forward_logits():
    host = AffineHost()
    tok = _tokens(host, 2, 5)
    logits, cache = host.run_with_cache(tok, ["blocks.2.resid_post"])
    torch.testing.assert_close(host.unembed(cache["blocks.2.resid_post"]), logits)
    with pytest.raises(UniversalityError, match="d_model = 8"):
        host.unembed(torch.zeros(3, 5))


def test_save_load_is_the_identity(tmp_path):
    lens = TunedLens(3, 8, {"arch": "affine"})
    with torch.no_grad():
        lens.weight.normal_()
        lens.bias.normal_()
    back = TunedLens.load(lens.save(tmp_path / "lens"))
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias) and back.info == lens.info
    x = torch.randn(4, 8)
    for i in range(3):
        assert torch.equal(back.translate(i, x), lens.translate(i, x))


def test_zero_init_is_the_logit_lens():
    host = AffineHost()
    res = lens_curves(host, _tokens(host), tuned=TunedLens(host.n_layers, host.d_model), n_boot=20)
    torch.testing.assert_close(torch.tensor(res.curve("tuned").kl), torch.tensor(res.curve("logit").kl))


def test_tuned_lens_recovers_known_affine_maps():
    host = AffineHost(n_layers=3, d=8, vocab=40)
    tok = _tokens(host, 64, 16)
    lens = train_tuned_lens(host, tok, cfg=TunedLensConfig(steps=600, batch_tokens=256, lr=2e-2))
    res = lens_curves(host, _tokens(host, 16, 16, seed=1), tuned=lens, n_boot=50)
    logit, tuned = res.curve("logit"), res.curve("tuned")
    streams, _ = collect_streams(host, torch.arange(host.vocab_size).view(-1, 1))
    assert logit.kl[-1] == pytest.approx(0, abs=1e-6) and tuned.kl[-1] == pytest.approx(0, abs=1e-6)
    for i in range(host.n_layers - 1):
        assert logit.kl[i] > 0.05, "the logit lens is far off on these random maps"
        assert tuned.kl[i] < 1e-3 * logit.kl[i] + 1e-4, (i, tuned.kl, logit.kl)
        assert tuned.top1[i] > 0.99
        # the translator maps the block's stream onto the final stream as the composed maps do, up to what the
        # final LayerNorm ignores (a shift along the all-ones direction and a positive scale)
        M, c = host.to_final(i)
        x = streams[i].double()  # every stream value this host can produce at block i (one per token id)
        with torch.no_grad():
            got = F.layer_norm(lens.translate(i, x.float()).double(), (8,))
        want = F.layer_norm(x @ M.T + c, (8,))
        assert (got - want).abs().mean() < 0.05, (got - want).abs().mean()
        assert (F.layer_norm(x, (8,)) - want).abs().mean() > 0.3  # the identity (logit lens) is far from it


def test_curves_and_intervals():
    host = AffineHost()
    res = lens_curves(host, _tokens(host), name="a", n_boot=100)
    c = res.curve("logit")
    assert res.depths == pytest.approx([1 / 3, 2 / 3, 1]) and res.curve("tuned") is None
    for stat in ("kl", "top1", "entropy"):
        for m, (lo, hi) in zip(getattr(c, stat), getattr(c, stat + "_ci")):
            assert lo <= m + 1e-12 and m <= hi + 1e-12
    assert c.top1[-1] == 1.0
    # KL against a float64 reference at block 0
    tok = _tokens(host)
    _, cache = host.run_with_cache(tok, ["blocks.0.resid_post", "blocks.2.resid_post"])
    with torch.no_grad():
        f = F.log_softmax(host.unembed(cache["blocks.2.resid_post"]).double(), -1)
        l0 = F.log_softmax(host.unembed(cache["blocks.0.resid_post"]).double(), -1)
    assert c.kl[0] == pytest.approx(float((f.exp() * (f - l0)).sum(-1).mean()), rel=1e-4)
    assert type(res).from_dict(res.to_dict()) == res


def test_mean_interval_resamples_sequences():
    m, (lo, hi) = mean_interval([1.0, 1.0, 3.0, 3.0], [0, 0, 1, 1], n_boot=400)
    assert m == 2.0 and lo == 1.0 and hi == 3.0
    assert kl_to_final(torch.log(torch.tensor([0.5, 0.5])), torch.log(torch.tensor([0.5, 0.5]))).item() == 0


def test_bad_input(tmp_path):
    host = AffineHost()
    with pytest.raises(UniversalityError, match="no lens.json"):
        TunedLens.load(tmp_path)
    with pytest.raises(UniversalityError, match="4 translators"):
        lens_curves(host, _tokens(host), tuned=TunedLens(4, 8))
    with pytest.raises(UniversalityError, match="non-empty 2-D"):
        collect_streams(host, torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(UniversalityError, match="steps"):
        TunedLensConfig(steps=0)


def test_tuned_lens_is_below_the_logit_lens_on_held_out_tokens(save_model):
    """A random-init Mamba (nonlinear blocks, the logit lens measurably off): trained on one set of token sequences,
    the tuned lens's KL on other sequences is below the logit lens's at every block but the last."""
    import transformers as tf

    import universality as uv

    cfg = tf.MambaConfig(vocab_size=60, hidden_size=24, state_size=4, num_hidden_layers=4, expand=2, conv_kernel=4,
                         initializer_range=0.3)
    torch.manual_seed(2)
    host = uv.load_host(save_model(tf.MambaForCausalLM(cfg)))
    lens = train_tuned_lens(host, _tokens(host, 64, 16, seed=3), cfg=TunedLensConfig(steps=80, batch_tokens=256, lr=5e-3,
                                                                                      check_every=20))
    res = lens_curves(host, _tokens(host, 32, 16, seed=4), tuned=lens, n_boot=20)
    logit, tuned = res.curve("logit"), res.curve("tuned")
    for i in range(host.n_layers - 1):
        assert logit.kl[i] > 0.01, ("the logit lens is measurably off", logit.kl)
        assert tuned.kl[i] < 0.9 * logit.kl[i], (i, tuned.kl, logit.kl)
    assert lens.info["identity_layers"] == [] and all(s > 0 for s in lens.info["kept_steps"])


def test_held_back_check_keeps_the_identity_when_training_diverges():
    """Phase 3: a learning rate that wrecks the translators leaves each at its best held-back state, here the
    identity (the tuned lens then equals the logit lens exactly)."""
    host = AffineHost(n_layers=3, d=8, vocab=40)
    with torch.no_grad():  # later blocks close to the identity: the logit lens is nearly right, a wrecked map is not
        host.model.A[1:] = torch.eye(8) + 0.05 * host.model.A[1:]
        host.model.b[1:] *= 0.05
    lens = train_tuned_lens(host, _tokens(host, 32, 16), cfg=TunedLensConfig(steps=20, batch_tokens=64, lr=50.0,
                                                                             check_every=5))
    assert lens.info["identity_layers"] == [0, 1] and lens.info["kept_steps"] == [0, 0]
    assert torch.count_nonzero(lens.weight) == 0 and torch.count_nonzero(lens.bias) == 0
    res = lens_curves(host, _tokens(host, 8, 16, seed=1), tuned=lens, n_boot=10)
    assert res.curve("tuned").kl == res.curve("logit").kl
