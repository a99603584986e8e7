"""Induction patching on tiny Mamba and RWKV hosts, checked against float64 recomputations from HF weights.

In the last block only the last position matters for the metric, so patching one
point there has a closed form: recompute that block's tail at the last position
from the corrupted run's cached values, the clean value of the patched point, and
the Hugging Face modules' weights.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import universality as uv
from universality import analysis
from universality.analysis.tasks import induction_prompts, repeated_halves

N, HALF, SEQ, SEED = 4, 6, 10, 2


def _prompts(host):
    g = torch.Generator().manual_seed(SEED)
    repeated_halves(N, HALF, host.vocab_size, g)  # induction() draws the repeated halves first
    return induction_prompts(N, SEQ, (SEQ - 2) // 2, host.vocab_size, g)


def _effect(result, component, position):
    rows = [e for e in result.effects if e.component == component and e.position == position]
    assert len(rows) == 1
    return rows[0].effect


# ----- Mamba ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mamba(tmp_path_factory):
    pytest.importorskip("universality.hosts.mamba")
    import transformers as tf

    cfg = tf.MambaConfig(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(5)
    model = tf.MambaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("mamba_ind")
    model.save_pretrained(path)
    host = uv.load_host(path, device="cpu")
    return model.double(), host, analysis.induction(host, n_prompts=N, half=HALF, seq_len=SEQ, seed=SEED)


def _mamba_tail(model, resid: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Logits at the last position from the last block's resid_pre, ssm.y and ssm.gate there (float64)."""
    m = model.backbone.layers[-1].mixer
    out = (y * F.silu(gate)) @ m.out_proj.weight.T
    h = resid + out
    norm = model.backbone.norm_f
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
    return h @ model.lm_head.weight.T


def test_mamba_table_layout(mamba):
    _, host, r = mamba
    assert r.arch == "mamba" and r.head_induction is None and r.layer_scores.shape == (host.n_layers,)
    got = {(e.component, e.position) for e in r.effects}
    for layer in range(host.n_layers):
        for point, pos in [("ssm.state", "last"), ("ssm.y", "last"), ("ssm.in_x", "s"), ("ssm.in_x", "s+1"),
                           ("ssm.in_x", "s+2")]:
            assert (f"L{layer}.{point}", pos) in got
    json.dumps(r.to_dict(), allow_nan=False)


def test_mamba_state_and_y_patches_match_closed_form(mamba):
    model, host, r = mamba
    L = host.n_layers - 1
    p = _prompts(host)
    names = [f"blocks.{L}.{q}" for q in ("resid_pre", "ssm.gate", "ssm.y", "ssm.state", "ssm.C", "ssm.conv_out")]
    _, clean = host.run_with_cache(p.clean, names=names)
    _, corr = host.run_with_cache(p.corrupted, names=names)
    last = SEQ - 1
    at = {k.split(f"blocks.{L}.")[1]: v[:, last].double() for k, v in corr.items()}
    clean_at = {k.split(f"blocks.{L}.")[1]: v[:, last].double() for k, v in clean.items()}

    def metric(y):
        logits = _mamba_tail(model, at["resid_pre"], y, at["ssm.gate"])
        return logits.gather(1, p.targets[:, None]).mean().item()

    base = metric(at["ssm.y"])
    assert r.corrupted_metric == pytest.approx(base, abs=3e-6)
    # ssm.y: the clean scan output at the last position
    assert _effect(r, f"L{L}.ssm.y", "last") == pytest.approx(metric(clean_at["ssm.y"]) - base, abs=3e-6)
    # ssm.state: y = C·h + D·x with the clean state and the corrupted C and x
    D = model.backbone.layers[L].mixer.D
    y_state = (clean_at["ssm.state"] * at["ssm.C"][:, None, :]).sum(-1) + D * at["ssm.conv_out"]
    expect = metric(y_state) - base
    assert abs(expect) > 3e-5  # large enough for the tolerance to mean something
    assert _effect(r, f"L{L}.ssm.state", "last") == pytest.approx(expect, abs=3e-6)


# ----- RWKV ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rwkv(tmp_path_factory):
    pytest.importorskip("universality.hosts.rwkv")
    import transformers as tf

    cfg = tf.RwkvConfig(vocab_size=97, hidden_size=32, attention_hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, context_length=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(9)
    model = tf.RwkvForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("rwkv_ind")
    model.save_pretrained(path)
    host = uv.load_host(path, device="cpu")
    return model.double(), host, analysis.induction(host, n_prompts=N, half=HALF, seq_len=SEQ, seed=SEED)


def test_rwkv_table_layout(rwkv):
    _, host, r = rwkv
    assert r.arch == "rwkv" and r.head_induction is None
    got = {(e.component, e.position, e.position_index) for e in r.effects}
    for layer in range(host.n_layers):
        assert (f"L{layer}.att.state", "last-1", SEQ - 2) in got  # the state the last position reads
        assert (f"L{layer}.att.wkv", "last", SEQ - 1) in got
        assert (f"L{layer}.mixer_out", "last", SEQ - 1) in got


def test_rwkv_wkv_and_mixer_patches_match_closed_form(rwkv):
    model, host, r = rwkv
    L = host.n_layers - 1
    blk = model.rwkv.blocks[L]
    p = _prompts(host)
    names = [f"blocks.{L}.{q}" for q in ("resid_pre", "att.r", "att.wkv", "mixer_out", "mlp_in")]
    _, clean = host.run_with_cache(p.clean, names=names)
    _, corr = host.run_with_cache(p.corrupted, names=names)
    last = SEQ - 1
    at = {k.split(f"blocks.{L}.")[1]: v.double() for k, v in corr.items()}
    clean_at = {k.split(f"blocks.{L}.")[1]: v.double() for k, v in clean.items()}

    def metric(mixer_last):
        h = at["resid_pre"][:, last] + mixer_last
        mlp_in = torch.stack([at["mlp_in"][:, last - 1], blk.ln2(h)], dim=1)  # channel mix shifts by one
        with torch.no_grad():
            ff, _ = blk.feed_forward(mlp_in)
            logits = model.head(model.rwkv.ln_out(h + ff[:, 1]))
        return logits.gather(1, p.targets[:, None]).mean().item()

    base = metric(at["mixer_out"][:, last])
    assert r.corrupted_metric == pytest.approx(base, abs=3e-6)
    expect_mixer = metric(clean_at["mixer_out"][:, last]) - base
    assert _effect(r, f"L{L}.mixer_out", "last") == pytest.approx(expect_mixer, abs=3e-6)
    with torch.no_grad():
        mixed = blk.attention.output(at["att.r"][:, last] * clean_at["att.wkv"][:, last])
    expect_wkv = metric(mixed) - base
    assert min(abs(expect_wkv), abs(expect_mixer)) > 3e-5 and abs(expect_wkv - expect_mixer) > 3e-5
    assert _effect(r, f"L{L}.att.wkv", "last") == pytest.approx(expect_wkv, abs=3e-6)
