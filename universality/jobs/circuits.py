"""Induction localisation and write-lag profiles as cached stages (thin calls into ``universality.analysis``)."""

from __future__ import annotations

from typing import Any

from .rundir import RunDir


def induction_stage(run: RunDir, label: str, host: Any, host_fp: str, n_prompts: int = 16, seq_len: int = 24,
                    half: int = 16) -> dict:
    """results.json ``induction`` entry of one host: per-layer scores and the patching table."""
    from .. import analysis

    settings = {"n_prompts": n_prompts, "seq_len": seq_len, "half": half}

    def build():
        r = analysis.induction(host, **settings)
        scores = r.layer_scores.tolist() if r.layer_scores is not None else []
        comps = [{"component": e.component, "position": e.position, "effect": float(e.effect),
                  "normalised_effect": float(e.normalised_effect) if e.normalised_effect is not None else float("nan")}
                 for e in r.effects]
        comps = [c for c in comps if c["normalised_effect"] == c["normalised_effect"]]  # drop NaN (clean ≈ corrupted)
        return {"model": label, "arch": host.arch, "score_name": "in-context gain lost on mean-ablating mixer_out",
                "layer_scores": [float(x) for x in scores], "components": comps,
                "icl_score": float(r.icl_score), "clean_metric": float(r.clean_metric), "corrupted_metric": float(r.corrupted_metric)}

    return run.stage(f"induction-{label}", {"host": host_fp, **settings}, build)


def write_lag_stage(run: RunDir, label: str, host: Any, host_fp: str, n_seqs: int = 8, seq_len: int = 32,
                    behavioural: bool = False) -> dict:
    """results.json ``write_lag`` entry of one host: every layer's profile and peak."""
    from .. import analysis

    settings = {"n_seqs": n_seqs, "seq_len": seq_len, "behavioural": behavioural}

    def build():
        t = analysis.write_lag_all(host, name=label, **settings)
        return {"model": label, "arch": host.arch,
                "layers": [{"layer": p.layer, "effect": [float(x) for x in p.effect.tolist()], "peak": int(p.peak)}
                           for p in t.profiles]}

    return run.stage(f"write-lag-{label}", {"host": host_fp, **settings}, build)
