"""Joint dictionaries against planted ground truth: M = 2 and M = 3 models of different widths with shared, subset and private features.

The data and the dictionaries' initialisation come from different seeds. Every number is printed (run with ``-s``).
"""

from __future__ import annotations

import pytest
import torch

from universality import sae
from universality._progress import set_quiet
from universality.sae.joint import diagnostics as dg
from universality.sae.joint import planted

DATA_SEED, INIT_SEED = 1, 7
M2 = dict(widths=[32, 48], groups={(0, 1): 40, (0,): 12, (1,): 20})
M3 = dict(widths=[24, 32, 40], groups={(0, 1, 2): 30, (0, 1): 6, (1, 2): 6, (0, 2): 6, (0,): 6, (1,): 6, (2,): 6})


@pytest.fixture(autouse=True)
def _quiet():
    set_quiet(True)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and steadier on a shared machine
    yield
    torch.set_num_threads(n)
    set_quiet(False)


def _fit_and_score(spec: dict, kind: str, n_latents: int, steps: int, **options):
    truth = planted.plant(spec["widths"], spec["groups"], n=24000, seed=DATA_SEED)
    jd = sae.fit_joint(truth.xs, kind=kind, n_latents=n_latents, k=4, seed=INIT_SEED, batch_size=1024, n_tokens=steps * 1024,
                       lr=0.01, **options)
    rec = planted.recovery(jd, truth)
    labels = jd.classify()
    raw = dg.shared_fraction(labels)
    if jd.source_frequency is not None:  # a universal SAE: what the decoder norms alone would say (no encoder evidence)
        sf, jd.source_frequency = jd.source_frequency, None
        dec_labels = jd.classify()
        print(f"\n[{kind}] decoder norms alone: shared fraction {dg.distinct_shared_fraction(jd, dec_labels):.3f} "
              f"(raw {dg.shared_fraction(dec_labels):.3f}); with the encoders' reading:", end="")
        jd.source_frequency = sf
    est = dg.distinct_shared_fraction(jd, labels)
    print(f"\n[{kind}, M={len(spec['widths'])}, widths {spec['widths']}] recovered {rec['recovered']:.3f} of {len(truth.membership)} "
          f"features (cos > 0.9 in every model they live in), classified correctly {rec['classified']:.3f}, "
          f"shared fraction {est:.3f} vs truth {truth.shared_fraction:.3f} (|diff| {abs(est - truth.shared_fraction):.3f}; "
          f"{len(dg.distinct_latents(jd, labels))} distinct of {sum(lb != 'dead' for lb in labels)} live latents, {raw:.3f} before merging duplicates); "
          f"FVU per model {[round(v, 4) for v in jd.metrics['fvu']]}; classes {dg.class_counts(labels)}")
    return truth, jd, rec, est


@pytest.mark.parametrize("kind,n_latents,steps", [("crosscoder", 80, 1500), ("usae", 100, 2500)])
def test_two_models_of_different_widths(kind, n_latents, steps):
    truth, jd, rec, est = _fit_and_score(M2, kind, n_latents, steps)
    assert rec["recovered"] >= 0.9
    assert rec["classified"] >= 0.9
    assert abs(est - truth.shared_fraction) <= 0.05


@pytest.mark.parametrize("kind,n_latents,steps", [("crosscoder", 84, 1500), ("usae", 100, 3750)])
def test_three_models_with_subset_features(kind, n_latents, steps):
    truth, jd, rec, est = _fit_and_score(M3, kind, n_latents, steps)
    assert rec["recovered"] >= 0.9
    assert rec["classified"] >= 0.9
    assert abs(est - truth.shared_fraction) <= 0.05
    # the subset features are labelled with their two models, not "shared"
    subset = [f for f, s in enumerate(truth.membership) if len(s) == 2]
    labels = jd.classify()
    named = sum(isinstance(labels[rec["best_latent"][f]], tuple) and len(labels[rec["best_latent"][f]]) == 2 for f in subset)
    print(f"subset features labelled with exactly two models: {named}/{len(subset)}")
    assert named >= 0.8 * len(subset)


def test_l1_crosscoder_shows_the_shrinkage_artefact_and_latent_scaling_flags_it():
    truth = planted.plant(M2["widths"], M2["groups"], n=24000, seed=DATA_SEED)
    out = {}
    for kind, opts in (("crosscoder_l1", {"l1_coefficient": 0.03}), ("crosscoder", {})):
        jd = sae.fit_joint(truth.xs, kind=kind, n_latents=160, k=4, seed=INIT_SEED, batch_size=1024, n_tokens=600 * 1024,
                           lr=0.005 if kind == "crosscoder_l1" else 0.01, **opts)
        rec = planted.recovery(jd, truth)
        ls = dg.latent_scaling(jd, truth.xs)
        flagged = {int(i) for i, f in zip(ls.latents, ls.flagged) if f}
        fe, te = rec["false_exclusive"], rec["true_exclusive"]
        out[kind] = rec
        rec["flag_false"] = sum(i in flagged for i in fe) / max(len(fe), 1)
        rec["flag_true"] = sum(i in flagged for i in te) / max(len(te), 1)
        print(f"\n[{kind}] shared features also represented by a latent classed exclusive: {rec['decoupled']:.3f}; "
              f"false-exclusive latents {len(fe)}, flagged by Latent Scaling {rec['flag_false']:.3f}; "
              f"truly exclusive latents {len(te)}, flagged {rec['flag_true']:.3f}; FVU {[round(v, 4) for v in jd.metrics['fvu']]}")
    l1, btk = out["crosscoder_l1"], out["crosscoder"]
    assert l1["decoupled"] >= 0.25 and l1["decoupled"] >= 2 * btk["decoupled"]  # the artefact is L1's: at least twice as often
    assert l1["flag_false"] >= 0.6  # Latent Scaling flags most of the falsely exclusive latents
    assert l1["flag_true"] <= 0.2  # and few of the truly exclusive ones
