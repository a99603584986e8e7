"""Write-lag (Off-by-One) profiles against planted ground truth on tiny Transformer, Mamba and RWKV hosts.

Planted truths: a Transformer writes keys/values from the current position only
(peak 0); a Mamba whose causal conv keeps only the tap for ``t - lag`` writes a
token at ``s + lag``; an RWKV whose token-shift mix takes only the previous
token writes it at ``s + 1`` (only the current token: at ``s``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import universality as uv
from universality import analysis
from universality.analysis.write_lag import _write_tensors

SMALL = dict(n_seqs=4, seq_len=12, n_sources=3, n_prompts=4, n_behavioural_sources=2)


def _check_profile(p, peak: int):
    """Profile invariants (1-D over lags 0..max_lag, non-negative, sums to 1) and the planted peak."""
    assert p.effect.dim() == 1 and p.effect.shape[0] >= 4
    assert bool((p.effect >= 0).all()) and p.effect.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert p.peak == peak and not p.degenerate
    if p.behavioural_effect is not None:
        assert p.behavioural_effect.sum().item() == pytest.approx(1.0, abs=1e-12)


# ----- Transformer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    from conftest import tiny_transformer

    path = tmp_path_factory.mktemp("neox_wl")
    tiny_transformer("gpt_neox").save_pretrained(path)
    return uv.load_host(path, device="cpu")


def test_transformer_writes_at_lag_zero(neox, tmp_path):
    table = analysis.write_lag_all(neox, **SMALL)
    assert table.peaks == [0] * neox.n_layers
    assert table.effect.shape == (neox.n_layers, 4)
    for p in table.profiles:
        _check_profile(p, 0)
        assert p.effect[1:].abs().max().item() < 1e-9  # keys/values at t see only position t
        assert p.behavioural_peak == 0 and p.behavioural_effect[1:].max().item() < 1e-9
        assert p.raw[0].item() > 0.01
    d = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert d["peaks"] == [0] * neox.n_layers and len(d["profiles"]) == neox.n_layers
    assert len(table.rows()) == neox.n_layers * 4
    table.save_json(tmp_path / "wl.json")
    table.save_csv(tmp_path / "wl.csv")
    assert json.loads((tmp_path / "wl.json").read_text())["effect"] == d["effect"]
    lines = (tmp_path / "wl.csv").read_text().splitlines()
    assert lines[0] == "name,arch,layer,lag,effect,behavioural_effect" and len(lines) == 1 + neox.n_layers * 4


def test_user_tokens_and_longer_lags(neox):
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, neox.vocab_size, (3, 10), generator=g)
    p = analysis.write_lag(neox, 1, tokens=tokens, max_lag=5, behavioural=False, n_sources=2)
    assert p.effect.shape == (6,) and p.peak == 0 and p.behavioural_effect is None
    assert p.n_samples == 3 * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path):
    from conftest import tiny_transformer

    tiny_transformer("gpt_neox").save_pretrained(tmp_path)
    cpu = analysis.write_lag(uv.load_host(tmp_path, device="cpu"), 1, **SMALL)
    gpu = analysis.write_lag(uv.load_host(tmp_path, device="cuda"), 1, **SMALL)
    torch.testing.assert_close(gpu.raw, cpu.raw, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gpu.behavioural_change, cpu.behavioural_change, atol=1e-4, rtol=1e-3)


# ----- errors --------------------------------------------------------------------------------


class _Without:
    """A host view that hides hook points ending in ``drop`` (a host lacking a needed hook)."""

    def __init__(self, host, drop: str):
        self._host = host
        self.hook_points = tuple(n for n in host.hook_points if not n.endswith(drop))

    def __getattr__(self, name):
        return getattr(self._host, name)


@pytest.mark.parametrize("layer", [-1, 3, "1", 1.0])
def test_layer_out_of_range(neox, layer):
    with pytest.raises(uv.UniversalityError, match="layer"):
        analysis.write_lag(neox, layer)


def test_short_sequences_and_bad_config(neox):
    with pytest.raises(uv.UniversalityError, match="too short"):
        analysis.write_lag(neox, 0, seq_len=5)  # behavioural needs max_lag + 3
    with pytest.raises(uv.UniversalityError, match="too short"):
        analysis.WriteLagConfig(seq_len=7, max_lag=6, behavioural=False)
    with pytest.raises(uv.UniversalityError, match="too short"):
        analysis.write_lag(neox, 0, tokens=torch.zeros(2, 4, dtype=torch.long), behavioural=False)
    with pytest.raises(uv.UniversalityError, match="n ≥ 2"):
        analysis.write_lag(neox, 0, tokens=torch.zeros(1, 12, dtype=torch.long))
    with pytest.raises(uv.UniversalityError, match="max_lag"):
        analysis.WriteLagConfig(max_lag=2)
    with pytest.raises(uv.UniversalityError, match="metric"):
        analysis.WriteLagConfig(metric="prob")


def test_host_without_the_needed_hook(neox):
    with pytest.raises(uv.UniversalityError, match="blocks.1.attn.v"):
        analysis.write_lag(_Without(neox, "attn.v"), 1)
    with pytest.raises(uv.UniversalityError, match="arch"):
        analysis.write_lag(object(), 0)
    with pytest.raises(uv.UniversalityError, match="at least one host"):
        analysis.compare_write_lag({})


# ----- Mamba ---------------------------------------------------------------------------------


def _mamba_host(tmp_path_factory, tap_lag: int | None):
    """A tiny Mamba; with ``tap_lag`` set, every conv kernel keeps only the tap for ``t - tap_lag``."""
    import transformers as tf

    cfg = tf.MambaConfig(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(7)
    model = tf.MambaForCausalLM(cfg).eval()
    if tap_lag is not None:
        with torch.no_grad():
            for layer in model.backbone.layers:
                w = layer.mixer.conv1d.weight  # [d_inner, 1, K]; tap K-1 multiplies x_t, tap K-1-j multiplies x_{t-j}
                keep = w[..., w.shape[-1] - 1 - tap_lag].clone()
                w.zero_()
                w[..., w.shape[-1] - 1 - tap_lag] = keep
    path = tmp_path_factory.mktemp(f"mamba_{tap_lag}")
    model.save_pretrained(path)
    return model, uv.load_host(path, device="cpu")


@pytest.fixture(scope="module")
def mamba_plain(tmp_path_factory):
    pytest.importorskip("universality.hosts.mamba")
    return _mamba_host(tmp_path_factory, None)


def test_mamba_increment_matches_float64_reference(mamba_plain):
    """B̄ₜxₜ from the cached points equals softplus(dt_proj) · conv(x) ⊗ B computed from HF's weights."""
    model, host = mamba_plain
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    layer = 1
    _, cache = host.run_with_cache(tokens, names=[f"blocks.{layer}.resid_pre"] +
                                   [f"blocks.{layer}.{p}" for p in analysis.WRITE_POINTS["mamba"]])
    got = _write_tensors("mamba", cache, layer, slice(None), slice(None))[0]
    blk = model.backbone.layers[layer]
    m = blk.mixer
    with torch.no_grad():
        h = cache[f"blocks.{layer}.resid_pre"].double()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + blk.norm.variance_epsilon) * blk.norm.weight.double()
        xz = h @ m.in_proj.weight.double().T
        x = xz[..., : m.intermediate_size].transpose(1, 2)
        conv = torch.nn.functional.conv1d(x, m.conv1d.weight.double(), m.conv1d.bias.double(), padding=3,
                                          groups=m.intermediate_size)[..., : tokens.shape[1]]
        x = torch.nn.functional.silu(conv).transpose(1, 2)
        params = x @ m.x_proj.weight.double().T
        dt_low, B, _ = params.split([m.time_step_rank, m.ssm_state_size, m.ssm_state_size], dim=-1)
        dt = torch.nn.functional.softplus(dt_low @ m.dt_proj.weight.double().T + m.dt_proj.bias.double())
        ref = ((dt * x)[..., None] * B[..., None, :]).flatten(2)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_mamba_plain_conv_spreads_over_its_kernel_only(mamba_plain):
    _, host = mamba_plain
    p = analysis.write_lag(host, 1, max_lag=5, behavioural=False, **{k: v for k, v in SMALL.items() if k != "seq_len"},
                           seq_len=14)
    assert bool((p.effect[:4] > 1e-4).all())  # a 4-tap kernel carries s into s..s+3
    assert p.effect[4:].max().item() < 1e-9  # and nothing further


@pytest.mark.parametrize("tap_lag", [1, 0, 2, 3], ids=["shift", "identity", "lag2", "lag3"])
def test_mamba_conv_tap_sets_the_peak(tmp_path_factory, tap_lag):
    pytest.importorskip("universality.hosts.mamba")
    _, host = _mamba_host(tmp_path_factory, tap_lag)
    for layer in ([0, 1] if tap_lag == 1 else [1]):
        p = analysis.write_lag(host, layer, **SMALL)
        _check_profile(p, tap_lag)
        others = [d for d in p.lags if d != tap_lag]
        assert p.effect[others].max().item() < 1e-9
        assert p.behavioural_peak == tap_lag
        assert p.behavioural_effect[others].max().item() < 1e-9
        assert math.isfinite(p.behavioural_full_change)


# ----- RWKV ----------------------------------------------------------------------------------


def _rwkv_host(tmp_path_factory, mix: float | None):
    """A tiny RWKV; with ``mix`` set, every time-mix key/value/receptance weight is ``mix`` (1: current token only)."""
    import transformers as tf

    cfg = tf.RwkvConfig(vocab_size=97, hidden_size=32, attention_hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, context_length=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(11)
    model = tf.RwkvForCausalLM(cfg).eval()
    if mix is not None:
        with torch.no_grad():
            for blk in model.rwkv.blocks:
                for w in (blk.attention.time_mix_key, blk.attention.time_mix_value, blk.attention.time_mix_receptance):
                    w.fill_(mix)
    path = tmp_path_factory.mktemp(f"rwkv_{mix}")
    model.save_pretrained(path)
    return model, uv.load_host(path, device="cpu")


@pytest.mark.parametrize("mix, peak", [(0.0, 1), (1.0, 0)], ids=["previous-token", "current-token"])
def test_rwkv_token_shift_sets_the_peak(tmp_path_factory, mix, peak):
    pytest.importorskip("universality.hosts.rwkv")
    _, host = _rwkv_host(tmp_path_factory, mix)
    for layer in range(host.n_layers):
        p = analysis.write_lag(host, layer, **SMALL)
        _check_profile(p, peak)
        others = [d for d in p.lags if d != peak]
        assert p.effect[others].max().item() < 1e-9
        assert p.behavioural_peak == peak


def test_rwkv_default_mix_writes_at_zero_and_one_only(tmp_path_factory):
    pytest.importorskip("universality.hosts.rwkv")
    _, host = _rwkv_host(tmp_path_factory, None)
    p = analysis.write_lag(host, 1, behavioural=False, **{k: v for k, v in SMALL.items()})
    assert p.effect[0].item() > 1e-3 and p.effect[1].item() > 1e-3
    assert p.effect[2:].max().item() < 1e-9


@pytest.mark.parametrize("tap_lag", [1, 0], ids=["shift", "identity"])
def test_mamba2_conv_tap_sets_the_peak(tmp_path_factory, tap_lag):
    """Mamba-2 (heads and groups; B passes through the conv too): same planted peaks.

    Unlike Mamba-1, Mamba-2's step size dt comes straight from in_proj (no conv), so the
    write at s still scales with token s: lag 0 keeps a share, lags beyond the tap none.
    """
    pytest.importorskip("universality.hosts.mamba2")
    import transformers as tf

    cfg = tf.Mamba2Config(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                          num_heads=4, head_dim=16, n_groups=2, chunk_size=8, bos_token_id=0, eos_token_id=0,
                          pad_token_id=0)
    torch.manual_seed(3)
    model = tf.Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.backbone.layers:
            w = layer.mixer.conv1d.weight
            keep = w[..., w.shape[-1] - 1 - tap_lag].clone()
            w.zero_()
            w[..., w.shape[-1] - 1 - tap_lag] = keep
    path = tmp_path_factory.mktemp(f"mamba2_{tap_lag}")
    model.save_pretrained(path)
    host = uv.load_host(path, device="cpu")
    p = analysis.write_lag(host, 1, **SMALL)
    _check_profile(p, tap_lag)
    assert p.effect[[d for d in p.lags if d not in (0, tap_lag)]].max().item() < 1e-9
    assert p.behavioural_peak == tap_lag
