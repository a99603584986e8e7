"""Typed results.json records: exact to_dict/from_dict round trips, one-sentence refusals, and seed_stability's numbers."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch

from universality import UniversalityError, reports
from universality.analysis import (InductionConfig, InductionResult, InductionSummary, PatchEffect, WriteLagConfig,
                                   WriteLagProfile, WriteLagResult, WriteLagTable)
from universality.jobs.compare_results import FamiliesResult, PairResult
from universality.matching import SeedOverlapResult, seed_overlap, seed_stability
from universality.results import SCHEMA, RunResults


def _json(x):
    return json.loads(json.dumps(x))


def test_run_results_round_trip_the_example_exactly():
    res = _json(reports.example_results(seed=2, n_features=64))
    typed = RunResults.from_dict(res)
    assert isinstance(typed.seed_overlap[0], SeedOverlapResult) and typed.seed_overlap[1].kind == "relu"
    assert isinstance(typed.induction[0], InductionSummary) and isinstance(typed.write_lag[0], WriteLagResult)
    assert isinstance(typed.pairs[0], PairResult) and typed.pairs[0].grid.layers_a == [0, 1, 2, 3]
    assert isinstance(typed.families, FamiliesResult) and typed.families.by_size["3"] == 25
    out = typed.to_dict()
    assert out == res
    assert list(out) == [k for k in ["schema", "title", "created", "environment", "corpus", "models", "pairs", "families",
                                     "dictionaries", "seed_overlap", "induction", "write_lag", "missing"] if k in res]


def test_optional_sections_are_left_out_and_families_follow_pairs():
    r = RunResults("t", "now", {"device": "cpu"}, {"name": "c"})
    d = r.to_dict()
    assert "families" not in d and "config" not in d and "timings" not in d and d["pairs"] == []
    r.pairs = [{"a": "x"}]  # a stage's recorded dict is written as it is
    assert r.to_dict()["families"] is None  # a comparison of two hosts has no families, but says so


def test_another_schema_version_is_one_sentence():
    res = _json(reports.example_results(n_features=32))
    res["schema"] = "universality.results/0"
    with pytest.raises(UniversalityError, match=r"written with schema 'universality.results/0'.*reads 'universality.results/1'"):
        RunResults.from_dict(res)
    with pytest.raises(UniversalityError, match="rerun the command"):
        reports.validate_results(res)
    with pytest.raises(UniversalityError, match="lacks corpus"):
        RunResults.from_dict({"schema": SCHEMA, "title": "t", "environment": {}, "models": []})


def test_section_records_refuse_incomplete_entries():
    with pytest.raises(UniversalityError, match="lacks curve"):
        SeedOverlapResult.from_dict({k: 0 for k in ("model", "hook", "kind", "n_latents", "k", "seeds", "threshold",
                                                    "shared_fraction", "shared_fraction_std", "agreement", "n_seed_hist")})
    with pytest.raises(UniversalityError, match="lacks icl_score"):
        InductionSummary.from_dict({"model": "m", "arch": "mamba", "layer_scores": [], "components": [],
                                    "clean_metric": 1.0, "corrupted_metric": 0.0})
    with pytest.raises(UniversalityError, match="lacks peak"):
        WriteLagResult.from_dict({"model": "m", "arch": "rwkv", "layers": [{"layer": 0, "effect": [1.0]}]})


def test_full_analysis_results_round_trip():
    eff = [PatchEffect("L0.H1", "blocks.0.attn.z", 0, 1, "last", 23, 0.5, 0.25),
           PatchEffect("L1.mixer", "blocks.1.mixer_out", 1, None, "s+1", 12, float("nan"), None)]
    ind = InductionResult("transformer", 2, 3.0, 1.0, torch.tensor([0.1, float("nan")], dtype=torch.float64),
                          torch.rand(2, 2, dtype=torch.float64), None, 5.0, 1.0, eff, InductionConfig(n_prompts=4))
    d = _json(ind.to_dict())
    back = InductionResult.from_dict(d)
    assert _json(back.to_dict()) == d
    assert torch.isnan(back.layer_scores[1]) and back.config.head_positions == ("last", "s+1")
    summ = back.summary("t")
    assert [c["component"] for c in summ.components] == ["L0.H1"]  # the undefined normalised effect is left out
    assert summ.icl_score == pytest.approx(2.0) and InductionSummary.from_dict(summ.to_dict()) == summ

    prof = WriteLagProfile("mamba", 0, torch.tensor([0.1, 0.6, 0.2, 0.1], dtype=torch.float64),
                           torch.tensor([0.01, 0.06, 0.02, 0.01], dtype=torch.float64), ("ssm.dt", "ssm.conv_out", "ssm.B"), 8)
    table = WriteLagTable("m", "mamba", [prof], WriteLagConfig(behavioural=False))
    d = _json(table.to_dict())
    assert _json(WriteLagTable.from_dict(d).to_dict()) == d
    r = table.summary()
    assert r.model == "m" and r.layers[0].peak == 1 and r.to_dict()["layers"][0]["effect"] == pytest.approx([0.1, 0.6, 0.2, 0.1])
    assert WriteLagResult.from_dict(_json(r.to_dict())) == r


def test_seed_stability_against_pairwise_overlaps():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(24, 8, generator=g, dtype=torch.float64)
    # three "seeds": the same latents permuted with growing noise, so some latents are shared and some are not
    coders = []
    for i, noise in enumerate((0.0, 0.4, 0.9)):
        perm = torch.randperm(24, generator=g)
        enc = base[perm] + noise * torch.randn(24, 8, generator=g, dtype=torch.float64)
        dec = base[perm] + noise * torch.randn(24, 8, generator=g, dtype=torch.float64)
        coders.append((enc, dec))
    r = seed_stability(coders, 0.7, seeds=[3, 4, 5], model="m", hook="blocks.0.mlp_out", kind="relu")
    fr = np.array([seed_overlap(a, b, 0.7).shared_fraction for a, b in combinations(coders, 2)])
    assert r.shared_fraction == pytest.approx(fr.mean(), abs=1e-12)
    assert r.shared_fraction_std == pytest.approx(fr.std(ddof=1), abs=1e-12)
    assert 0 < r.shared_fraction < 1  # the planted noise makes this a real test of the averaging
    assert sum(r.n_seed_hist) == 24 and len(r.n_seed_hist) == 3 and r.n_latents == 24 and r.k is None
    first = seed_overlap(coders[0], coders[1], 0.7)
    assert r.curve_shared_fraction[r.curve_thresholds.index(0.7)] == pytest.approx(first.shared_fraction)
    assert r.seeds == [3, 4, 5] and SeedOverlapResult.from_dict(_json(r.to_dict())) == r
    with pytest.raises(UniversalityError, match="one seed per dictionary"):
        seed_stability(coders, seeds=[0, 1])
