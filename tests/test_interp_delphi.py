"""Our explanations and scores read by delphi's own code (PyPI ``eai-delphi``, import ``delphi``).

Skipped with the reason when delphi is absent. eai-delphi 0.1.3 declares vllm, faiss-cpu, sentence-transformers and
more as dependencies and pulls a torch of its own, so it is installed apart, with ``--no-deps`` (docs/interp.md,
"delphi's own reader"). Its package ``delphi.explainers`` imports ``delphi.clients``, whose offline client imports
vllm at module level; vllm is never called here, so the test puts an empty stand-in ``vllm`` in ``sys.modules`` (the
same device as the dictionary_learning test's ``nnsight``) and runs delphi's own ``explanation_loader``,
``result_analysis.load_data``, ``compute_confusion``/``compute_classification_metrics``, ``compute_auc`` and
``get_agg_metrics`` on the files :func:`universality.interp.explain_dictionary` wrote.
"""

from __future__ import annotations

import asyncio
import sys
import types

import numpy as np
import pytest

from interp_helpers import planted_activations, table
from universality.interp import ContextConfig, explain_dictionary
from universality.jobs.explain import Dictionary

ra = pytest.importorskip("delphi.log.result_analysis", reason="delphi is not installed (pip install --no-deps eai-delphi "
                                                               "orjson aiofiles; see docs/interp.md)")


class _Absent(types.ModuleType):
    """A stand-in for a package delphi imports at module level but this test never calls (vllm)."""

    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def _delphi_explainers():
    for name in ("vllm", "vllm.distributed", "vllm.distributed.parallel_state", "vllm.inputs"):
        sys.modules.setdefault(name, _Absent(name))
    try:
        from delphi.explainers import explanation_loader
        from delphi.latents import Latent, LatentRecord
    except ImportError as e:  # faiss, blobfile, asyncer ... (delphi's other module-level imports)
        pytest.skip(f"delphi's explainers do not import here ({e}); install them with --no-deps as docs/interp.md says")
    return explanation_loader, Latent, LatentRecord


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Two dictionaries explained into one folder: two seeds of one model and hook (delphi must tell their files apart)."""
    out = tmp_path_factory.mktemp("delphi")
    cfg = ContextConfig(window=16, n_train=12, n_test=8, n_random=4, n_neighbour=0)
    res, seeds = {}, {}
    for seed in (0, 1):  # module names as `universality explain` gives a run's seed-0 and seed-1 dictionaries
        module = Dictionary("toy", "blocks.1.resid_post", "topk", seed, None, None, None, None, "").module
        res[module] = explain_dictionary(planted_activations(seed=seed), table(), module=module, out=out, latents=range(12),
                                         context_cfg=cfg)
        seeds[module] = seed
    return out, res, seeds


def test_delphi_reads_our_explanations(written):
    out, res, _ = written
    explanation_loader, Latent, LatentRecord = _delphi_explainers()
    for module, r in res.items():
        for j, lr in r.latents.items():
            got = asyncio.run(explanation_loader(LatentRecord(Latent(module, j)), str(out / "explanations")))
            assert got.explanation == lr.explanation and got.explanation != "No explanation found"


def test_delphi_result_analysis_recomputes_our_scores(written):
    out, res, seeds = written
    assert len(res) == 2
    for module, r in res.items():
        df, counts = ra.load_data(out / "scores", [module])
        assert set(df["module"]) == {module} and set(df["score_type"]) == {"detection", "fuzz"}
        assert set(df["latent_idx"]) == set(r.latents)  # only this module's files: no other module's name contains it
        np.testing.assert_array_equal(counts[module].numpy(), np.diff(planted_activations(seed=seeds[module]).codes.indptr))
        for (sc, j), g in df.groupby(["score_type", "latent_idx"]):
            ours = r.latents[int(j)].scores[sc]
            m = ra.compute_classification_metrics(ra.compute_confusion(g))
            assert m["accuracy"] == pytest.approx(ours["balanced_accuracy"], abs=1e-9)  # delphi's "accuracy" is balanced
            assert m["precision"] == pytest.approx(ours["precision"], abs=1e-9) and m["f1_score"] == pytest.approx(ours["f1"], abs=1e-9)
            auc = ra.compute_auc(g)
            assert auc == pytest.approx(ours["auc"], abs=1e-9) if auc is not None else ours["auc"] is None
        agg = ra.get_agg_metrics(df, counts).set_index("score_type")
        assert 0.5 < agg.loc["detection", "accuracy"] <= 1.0 and agg.loc["detection", "weighted_f1"] is not None
