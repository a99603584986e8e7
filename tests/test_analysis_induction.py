"""Induction analysis on a tiny GPT-NeoX, checked against Hugging Face's own forward (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import universality as uv
from universality import analysis
from universality.analysis.tasks import induction_prompts, repeated_halves

N, HALF, SEQ = 6, 8, 12


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    """(host, float64 HF reference model with eager attention) for one tiny GPT-NeoX."""
    from conftest import tiny_transformer

    model = tiny_transformer("gpt_neox")
    path = tmp_path_factory.mktemp("neox")
    model.save_pretrained(path)
    host = uv.load_host(path, device="cpu")
    ref = type(model).from_pretrained(path, attn_implementation="eager").double().eval()
    return host, ref


@pytest.fixture(scope="module")
def result(neox):
    host, _ = neox
    extra = (("blocks.0.resid_pre", "s+1"), ("blocks.0.resid_pre", "s"))
    return analysis.induction(host, n_prompts=N, half=HALF, seq_len=SEQ, extra_sites=extra, seed=3)


def _repeated(host, seed=3):
    return repeated_halves(N, HALF, host.vocab_size, torch.Generator().manual_seed(seed))


def _half_nll(logits: np.ndarray, tokens: np.ndarray) -> tuple[float, float]:
    """Reference: float64 next-token NLL, first half (targets 1..HALF-1) and second half (targets HALF+1..)."""
    z = logits[:, :-1]
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    targets = np.arange(1, tokens.shape[1])
    return nll[:, targets < HALF].mean(), nll[:, targets > HALF].mean()


def test_half_losses_match_hf(neox, result):
    host, ref = neox
    tok = _repeated(host)
    with torch.no_grad():
        logits = ref(tok).logits.numpy()
    first, second = _half_nll(logits, tok.numpy())
    assert result.loss_first == pytest.approx(first, abs=1e-4)
    assert result.loss_second == pytest.approx(second, abs=1e-4)
    assert result.icl_score == pytest.approx(first - second, abs=2e-4)


def test_head_scores_match_hf_attention(neox, result):
    host, ref = neox
    tok = _repeated(host)
    with torch.no_grad():
        att = [a.numpy() for a in ref(tok, output_attentions=True).attentions]  # each [b, h, t, t]
    t = np.arange(2 * HALF)
    for layer, a in enumerate(att):
        ind = np.stack([a[:, :, q, q - HALF + 1] for q in t[HALF:]], axis=-1).mean(axis=(0, 2))
        prev = np.stack([a[:, :, q, q - 1] for q in t[1:]], axis=-1).mean(axis=(0, 2))
        np.testing.assert_allclose(result.head_induction[layer].numpy(), ind, atol=1e-5)
        np.testing.assert_allclose(result.head_prev_token[layer].numpy(), prev, atol=1e-5)
    assert result.head_induction.shape == (host.n_layers, 4)


def test_layer_scores_match_hf_mean_ablation(neox, result):
    host, ref = neox
    tok = _repeated(host)
    blocks = ref.gpt_neox.layers
    outs = {}
    hooks = [blk.attention.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o[0]))
             for k, blk in enumerate(blocks)]
    with torch.no_grad():
        first, second = _half_nll(ref(tok).logits.numpy(), tok.numpy())
    for h in hooks:
        h.remove()
    gain = first - second
    for k, blk in enumerate(blocks):
        mean = outs[k].mean(dim=(0, 1))
        h = blk.attention.register_forward_hook(lambda m, i, o, mean=mean: (mean.expand_as(o[0]).clone(), o[1]))
        with torch.no_grad():
            f, s = _half_nll(ref(tok).logits.numpy(), tok.numpy())
        h.remove()
        assert result.layer_scores[k].item() == pytest.approx(gain - (f - s), abs=2e-4)


def _prompts(host, seed=3):
    g = torch.Generator().manual_seed(seed)
    repeated_halves(N, HALF, host.vocab_size, g)  # induction() draws the repeated halves first
    return induction_prompts(N, SEQ, (SEQ - 2) // 2, host.vocab_size, g)


def test_head_patching_matches_hf(neox, result):
    """Patching one head's attn.z = patching that head's slice of the input to HF's output projection."""
    host, ref = neox
    p = _prompts(host)
    dh = 32 // 4
    grabbed = {}

    def metric(tokens, layer=None, pos=None, head=None, clean_in=None):
        handle = None
        if layer is not None:
            def pre(m, args):
                x = args[0].clone()
                x[:, pos, head * dh:(head + 1) * dh] = clean_in[:, pos, head * dh:(head + 1) * dh]
                return (x,)
            handle = ref.gpt_neox.layers[layer].attention.dense.register_forward_pre_hook(pre)
        with torch.no_grad():
            out = ref(tokens).logits[:, -1].gather(1, p.targets[:, None]).mean().item()
        if handle:
            handle.remove()
        return out

    hs = [blk.attention.dense.register_forward_pre_hook(lambda m, a, k=k: grabbed.__setitem__(k, a[0].clone()))
          for k, blk in enumerate(ref.gpt_neox.layers)]
    clean = metric(p.clean)
    for h in hs:
        h.remove()
    corrupted = metric(p.corrupted)
    assert result.clean_metric == pytest.approx(clean, abs=1e-5)
    assert result.corrupted_metric == pytest.approx(corrupted, abs=1e-5)
    rows = {(e.component, e.position): e for e in result.effects}
    for layer, head, label, pos in [(0, 1, "last", SEQ - 1), (2, 3, "last", SEQ - 1), (1, 0, "s+1", (SEQ - 2) // 2 + 1)]:
        expect = metric(p.corrupted, layer, pos, head, grabbed[layer]) - corrupted
        got = rows[(f"L{layer}.H{head}", label)]
        assert abs(expect) > 1e-4 and got.effect == pytest.approx(expect, abs=3e-6)
        assert got.position_index == pos and got.head == head


def test_restoring_the_corrupted_token_restores_the_metric(result):
    rows = {(e.component, e.position): e for e in result.effects}
    assert rows[("blocks.0.resid_pre", "s+1")].normalised_effect == pytest.approx(1.0, abs=1e-3)
    assert abs(rows[("blocks.0.resid_pre", "s")].effect) < 1e-6  # clean and corrupted agree at s
    assert abs(result.clean_metric - result.corrupted_metric) > 1e-5


def test_residual_sweep_bounds(neox, result):
    """Layer 0's residual at s+1 carries the whole difference; at the last position none (inputs agree there)."""
    host, _ = neox
    rows = {(e.component, e.position): e for e in result.effects}
    assert rows[("L0.resid_pre", "s+1")].effect == rows[("blocks.0.resid_pre", "s+1")].effect
    assert rows[("L0.resid_pre", "last")].effect == 0.0
    assert all((f"L{i}.resid_pre", pos) in rows for i in range(host.n_layers) for pos in ("s+1", "last"))


def test_every_head_is_patched_at_both_positions_and_ranking_is_sorted(neox, result):
    host, _ = neox
    heads = [e for e in result.effects if e.head is not None]
    assert len(heads) == 2 * host.n_layers * 4
    assert {e.position for e in heads} == {"last", "s+1"}
    ranked = result.ranking()
    keys = [abs(e.normalised_effect) for e in ranked]
    assert keys == sorted(keys, reverse=True) and len(ranked) == len(result.effects)
    assert result.ranking(3) == ranked[:3]


def test_batching_does_not_change_effects(neox, result):
    host, _ = neox
    one = analysis.induction(host, n_prompts=N, half=HALF, seq_len=SEQ, seed=3, max_rows=N, ablate_layers=False,
                             head_positions=("last",))
    by_key = {(e.component, e.position): e.effect for e in result.effects}
    for e in one.effects:
        assert e.effect == pytest.approx(by_key[(e.component, e.position)], abs=1e-5)
    assert one.layer_scores is None


def test_to_dict_is_strict_json(result, tmp_path):
    d = result.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["ranking"][0] == f"{result.ranking()[0].component}@{result.ranking()[0].position}"
    assert len(back["effects"]) == len(result.effects)
    assert back["config"]["seq_len"] == SEQ
    result.save_json(tmp_path / "ind.json")
    assert json.loads((tmp_path / "ind.json").read_text()) == back
    result.save_csv(tmp_path / "ind.csv")
    import csv

    rows = list(csv.DictReader((tmp_path / "ind.csv").open()))
    assert len(rows) == len(result.effects)
    assert float(rows[5]["effect"]) == pytest.approx(result.effects[5].effect, rel=1e-12)
    assert rows[0]["component"] == result.effects[0].component


@pytest.mark.parametrize("kwargs, words", [
    ({"metric": "prob"}, "metric"),
    ({"seq_len": 3}, "seq_len"),
    ({"seq_len": 10, "source": 8}, "source"),
    ({"head_positions": ("middle",)}, "position"),
    ({"n_prompts": 0}, "n_prompts"),
])
def test_bad_config_is_one_clear_error(kwargs, words):
    with pytest.raises(uv.UniversalityError, match=words):
        analysis.InductionConfig(**kwargs)


def test_bad_host_and_sites(neox):
    host, _ = neox
    with pytest.raises(uv.UniversalityError, match="arch"):
        analysis.induction(object())
    with pytest.raises(uv.UniversalityError, match="blocks.0.nothing"):
        analysis.induction(host, n_prompts=2, half=4, seq_len=8, extra_sites=(("blocks.0.nothing", "s"),),
                           ablate_layers=False)
    with pytest.raises(uv.UniversalityError, match="outside"):
        analysis.induction(host, n_prompts=2, half=4, seq_len=8, extra_sites=(("blocks.0.resid_pre", "s+9"),),
                           ablate_layers=False)
