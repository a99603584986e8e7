"""``compare --joint KIND``: one joint dictionary over every compared host, on the aligned rows the pairwise comparison uses.

Phases (one cached stage of the run directory, ``joint-<kind>``):

1. gather each host's middle-layer activations at the aligned rows (the shared stream's counted rows,
   or the alignment's index maps across two tokenizers, or the token ends shared by every tokenizer across three or more);
2. train the joint dictionary with :func:`universality.sae.fit_joint` (the independent dictionaries' latents, k and
   seed; their passes over the rows, at least 300 steps) and save it under ``stages/joint-<kind>/dictionary``;
3. diagnose it: decoder-norm shares and their histogram, classes with intervals, the cross-R² matrix, Latent
   Scaling, per-model FVU next to each host's independent dictionary, agreement with MPPC next to the
   SAE-seed skyline, and the top shared and top exclusive latents with their top-activating contexts in every host;
4. on every host, the language-model loss with the joint dictionary's reconstruction spliced in at the hook, next to
   the independent dictionary's, the clean loss and the zero ablation (the first ``LM_SEQUENCES`` sequences;
   :func:`universality.sae.joint.lm.joint_lm_losses`; hosts whose weights were released are reloaded).

The result is the results.json ``joint`` object (see ``docs/joint.md``).
"""

from __future__ import annotations

from typing import Any, Callable

import scipy.sparse as sp
import torch

from .._errors import UniversalityError
from ..data import MultiAlignment
from ..hosts.names import hook_name, layer_at
from .common import train_stage
from .rundir import RunDir

N_TOP = 3
"""Top shared and top exclusive latents shown with contexts."""
LM_SEQUENCES = 8
"""Sequences of each stream on which the LM loss is measured with the dictionaries spliced in (bounds the stage's cost)."""


def aligned_rows(sides: list, alignment: Any) -> list[torch.Tensor]:
    """Store rows of every side that see the same text: the shared stream's counted rows, the two-tokenizer alignment,
    or, across three or more tokenizers, the rows at the token ends every tokenizer shares."""
    if isinstance(alignment, MultiAlignment):
        rows = [alignment.rows_for(s.stream) if any(s.stream is t for t in alignment.streams) else s.mask_rows for s in sides]
    elif alignment is not None and len(sides) == 2 and sides[0].stream is not sides[1].stream:
        rows = [alignment.rows_a, alignment.rows_b]
    else:
        rows = [s.mask_rows for s in sides]
    if any(r.numel() != rows[0].numel() for r in rows) or rows[0].numel() == 0:
        raise UniversalityError("the compared models have no aligned rows in common (different tokenizers without an alignment "
                                "of all of them); build their streams together (streams_for_hosts(..., align=True))")
    return rows


def _csc(codes: torch.Tensor) -> sp.csc_matrix:
    return sp.csc_matrix(codes.numpy())


def _top_latents(labels: list, freq: torch.Tensor, want_shared: bool, n: int) -> list[int]:
    """The ``n`` most frequent latents (active on ≥ 5 rows' worth) among the shared ones or the exclusive ones."""
    from ..sae.joint import SHARED, UNCLASSED

    ids = [i for i, lb in enumerate(labels) if lb not in UNCLASSED and ((lb == SHARED) == want_shared)]
    ids.sort(key=lambda i: -float(freq[i]))
    return ids[:n]


def joint_result(jd: Any, xs: list[torch.Tensor], sides: list, rows: list[torch.Tensor], host_coders: list, host_codes: list,
                 pair_mppc: dict, skyline: float | None, contexts: Callable) -> dict:
    """The results.json ``joint`` object of a trained joint dictionary ``jd`` on aligned rows ``xs`` (one ``[n, d_m]`` per side).

    ``contexts(side, rows, csc_codes, latent)`` gives a latent's top-activating contexts in one side's stream.
    """
    from .. import sae
    from ..sae.joint import diagnostics as dg

    freq, fvu, by_source = dg.firing_stats(jd, xs)
    jd.frequency, jd.source_frequency = freq, by_source
    labels = jd.classify()
    names = jd.names
    shares = dg.decoder_shares(jd)
    r2 = dg.cross_r2(jd, xs)
    ls = dg.latent_scaling(jd, xs, labels)
    codes = jd.encode(xs)
    agree = dg.agreement_with_mppc(codes, host_codes, labels, pair_results=pair_mppc)
    l0 = float((codes > 0).sum(1).float().mean())
    independent = [sae.evaluate(c, x) for c, x in zip(host_coders, xs)]
    csc = _csc(codes)
    top = []
    for want_shared in (True, False):
        for i in _top_latents(labels, freq, want_shared, N_TOP):
            top.append({"latent": i, "label": dg.label_name(labels[i]), "frequency": float(freq[i]),
                        "shares": [round(float(shares[m, i]), 4) for m in range(len(names))],
                        "contexts": {s.label: contexts(s, r, csc, i) for s, r in zip(sides, rows)}})
    flagged = [int(i) for i, f in zip(ls.latents, ls.flagged) if f]
    return {
        "kind": jd.kind, "models": names, "n_latents": jd.n_latents, "k": int(getattr(jd.cfg, "k", 0) or 0), "n_rows": int(xs[0].shape[0]),
        "l0": l0, "classes": dg.class_counts(labels), "shared_fraction": dg.shared_fraction(labels),
        "shared_fraction_distinct": dg.distinct_shared_fraction(jd, labels),
        "n_dead": sum(lb == "dead" for lb in labels), "n_unresolved": sum(lb == "unresolved" for lb in labels), "share_histogram": dg.share_histogram(jd),
        "cross_r2": [[round(float(v), 4) for v in row] for row in r2], "cross_r2_mean": dg.off_diagonal_mean(r2),
        "fvu": {n: fvu[m] for m, n in enumerate(names)},
        "independent": {n: {"fvu": float(ev.fvu), "l0": float(ev.l0)} for n, ev in zip(names, independent)},
        "latent_scaling": {"n_exclusive": int(ls.latents.numel()), "n_flagged": len(flagged), "threshold": ls.threshold,
                           "flagged": flagged[:50],
                           "nu_median": float(torch.nan_to_num(ls.nu, nan=0.0).max(1).values.median()) if ls.latents.numel() else None},
        "agreement": {**agree, "sae_seed_skyline": skyline},
        "top_latents": top,
    }


def joint_lm_result(jd: Any, sides: list, hooks: list[str], rows: list[torch.Tensor], xs: list[torch.Tensor], coders: list,
                    device: torch.device) -> dict:
    """Per host label: the results.json ``lm_loss`` entry (clean, joint, independent, zero ablation and both fractions recovered)."""
    from ..hosts import load_host
    from ..sae.joint.lm import joint_lm_losses

    hosts = [load_host(s.path, device=str(device)) if getattr(s.host, "released", False) else s.host for s in sides]
    res = joint_lm_losses(jd, hosts, hooks, [s.stream.tokens for s in sides], rows, xs, coders,
                          targets=[s.stream.mask for s in sides], max_sequences=LM_SEQUENCES)
    return {s.label: r.to_dict() for s, r in zip(sides, res)}


def joint_stage(run: RunDir, cfg: Any, sides: list, alignment: Any, dicts: Any, device: torch.device,
                log: Callable[[str], None], contexts: Callable, rows_tag: Callable) -> dict:
    """Train (once) and diagnose the ``cfg.joint`` dictionary over ``sides``' middle layers; returns the ``joint`` object.

    ``dicts`` is the comparison's :class:`~universality.jobs.compare.Dictionaries`; ``contexts`` and ``rows_tag(a, b, alignment)``
    are its context and row-set naming helpers (passed in, so this module does not import ``compare``).
    """
    from .. import sae

    kind = cfg.joint
    layers = [layer_at(s.host.n_layers, 0.5) for s in sides]
    hooks = [hook_name(la, cfg.hook) for la in layers]
    rows = aligned_rows(sides, alignment)
    folder = run.path / "stages" / f"joint-{kind}" / "dictionary"
    n = int(rows[0].numel())
    batch = min(1024, n)
    n_tokens = max(cfg.sae_epochs * n, 300 * batch)
    inputs = {"dictionaries": [dicts.key(s, la) for s, la in zip(sides, layers)], "joint": kind, "rows": [int(r.numel()) for r in rows],
              "alignment": None if alignment is None else ("all-tokenizers" if isinstance(alignment, MultiAlignment) else "two-tokenizer"), "sae_seed_skyline": cfg.sae_seed_skyline,
              "batch_size": batch, "n_tokens": n_tokens, "lm_sequences": LM_SEQUENCES}

    def build() -> dict:
        log(f"joint {kind} over {', '.join(s.label for s in sides)}: {int(rows[0].numel())} aligned rows")
        xs = [s.store.gather(r, h) for s, r, h in zip(sides, rows, hooks)]
        jd = sae.fit_joint(xs, kind=kind, n_latents=cfg.n_latents, k=cfg.k, seed=cfg.seed, names=[s.label for s in sides],
                           batch_size=batch, n_tokens=n_tokens, device=str(device))
        jd.save(folder)
        coders = []
        for s, la, h in zip(sides, layers, hooks):
            coders.append(train_stage(run, s.store, h, s.mask_rows, tag=f"{s.label}-{h}-{cfg.kind}-s{cfg.seed}", host_fp=s.host_fp,
                                      kind=cfg.kind, n_latents=cfg.n_latents, k=cfg.k, seed=cfg.seed, epochs=cfg.sae_epochs,
                                      device=device))
        host_codes = [dicts.codes(s, la).gather(r) for s, la, r in zip(sides, layers, rows)]
        pair_mppc = {}
        for a in range(len(sides)):
            for b in range(a + 1, len(sides)):
                sa, sb = sides[a], sides[b]
                ra, rb = (rows[a], rows[b])
                pair_mppc[(a, b)] = dicts.mppc(sa, layers[a], ra, sb, layers[b], rb, rows_tag(sa, sb, alignment))  # the pair's own
        skyline = None
        if cfg.sae_seed_skyline:
            from ..sae.joint.diagnostics import mutual_fraction

            a, la = sides[0], layers[0]
            ra = a.mask_rows
            skyline = mutual_fraction(dicts.matrix(a, la, ra, "mask"), dicts.matrix(a, la, ra, "mask", cfg.seed + 1))
        out = joint_result(jd, xs, sides, rows, coders, host_codes, pair_mppc, skyline, contexts)
        out["lm_loss"] = joint_lm_result(jd, sides, hooks, rows, xs, coders, device)
        out["lm_sequences"] = LM_SEQUENCES
        return out

    return run.stage(f"joint-{kind}", inputs, build, valid=lambda r: (folder / "joint.json").is_file())


__all__ = ["joint_stage", "joint_result", "joint_lm_result", "aligned_rows", "LM_SEQUENCES"]
