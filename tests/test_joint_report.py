"""``compare --joint``: the config option, the aligned rows, the results record and the report section."""

from __future__ import annotations

import types

import pytest
import torch

from universality import UniversalityError, reports
from universality.jobs.config import CompareConfig
from universality.jobs.joint_stage import aligned_rows
from universality.reports.sections import registered
from universality.results import RunResults


def _joint() -> dict:
    ctx = {"tokens": ["a", " b", " c"], "target": 2, "activation": 1.5}
    return {
        "kind": "crosscoder", "models": ["transformer", "mamba"], "n_latents": 8, "k": 2, "n_rows": 100, "l0": 2.0,
        "classes": {"shared": {"count": 5, "fraction": 0.625, "ci": [0.31, 0.86]}, "transformer": {"count": 3, "fraction": 0.375, "ci": [0.14, 0.69]}},
        "shared_fraction": 0.625, "shared_fraction_distinct": 0.625, "n_dead": 0,
        "share_histogram": {"edges": [0.0, 0.5, 1.0], "counts": {"transformer": [2, 6], "mamba": [6, 2]}},
        "cross_r2": [[0.9, 0.4], [0.35, 0.8]], "cross_r2_mean": 0.375,
        "fvu": {"transformer": 0.1, "mamba": 0.2}, "independent": {"transformer": {"fvu": 0.08, "l0": 2.0}, "mamba": {"fvu": 0.15, "l0": 2.0}},
        "latent_scaling": {"n_exclusive": 3, "n_flagged": 1, "threshold": 0.5, "flagged": [6], "nu_median": 0.2},
        "agreement": {"agreement": 0.4, "n_shared": 5, "agreeing": 2, "sae_seed_skyline": 0.6},
        "lm_loss": {n: {"clean": 3.0, "joint": 3.2, "independent": 3.1, "zero_ablation": 5.0, "joint_recovered": 0.9,
                        "independent_recovered": 0.95} for n in ("transformer", "mamba")}, "lm_sequences": 8,
        "top_latents": [{"latent": 1, "label": "shared", "frequency": 0.2, "shares": [0.5, 0.5],
                         "contexts": {"transformer": [ctx], "mamba": [ctx]}}],
    }


def test_compare_config_takes_only_joint_kinds():
    assert CompareConfig(models=["a", "b"], joint="usae").joint == "usae"
    with pytest.raises(UniversalityError, match="joint 'topk' is not valid; use one of crosscoder"):
        CompareConfig(models=["a", "b"], joint="topk")


def test_aligned_rows_shared_stream_alignment_and_mismatch():
    def side(n):
        return types.SimpleNamespace(stream=object(), mask_rows=torch.arange(n))

    a, b, c = side(10), side(10), side(7)
    align = types.SimpleNamespace(rows_a=torch.tensor([0, 2]), rows_b=torch.tensor([1, 3]))
    assert [r.tolist() for r in aligned_rows([a, b], align)] == [[0, 2], [1, 3]]
    assert [r.numel() for r in aligned_rows([a, b, b], None)] == [10, 10, 10]
    with pytest.raises(UniversalityError, match="no aligned rows in common"):
        aligned_rows([a, b, c], None)


def test_results_record_and_report_section(tmp_path):
    base = reports.example_results(seed=0)
    base["joint"] = _joint()
    rec = RunResults.from_dict(base)
    assert rec.joint == base["joint"] and rec.to_dict()["joint"] == base["joint"]
    files = reports.write_report(tmp_path, rec.to_dict())
    html, md = files.html.read_text(), files.markdown.read_text()
    assert "Joint dictionary (crosscoder) over transformer, mamba" in html
    assert "calls 62% of its live latents shared" in md  # the finding, with the class fraction
    assert (tmp_path / "tables" / "joint_classes.csv").read_text().splitlines()[1].startswith("shared,5,0.625")
    assert "Language-model loss" in html and (tmp_path / "tables" / "joint_lm_loss.csv").read_text().splitlines()[1].startswith("transformer,3.0,3.2,3.1,5.0")
    names = [type(s).__name__ for s in registered()]
    assert names.index("JointDictionarySection") == names.index("Timings") - 1
    bad = dict(base, joint={k: v for k, v in _joint().items() if k != "cross_r2"})
    with pytest.raises(UniversalityError, match="joint.cross_r2"):
        reports.validate_results(bad)
