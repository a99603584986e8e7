"""LM loss with a joint dictionary spliced in, against HF's own forward with a module hook on the same positions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import universality as uv
from conftest import tiny_transformer
from universality import sae
from universality._progress import set_quiet
from universality.sae.joint.lm import joint_lm_losses, splice_lm_loss

HOOK, LAYER = "blocks.1.resid_post", 1

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_loss(model, layers, tokens, rows, values=None):
    """HF forward, replacing layer LAYER's output at flat positions ``rows`` by ``values`` (zeros when None)."""
    T = tokens.shape[1]
    s, p = rows // T, rows % T

    def hook(module, args, output):
        h = (output[0] if isinstance(output, tuple) else output).clone()
        h[s, p] = 0 if values is None else values.to(h.dtype)
        return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

    handle = layers[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(tokens).logits
    finally:
        handle.remove()
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)))


def test_splicing_identity_gives_the_clean_loss_and_zero_the_manual_ablation(save_model):
    model = tiny_transformer("gpt_neox")
    host = uv.load_host(save_model(model), device="cpu")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, host.vocab_size, (5, 16), generator=g)
    rows = torch.randperm(5 * 16, generator=g)[:40].sort().values
    with torch.no_grad():
        _, cache = host.run_with_cache(tokens, names=[HOOK], return_logits=False)
    acts = cache[HOOK].reshape(-1, host.d_model)[rows]
    r = splice_lm_loss(host, HOOK, tokens, rows, {"identity": acts, "zero": torch.zeros_like(acts)}, batch_size=2)
    with torch.no_grad():
        clean = float(F.cross_entropy(model(tokens).logits[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1)))
    assert abs(r["identity"] - r["clean"]) < 1e-6 and abs(r["clean"] - clean) < 1e-5
    zero = _hf_loss(model, model.gpt_neox.layers, tokens, rows)
    print(f"\nsplice: clean {r['clean']:.5f} (HF {clean:.5f}), identity {r['identity']:.5f}, zero {r['zero']:.5f} (HF hook {zero:.5f})")
    assert abs(r["zero"] - zero) < 1e-5 and abs(r["zero"] - r["clean"]) > 0.01  # the ablation does change the loss


def test_joint_lm_losses_match_hf_hooks_on_two_architectures(save_model):
    set_quiet(True)
    models = [tiny_transformer("gpt_neox"), tiny_transformer("llama")]
    layers = [models[0].gpt_neox.layers, models[1].model.layers]
    hosts = [uv.load_host(save_model(m), device="cpu") for m in models]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 97, (24, 24), generator=g)  # the same token ids in both hosts: every row aligned
    rows = torch.arange(24 * 24)
    xs = []
    for h in hosts:
        with torch.no_grad():
            _, cache = h.run_with_cache(tokens, names=[HOOK], return_logits=False)
        xs.append(cache[HOOK].reshape(-1, h.d_model))
    jd = sae.fit_joint(xs, kind="crosscoder", n_latents=64, k=8, seed=2, batch_size=256, n_tokens=256 * 60, names=["neox", "llama"])
    coders = [sae.fit(x, kind="batchtopk", n_latents=64, k=8, seed=2, batch_size=256, n_tokens=256 * 60, device="cpu") for x in xs]
    out = joint_lm_losses(jd, hosts, [HOOK, HOOK], [tokens, tokens], [rows, rows], xs, coders, max_sequences=6, batch_size=4)
    keep = rows[rows // 24 < 6]
    t6 = tokens[:6]
    for m, (res, model) in enumerate(zip(out, models)):
        # the joint reconstruction from the raw coder tensors in float64, written by a HF module hook
        xn = torch.cat([x[keep].double() * s for x, s in zip(xs, jd.cfg.model_scales)], 1)
        c = jd.coder
        pre = (xn - c.b_dec.double()) @ c.W_enc.detach().double().t() + c.b_enc.detach().double()
        z = pre * (pre > float(c.threshold))
        sl = jd.cfg.blocks()[m]
        recon = (z @ c.W_dec.detach().double() + c.b_dec.detach().double())[:, sl] / jd.cfg.model_scales[m]
        ref_joint = _hf_loss(model, layers[m], t6, keep, recon.float())
        ref_zero = _hf_loss(model, layers[m], t6, keep)
        ref_ind = _hf_loss(model, layers[m], t6, keep, coders[m](xs[m][keep]))
        print(f"\n[{jd.names[m]}] clean {res.clean:.4f}, joint {res.joint:.4f} (HF {ref_joint:.4f}), independent {res.independent:.4f} "
              f"(HF {ref_ind:.4f}), zero {res.zero_ablation:.4f} (HF {ref_zero:.4f}); recovered joint {res.recovered('joint'):.3f}, "
              f"independent {res.recovered('independent'):.3f}")
        assert abs(res.joint - ref_joint) < 2e-3 and abs(res.zero_ablation - ref_zero) < 1e-5 and abs(res.independent - ref_ind) < 1e-4
        # both dictionaries are far closer to the clean model than the ablation (random-init hosts: ablating may even lower the loss)
        assert abs(res.joint - res.clean) < 0.5 * abs(res.zero_ablation - res.clean)
        assert abs(res.independent - res.clean) < 0.5 * abs(res.zero_ablation - res.clean)
    set_quiet(False)


def test_bad_splice_input_is_one_sentence(save_model):
    host = uv.load_host(save_model(tiny_transformer("gpt_neox")), device="cpu")
    tokens = torch.randint(0, 97, (2, 8))
    cases = [
        (dict(rows=torch.tensor([16]), replacements={"x": torch.zeros(1, 32)}), r"flat positions in 0\.\.15"),
        (dict(rows=torch.tensor([1, 2]), replacements={"x": torch.zeros(3, 32)}), r"replacement 'x' has shape \(3, 32\)"),
        (dict(rows=torch.tensor([1]), replacements={}, tokens=torch.zeros(8, dtype=torch.long)), r"tokens have shape"),
    ]
    for kw, match in cases:
        args = dict(host=host, hook=HOOK, tokens=tokens)
        args.update(kw)
        with pytest.raises(uv.UniversalityError, match=match) as e:
            splice_lm_loss(**args)
        assert "\n" not in str(e.value)
