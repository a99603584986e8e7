"""Dictionary kinds register (coder class + config class); a kind defined here trains, saves, loads and compares end to end.

Also: each built-in kind's config holds only its own settings and validates
them; folders saved when every kind shared one flat config still load and
compute the same codes (``tests/data/sae_v1``).
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from universality import UniversalityError, matching, sae
from universality.sae.coder import StepOut

V1 = Path(__file__).parent / "data" / "sae_v1"


# ----- a kind of our own: ReLU codes with a plain (unweighted) L1 penalty -------------------------
@dataclass
class PlainL1Config(sae.CoderConfig):
    """Test kind ``plainl1``: ReLU codes, L1 penalty ``l1 * sum_i f_i`` (decoder rows at unit norm)."""

    kind: str = "plainl1"
    """Always ``"plainl1"``."""
    l1: float = 0.05
    """Weight of the L1 penalty (>= 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.l1, (int, float)) and self.l1 >= 0):
            raise UniversalityError(f"l1={self.l1!r} is not valid; it must be a number >= 0")


class PlainL1Coder(sae.SparseCoder):
    """ReLU dictionary trained with an unweighted L1 penalty (for the registry test only)."""

    kind = "plainl1"
    config_class = PlainL1Config

    def activate(self, pre):
        return pre.relu()

    def training_step(self, xn, yn, dead, sparsity_scale):
        f = self.preacts(xn).relu()
        recon = f @ self.W_dec + self.b_dec
        sq = (recon - yn).pow(2).sum()
        loss = sq / yn.numel() + sparsity_scale * self.cfg.l1 * f.sum(1).mean()
        on = f.detach() > 0
        return StepOut(loss, recon.detach(), sq.detach(), float(on.sum()) / f.shape[0], 0.0, on.any(0).nonzero().squeeze(1))


@pytest.fixture
def plainl1():
    sae.register_kind(PlainL1Coder)
    yield PlainL1Coder
    sae.unregister_kind("plainl1")


def _planted(n=4000, d=16, m=16, s=2, seed=7):
    """x [n, d]: two of ``m`` random unit atoms per row with magnitudes in [0.5, 2], plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(m, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.rand(n, m, generator=g).argsort(dim=1)[:, :s]
    codes = torch.zeros(n, m).scatter_(1, idx, torch.rand(n, s, generator=g) * 1.5 + 0.5)
    return codes @ atoms + 0.02 * torch.randn(n, d, generator=g)


def test_a_kind_registered_here_trains_saves_loads_and_compares(tmp_path, plainl1):
    assert "plainl1" in sae.registered_kinds()
    cfg = sae.CoderConfig(kind="plainl1", d_in=4, n_latents=6, l1=0.2)
    assert type(cfg) is PlainL1Config and sae.build_coder(cfg).__class__ is PlainL1Coder
    with pytest.raises(UniversalityError, match="l1=-1"):
        sae.CoderConfig(kind="plainl1", d_in=4, n_latents=6, l1=-1)

    x = _planted()
    coders = []
    for seed in (0, 1):
        # k is ignored by a kind without a k setting; l1 is this kind's own
        c = sae.fit(x, kind="plainl1", n_latents=16, k=5, seed=seed, l1=0.1, batch_size=128, n_tokens=128 * 200, lr=1e-2, device="cpu")
        assert type(c) is PlainL1Coder and not hasattr(c.cfg, "k")
        c.save(tmp_path / f"s{seed}")
        coders.append(sae.load(tmp_path / f"s{seed}"))
    a, b = coders
    assert type(a) is PlainL1Coder and a.cfg.l1 == 0.1 and a.cfg.seed == 0 and b.cfg.seed == 1
    assert "l1=0.1" in repr(a)
    with torch.no_grad():
        codes_a, codes_b = a.encode(x), b.encode(x)
    # both seeds find the planted atoms, so their codes correlate and their latents overlap
    r = matching.mppc(codes_a, codes_b).summary()
    overlap = matching.seed_overlap(a, b, threshold=0.7)
    print(f"\nplainl1 seeds: MPPC mean {r.mean:.3f}, shared fraction {overlap.shared_fraction:.2f}")
    assert r.mean > 0.8
    assert overlap.shared_fraction > 0.5
    # a fresh, untrained seed does not: the comparison can fail
    fresh = sae.build_coder(replace(b.cfg, seed=5))
    assert matching.seed_overlap(a, fresh, threshold=0.7).shared_fraction < 0.2


def test_pipeline_configs_accept_exactly_the_registered_kinds(plainl1):
    from universality.jobs.config import CompareConfig, SeedsConfig

    assert SeedsConfig(model="m", kinds=["plainl1", "relu"]).kinds == ["plainl1", "relu"]
    assert CompareConfig(models=["a", "b"], kind="plainl1").kind == "plainl1"
    sae.unregister_kind("plainl1")
    with pytest.raises(UniversalityError, match="use some of batchtopk, gated, jumprelu, relu, topk"):
        SeedsConfig(model="m", kinds=["plainl1"])
    sae.register_kind(PlainL1Coder)


def test_unknown_kind_and_foreign_settings_are_one_clear_error():
    with pytest.raises(UniversalityError, match=r"kind 'nope' is not a known dictionary kind; use one of batchtopk, gated, jumprelu, relu, topk"):
        sae.CoderConfig(kind="nope", d_in=4, n_latents=8)
    with pytest.raises(UniversalityError, match="k is not a setting of dictionary kind 'relu'"):
        sae.CoderConfig(kind="relu", d_in=4, n_latents=8, k=2)
    with pytest.raises(UniversalityError, match="kind 'relu' is configured by ReLUConfig, not TopKConfig"):
        sae.TopKConfig(kind="relu", d_in=4, n_latents=8)
    with pytest.raises(UniversalityError, match="k=8 is not valid for n_latents=8"):
        sae.CoderConfig(kind="batchtopk", d_in=4, n_latents=8, k=8)
    with pytest.raises(UniversalityError, match="not a known dictionary kind"):
        sae.fit(torch.randn(64, 4), kind="nope", n_latents=8, device="cpu")
    with pytest.raises(UniversalityError, match="aux_k is not a setting of dictionary kind 'jumprelu'"):
        sae.fit(torch.randn(64, 4), kind="jumprelu", n_latents=8, aux_k=3, device="cpu")


def test_each_builtin_kind_has_its_own_config():
    settings = {kind: set(sae.registry.kind_settings(kind)) - set(sae.registry.kind_settings("topk")) for kind in sae.registered_kinds()}
    assert settings == {"topk": set(), "batchtopk": set(), "relu": {"l1_coefficient"},
                        "jumprelu": {"l0_coefficient", "jump_bandwidth", "jump_init_threshold"}, "gated": {"l1_coefficient"}}
    assert {"k", "aux_k", "aux_coefficient"} <= set(sae.registry.kind_settings("batchtopk"))
    assert "k" not in sae.registry.kind_settings("relu")
    assert sae.CoderConfig(kind="relu", d_in=4, n_latents=8).unit_norm_decoder is False
    assert sae.CoderConfig(kind="jumprelu", d_in=4, n_latents=8).unit_norm_decoder is True
    cfg = sae.CoderConfig(kind="batchtopk", d_in=4, n_latents=8, k=2)
    assert type(cfg) is sae.BatchTopKConfig and cfg.aux_k == 2
    assert sae.CoderConfig.from_dict(cfg.to_dict()) == cfg
    for clone in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg)), replace(cfg, k=3)):
        assert type(clone) is sae.BatchTopKConfig
    assert replace(cfg, k=3).k == 3


def test_a_kind_registers_once_and_needs_a_matching_config(plainl1):
    with pytest.raises(TypeError, match="already registered"):
        sae.register_kind(type("Again", (PlainL1Coder,), {}))

    class NoConfig(sae.SparseCoder):
        kind = "noconfig"

    with pytest.raises(TypeError, match="must default to the kind it configures"):
        sae.register_kind(NoConfig)
    assert "noconfig" not in sae.registered_kinds()


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu", "jumprelu"])
def test_folders_saved_with_the_flat_config_still_load(kind):
    expected = load_file(V1 / "expected.safetensors")
    coder = sae.load(V1 / kind)
    assert coder.cfg.kind == kind and type(coder.cfg) is sae.registry.config_class(kind)
    assert coder.cfg.input_scale == 1.3 and coder.cfg.hook == "blocks.0.resid_post"
    with torch.no_grad():
        assert torch.equal(coder.encode(expected["x"]), expected[f"codes.{kind}"])
        assert torch.equal(coder(expected["x"]), expected[f"recon.{kind}"])
