"""Pieces every command's pipeline shares: start a run directory, token streams for several hosts, random-init
copies of checkpoints, and finish with results.json and the report.

One module per command uses them: :mod:`.compare`, :mod:`.demo`, :mod:`.seeds`, :mod:`.circuits`, :mod:`.cache`,
:mod:`.train`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .._io import atomic_write_json
from ..results import RunResults
from .config import config_dict
from .rundir import RunDir


def start_run(out: str | os.PathLike, command: str, cfg: Any, log: Callable[[str], None]) -> RunDir:
    """Create the run directory and save the command's resolved config as ``config.json`` in it."""
    run = RunDir(out, log)
    atomic_write_json(run.path / "config.json", {"command": command, **config_dict(cfg)})
    return run


def corpus_entry(corpus: Any, n_tokens: int, source: str) -> dict:
    """The results.json ``corpus`` object: which text, its fingerprint and how many tokens counted."""
    return {"name": getattr(corpus, "name", source), "source": source, "fingerprint": corpus.fingerprint, "n_tokens": int(n_tokens),
            "n_documents": len(getattr(corpus, "documents", []) or [])}


def streams(hosts: dict[str, Any], corpus: Any, n_tokens: int, seq_len: int, seed: int):
    """Token streams of ``corpus`` for every host (aligned across tokenizers when they differ)."""
    from ..data import StreamConfig, context_length, streams_for_hosts

    limits = [n for n in (context_length(h) for h in hosts.values()) if n is not None]
    seq_len = min([seq_len] + limits)
    cfg = StreamConfig.for_tokens(n_tokens, seq_len=seq_len, seed=seed)
    return streams_for_hosts(list(hosts.values()), corpus, cfg, align=len(hosts) >= 2)


def random_init_copy(run: RunDir, label: str, path: str, seed: int) -> str:
    """A randomly initialised copy of the checkpoint at ``path`` (same config and tokenizer), saved in the run directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = run.path / "stages" / f"random-init-{label}"

    def build():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        model.save_pretrained(folder)
        try:
            AutoTokenizer.from_pretrained(path).save_pretrained(folder)
        except (OSError, ValueError):
            pass
        return {"folder": folder.name}

    run.stage(f"random-init-{label}", {"path": str(path), "seed": seed}, build, valid=lambda r: (folder / "config.json").is_file())
    return str(folder)


def finish(run: RunDir, results: RunResults, log: Callable[[str], None]) -> dict:
    """Add the stage timings, write results.json and render the report in the run directory; returns the results dict."""
    from ..reports import write_report

    results.timings = dict(run.timings)
    data = results.to_dict()
    from .. import _dist  # torchrun: rank 0 alone writes results.json and the report

    if not _dist.is_main():
        return data
    files = write_report(run.path, data)
    log(f"wrote {files.html}, {files.markdown} and {files.results}")
    return data
