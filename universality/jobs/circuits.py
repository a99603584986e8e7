"""``induction`` and ``off-by-one``: induction localisation and write-lag profiles as cached stages (thin calls into
``universality.analysis``), and the commands' pipeline."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .._errors import UniversalityError
from ..results import RunResults
from .common import environment, load_hosts, model_entry, now
from .config import CircuitsConfig
from .pipeline import finish, start_run
from .rundir import RunDir

TITLES = {"induction": "Induction localisation", "off-by-one": "Off-by-One write-lag profiles"}
"""Report title of each circuits command."""


def induction_stage(run: RunDir, label: str, host: Any, host_fp: str, n_prompts: int = 16, seq_len: int = 24,
                    half: int = 16):
    """The :class:`~universality.analysis.InductionSummary` of one host: per-layer scores and the patching table."""
    from .. import analysis

    settings = {"n_prompts": n_prompts, "seq_len": seq_len, "half": half}
    entry = run.stage(f"induction-{label}", {"host": host_fp, **settings},
                      lambda: analysis.induction(host, **settings).summary(label).to_dict())
    return analysis.InductionSummary.from_dict(entry)


def write_lag_stage(run: RunDir, label: str, host: Any, host_fp: str, n_seqs: int = 8, seq_len: int = 32,
                    behavioural: bool = False):
    """The :class:`~universality.analysis.WriteLagResult` of one host: every layer's profile and peak."""
    from .. import analysis

    settings = {"n_seqs": n_seqs, "seq_len": seq_len, "behavioural": behavioural}
    entry = run.stage(f"write-lag-{label}", {"host": host_fp, **settings},
                      lambda: analysis.write_lag_all(host, name=label, **settings).summary().to_dict())
    return analysis.WriteLagResult.from_dict(entry)


def paper_findings_stage(run: RunDir, label: str, host: Any, host_fp: str, summary, n_prompts: int = 16):
    """The :class:`~universality.analysis.PaperFindings` of one host: the paper's localisation, previous-token mixer
    and behavioural Off-by-One findings tested on its induction layer (``summary``: its induction summary)."""
    from ..analysis.paper_findings import PaperFindings, paper_findings

    settings = {"n_prompts": n_prompts, "layer_scores": [round(x, 6) for x in summary.layer_scores],
                "icl": round(summary.icl_score, 6)}
    entry = run.stage(f"paper-findings-{label}", {"host": host_fp, **settings},
                      lambda: paper_findings(host, summary, n_prompts=n_prompts).to_dict())
    return PaperFindings.from_dict(entry)


def circuits_job(kind: str, cfg: CircuitsConfig, out: str | os.PathLike, device: torch.device,
                 log: Callable[[str], None]) -> dict:
    """``universality induction`` / ``off-by-one`` (``kind``): per-host induction localisation or write-lag profiles, then a report."""
    from ..activations import host_fingerprint

    labels = [m.rstrip("/").split("/")[-1] for m in cfg.models]
    hosts = load_hosts(dict(zip(labels, cfg.models)), device)
    run = start_run(out, kind, cfg, log)
    res = RunResults(f"{TITLES[kind]}: {', '.join(labels)}", now(), environment(device),
                     {"name": "random token prompts", "source": "analysis tasks"},
                     models=[model_entry(n, h, p, "model") for (n, h), p in zip(hosts.items(), cfg.models)])
    for label, host in hosts.items():
        fp = host_fingerprint(host)
        if kind == "induction":
            res.induction.append(induction_stage(run, label, host, fp, n_prompts=cfg.n_prompts))
        else:
            res.write_lag.append(write_lag_stage(run, label, host, fp, n_seqs=max(2, cfg.n_prompts // 2)))
    return finish(run, res, log)


INDUCTION_MATCH_SETTINGS = {"hook": "mixer_out", "n_rows": 64, "seq_len": 64, "n_latents": 256, "k": 8, "epochs": 4, "batch_size": 512,
                            "n_induction": 16, "min_t": 4.0, "n_boot": 100, "n_permutations": 39}
"""What the demo's induction-match stage runs with (rows no longer than the hosts' context)."""

QUICK_INDUCTION_MATCH = {"n_rows": 16, "n_latents": 64, "k": 4, "epochs": 4, "n_boot": 50, "n_permutations": 19}
"""What ``demo --quick`` changes of :data:`INDUCTION_MATCH_SETTINGS`."""


def induction_match_stage(run: RunDir, hosts: dict, host_fps: dict, findings: list, corpus: Any, quick: bool = False) -> list:
    """The induction rows of the depth map (:func:`~universality.analysis.induction_match`) for ``hosts`` (label →
    host, all on one vocabulary), the localised layers read off their ``findings``; cached as one stage."""
    from ..analysis.induction_match import InductionMatch, induction_match, localised_layers
    from ..data import StreamConfig, context_length, make_stream

    settings = dict(INDUCTION_MATCH_SETTINGS)
    if quick:
        settings.update(QUICK_INDUCTION_MATCH)
    limits = [n for n in (context_length(h) for h in hosts.values()) if n is not None]
    settings["seq_len"] = min([settings["seq_len"]] + limits) // 2 * 2
    layers = {k: v for k, v in localised_layers(findings).items() if k in hosts}
    tok = next(iter(hosts.values())).tokenizer

    def text(split: str, seed: int) -> torch.Tensor:
        cfg = StreamConfig(seq_len=settings["seq_len"], n_sequences=settings["n_rows"], seed=seed, split=split)
        try:
            return make_stream(corpus, tok, cfg).tokens
        except UniversalityError:  # a corpus too small for its held-out split: another document order of all of it
            return make_stream(corpus, tok, StreamConfig(seq_len=cfg.seq_len, n_sequences=cfg.n_sequences, seed=seed + 1)).tokens

    def build() -> list:
        return [m.to_dict() for m in induction_match(hosts, layers, text=text("train", 0), text_eval=text("heldout", 0), **settings)]

    inputs = {"hosts": host_fps, "layers": layers, "corpus": getattr(corpus, "fingerprint", None), **settings}
    return [InductionMatch.from_dict(e) for e in run.stage("induction-match", inputs, build)]
