"""``universality eval``: SAEBench's core metrics and sparse probing for dictionaries from any library, on one model.

Phases: (1) load the host and every dictionary (hooks translated into the host's
vocabulary, so a bad folder or hook fails before anything is written); (2) cut
the corpus into labelled token windows (:mod:`universality.sae.code_labels`;
a corpus that is not Python source gets plain windows and no probing);
(3) one cached stage per dictionary (:func:`eval_stage`), which also writes
SAEBench's JSON files next to its record; (4) results.json and the report.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json
from ..results import RunResults
from .common import environment, load_corpus_checked, load_hosts, model_entry, now
from .config import EvalConfig
from .pipeline import corpus_entry, finish, start_run
from .rundir import RunDir


def coder_fingerprint(coder: Any) -> str:
    """16-hex hash of a dictionary's config and tensors (what its evaluation depends on)."""
    h = hashlib.sha256(repr(sorted(coder.cfg.to_dict().items())).encode())
    for name, t in sorted(coder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def eval_windows(host: Any, corpus: Any, n_sequences: int, seq_len: int, probe: bool) -> tuple[torch.Tensor, torch.Tensor | None, tuple[str, ...], str]:
    """``(tokens [n, t], labels [n, t] | None, classes, note)``: labelled Python windows when possible, else a plain stream."""
    from ..data import StreamConfig, context_length, make_stream
    from ..sae.code_labels import labelled_windows

    if host.tokenizer is None:
        raise UniversalityError(f"model '{host.name_or_path}' has no tokenizer; save one next to the checkpoint (tokenizer.json)")
    limit = context_length(host)
    seq_len = min(seq_len, limit) if limit else seq_len
    texts = [d.text for d in corpus.split("heldout")]
    if probe:
        try:
            lt = labelled_windows(texts, host.tokenizer, seq_len, n_sequences)
            return lt.tokens, lt.labels, lt.classes, ""
        except UniversalityError as e:
            note = f"sparse probing skipped: {e}"
    else:
        note = "sparse probing switched off (--no-probe)"
    stream = make_stream(corpus, host.tokenizer, StreamConfig(n_sequences=n_sequences, seq_len=seq_len, split="heldout"))
    return stream.tokens, None, (), note


def eval_stage(run: RunDir, name: str, coder: Any, host: Any, host_fp: str, tokens: torch.Tensor, labels: torch.Tensor | None,
               classes: tuple[str, ...], batch_size: int = 8, skip_bos: bool | None = None) -> Any:
    """The :class:`~universality.sae.Evaluation` of one dictionary (cached), with ``saebench_*.json`` in the stage folder."""
    from ..sae.evaluation import Evaluation, evaluate_host

    inputs = {"host": host_fp, "dictionary": coder_fingerprint(coder), "tokens": hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16],
              "labels": None if labels is None else hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16],
              "batch_size": batch_size, "skip_bos": skip_bos}
    stage = f"eval-{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}"

    def compute() -> dict:
        ev = evaluate_host(coder, host, tokens, batch_size=batch_size, skip_bos=skip_bos, labels=labels, classes=classes, name=name)
        folder = run.path / stage
        folder.mkdir(parents=True, exist_ok=True)
        for kind, obj in ev.to_saebench(sae_cfg=coder.cfg.to_dict()).items():
            atomic_write_json(folder / f"saebench_{kind}.json", obj)
        return ev.to_dict()

    entry = run.stage(stage, inputs, compute, valid=lambda r: (run.path / stage / "saebench_core.json").is_file())
    return Evaluation.from_dict(entry)


def eval_job(cfg: EvalConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality eval``: every dictionary of ``cfg`` on ``cfg.host``; results.json, SAEBench JSON files and the report."""
    from .. import sae
    from ..activations import host_fingerprint

    label = cfg.host.rstrip("/").split("/")[-1]
    host = load_hosts({label: cfg.host}, device)[label]
    coders = {}
    for path in cfg.dictionaries:
        name = Path(path).name + (f"-{cfg.hookpoint}" if cfg.hookpoint else "")
        if name in coders:
            raise UniversalityError(f"dictionary '{path}' is given twice (or two folders share the name '{name}'); give each once")
        coders[name] = sae.load(path, str(device), host=host, hookpoint=cfg.hookpoint, norm_scaling_factor=cfg.norm_scaling_factor)
    corpus = load_corpus_checked(cfg.corpus)
    tokens, labels, classes, note = eval_windows(host, corpus, cfg.n_sequences, cfg.seq_len, cfg.probe)
    run = start_run(out, "eval", cfg, log)
    fp = host_fingerprint(host)
    res = RunResults(f"Dictionary evaluation on {label}", now(), environment(device), corpus_entry(corpus, tokens.numel(), cfg.corpus),
                     models=[model_entry(label, host, cfg.host, "model", fp)])
    if note:
        res.missing.append(note)
    skip = {"auto": None, "yes": True, "no": False}[cfg.skip_bos]
    for name, coder in coders.items():
        res.evaluations.append(eval_stage(run, name, coder, host, fp, tokens, labels, classes, cfg.batch_size, skip))
    return finish(run, res, log)


__all__ = ["coder_fingerprint", "eval_windows", "eval_stage", "eval_job"]
