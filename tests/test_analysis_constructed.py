"""Ground truth for the circuit analyses: a Mamba whose induction circuit is set by hand.

``analysis.constructed.induction_mamba`` stores ``previous token → token`` pairs in block 1's
SSM state (B = one-hot of the previous token, C and x = one-hot of the current one), the
previous token being shifted in by a causal conv (block 0's, or block 1's own). The analyses
must find exactly that: the state and read-out of block 1 at the last position and its conv
input at ``s + 1`` carry the whole effect, nothing in block 0's SSM does, and the behavioural
write lag of the layer whose conv shifts peaks at δ = 1.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from universality import analysis
from universality._errors import UniversalityError
from universality.analysis.constructed import induction_mamba
from universality.analysis.tasks import induction_prompts

V = 32


def _host(model):
    pytest.importorskip("universality.hosts.mamba")
    from universality.hosts.registry import host_class

    return host_class("mamba")(model, None, name_or_path="constructed")


@pytest.fixture(scope="module", params=[0, 1], ids=["shift-in-block0", "shift-in-block1"])
def built(request):
    model = induction_mamba(V, prev_token_layer=request.param)
    host = _host(model)
    return request.param, model, host, analysis.induction(host, n_prompts=8, seq_len=24, half=16)


def test_hf_forward_does_induction(built):
    """Independent of our hosts: transformers' own Mamba forward retrieves the token after the earlier copy."""
    _, model, host, _ = built
    p = induction_prompts(16, 24, 9, V, torch.Generator().manual_seed(3))
    with torch.no_grad():
        hf = model(p.clean).logits[:, -1]
        ours = host.run_with_hooks(p.clean, {})[:, -1]
    assert torch.equal(hf.argmax(-1), p.targets)
    assert (hf.gather(1, p.targets[:, None]).squeeze(1) - hf.topk(2).values[:, 1]).min() > 10  # a wide margin
    assert torch.allclose(ours, hf, atol=1e-3)
    with torch.no_grad():  # the corrupted copy (B replaced at s+1) no longer predicts B
        assert (model(p.corrupted).logits[:, -1].argmax(-1) != p.targets).all()


def test_induction_scores(built):
    _, _, _, r = built
    assert r.loss_first == pytest.approx(math.log(V), abs=1e-4)  # nothing to copy: uniform
    assert r.loss_second < 1e-3
    assert r.layer_scores[1] == pytest.approx(r.icl_score, rel=1e-3)  # ablating block 1's mixer removes the gain


def test_patching_localises_block1_state_and_conv_input_at_s_plus_1(built):
    shift, _, _, r = built
    eff = {(e.component, e.position): e.normalised_effect for e in r.effects}
    for site in [("L1.ssm.state", "last"), ("L1.ssm.y", "last"), ("L1.ssm.in_x", "s+1")]:
        assert eff[site] == pytest.approx(1.0, abs=1e-3), site
    for site in [("L1.ssm.in_x", "s"), ("L1.ssm.in_x", "s+2"), ("L0.ssm.state", "last"), ("L0.ssm.y", "last"),
                 ("L0.ssm.in_x", "s"), ("L0.ssm.in_x", "s+1"), ("L0.ssm.in_x", "s+2")]:
        assert abs(eff[site]) < 1e-3, site
    top = {(e.component, e.position) for e in r.ranking(3)}
    assert top <= {("L1.ssm.state", "last"), ("L1.ssm.y", "last"), ("L1.ssm.in_x", "s+1"), ("L0.resid_pre", "s+1"),
                   ("L1.resid_pre", "s+1")}
    if shift == 1:  # block 0 is inert: its mixer can be ablated at no cost
        assert abs(r.layer_scores[0]) < 1e-3
    else:  # block 0 writes the previous token, which block 1's keys need
        assert r.layer_scores[0] > 0.5 * r.icl_score


def test_behavioural_write_lag_peaks_at_one(built):
    shift, _, host, _ = built
    prof = analysis.write_lag(host, shift, n_seqs=4, seq_len=16, n_prompts=8)
    assert prof.behavioural_peak == 1
    change = prof.behavioural_change
    assert change[1] < -5 and change[1] == pytest.approx(prof.behavioural_full_change, rel=1e-3)
    assert change[[0, 2, 3]].abs().max() < 1e-3


def test_bad_input():
    with pytest.raises(UniversalityError, match="vocab_size"):
        induction_mamba(2)
    with pytest.raises(UniversalityError, match="prev_token_layer"):
        induction_mamba(V, prev_token_layer=2)


def test_paper_findings_on_the_ground_truth(built):
    """The paper's three findings hold where block 1's own conv shifts the key, and only localisation holds where
    block 0 does the shifting (block 1's conv then has no lag ≥ 1 tap and its write at s+1 carries nothing of s)."""
    shift, _, host, r = built
    f = analysis.paper_findings(host, r.summary("constructed"), n_prompts=8)
    assert f.induction_layer == 1 and f.mixer == "conv"
    o = f.off_by_one
    assert len(o.change) == 4 and o.samples == 8 * 4
    if shift == 1:
        assert f.mixer_gain_lost == pytest.approx(math.log(V), abs=1e-3)  # no shift: nothing recalled at all
        assert o.peak == 1 and o.excludes_zero(1) and o.change[1] < -5
        assert max(abs(o.low[0]), abs(o.high[0])) < 1e-3
        assert "findings hold:" in f.verdict and "separate s+1 from 0" in f.verdict
    else:
        assert abs(f.mixer_gain_lost) < 1e-3
        assert max(abs(x) for x in o.change[1:]) < 1e-3  # (at s the swapped residual also swaps the key P at s)
        assert "hold in part" in f.verdict
    back = analysis.PaperFindings.from_dict(json.loads(json.dumps(f.to_dict())))
    assert back.verdict == f.verdict and back.off_by_one.change == o.change
    # the weights come back after the shift test
    model2 = induction_mamba(V, prev_token_layer=shift)
    for (k, a), (_, b) in zip(host.model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k
