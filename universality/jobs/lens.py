"""``universality lens``: a tuned lens per model (cached stage, translators saved in the run directory) and the
logit- and tuned-lens curves; the stage is shared with the demo."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..results import RunResults
from .common import environment, load_corpus_checked, load_hosts, model_entry, now
from .config import LensConfig
from .pipeline import corpus_entry, finish, start_run
from .rundir import RunDir


def lens_stage(run: RunDir, label: str, host: Any, host_fp: str, corpus: Any, n_tokens: int = 65536, eval_tokens: int = 4096,
               seq_len: int = 64, steps: int = 250, batch_tokens: int = 512) -> Any:
    """The :class:`~universality.analysis.lens.LensResult` of one host: train a tuned lens on the corpus's training split
    (saved under ``stages/lens-<label>/``), measure both lenses on held-out tokens."""
    from ..analysis.lens import LensResult, TunedLens, TunedLensConfig, lens_curves, train_tuned_lens
    from ..data import StreamConfig, context_length, make_stream

    seq_len = min(seq_len, context_length(host) or seq_len)
    settings = {"n_tokens": n_tokens, "eval_tokens": eval_tokens, "seq_len": seq_len, "steps": steps,
                "batch_tokens": batch_tokens}

    def compute() -> dict:
        train = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(n_tokens, seq_len=seq_len, split="train"), max_len=context_length(host))
        held = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(eval_tokens, seq_len=seq_len, split="heldout"),
                           max_len=context_length(host))
        lens = train_tuned_lens(host, train.tokens, train.mask, TunedLensConfig(steps=steps, batch_tokens=batch_tokens))
        lens.save(run.folder(f"lens-{label}"))
        info = {k: lens.info.get(k) for k in ("n_tokens", "first_loss", "final_loss")}
        return lens_curves(host, held.tokens, held.mask, tuned=lens, name=label, train={**info, "steps": steps}).to_dict()

    entry = run.stage(f"lens-{label}", {"host": host_fp, "corpus": corpus.fingerprint, **settings}, compute,
                      valid=lambda _: (run.path / "stages" / f"lens-{label}" / "lens.json").is_file())
    return LensResult.from_dict(entry)


def lens_job(cfg: LensConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality lens``: per model a tuned lens and the two lenses' curves, then a report."""
    from ..activations import host_fingerprint

    labels = [m.rstrip("/").split("/")[-1] for m in cfg.models]
    corpus = load_corpus_checked(cfg.corpus)
    hosts = load_hosts(dict(zip(labels, cfg.models)), device)
    run = start_run(out, "lens", cfg, log)
    res = RunResults(f"Logit and tuned lens: {', '.join(labels)}", now(), environment(device),
                     corpus_entry(corpus, cfg.eval_tokens, cfg.corpus),
                     models=[model_entry(n, h, p, "model") for (n, h), p in zip(hosts.items(), cfg.models)])
    lenses = [lens_stage(run, label, host, host_fingerprint(host), corpus, cfg.n_tokens, cfg.eval_tokens, cfg.seq_len,
                         cfg.steps, cfg.batch_tokens).to_dict() for label, host in hosts.items()]
    res.lens_steer = {"lens": lenses, "steering": []}
    return finish(run, res, log)
