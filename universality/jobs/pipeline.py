"""Pieces every command's pipeline shares (start a run directory, streams, finish with results.json and the
report), and the ``compare`` pipeline itself, which ``demo`` reuses.

One module per command: :mod:`.demo`, :mod:`.seeds`, :mod:`.circuits`, :mod:`.cache`, :mod:`.train`; ``compare``'s
stages live in :mod:`.compare` and its pipeline here until the streaming rewrite of that module lands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json
from ..results import RunResults
from .common import environment, load_corpus_checked, load_hosts, now
from .compare import Side, run_compare
from .config import CompareConfig, config_dict
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
    """Token streams of ``corpus`` for every host (aligned across tokenizers when there are two)."""
    from ..data import StreamConfig, context_length, streams_for_hosts

    limits = [n for n in (context_length(h) for h in hosts.values()) if n is not None]
    seq_len = min([seq_len] + limits)
    cfg = StreamConfig.for_tokens(n_tokens, seq_len=seq_len, seed=seed)
    return streams_for_hosts(list(hosts.values()), corpus, cfg, align=len(hosts) == 2)


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


def compare_job(cfg: CompareConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None],
                title: str | None = None) -> dict:
    """``universality compare``: load, stream, cache, train, match, report. Hosts are loaded before anything is written."""
    labels = cfg.labels
    hosts = load_hosts(dict(zip(labels, cfg.models)), device)
    seed_hosts = load_hosts(cfg.seed_models, device) if cfg.seed_models else {}
    unknown = sorted((set(cfg.seed_models) | set(cfg.floor_models)) - set(labels))
    if unknown:
        raise UniversalityError(f"seed_models/floor_models name unknown model(s) {', '.join(unknown)}; models are {', '.join(labels)}")
    corpus = load_corpus_checked(cfg.corpus)
    run = start_run(out, "compare", cfg, log)
    floor_paths = dict(cfg.floor_models)
    if cfg.floor:
        for label, path in zip(labels[1:], cfg.models[1:]):
            if label not in floor_paths:
                floor_paths[label] = random_init_copy(run, label, path, cfg.seed + 1000)
    floor_hosts = load_hosts(floor_paths, device) if cfg.floor else {}
    res = compare_results(run, cfg, hosts, dict(zip(labels, cfg.models)), floor_hosts, floor_paths, seed_hosts, cfg.seed_models,
                          corpus, device, log, title or f"Feature universality: {' vs '.join(labels)}")
    return finish(run, res, log)


def compare_results(run: RunDir, cfg: CompareConfig, hosts: dict, paths: dict, floor_hosts: dict, floor_paths: dict,
                    seed_hosts: dict, seed_paths: dict, corpus: Any, device: torch.device, log: Callable[[str], None],
                    title: str) -> RunResults:
    """The comparison of ``hosts`` (with their floors and model-seed skylines) as :class:`RunResults`."""
    from ..activations import host_fingerprint

    st = streams(hosts, corpus, cfg.n_tokens, cfg.seq_len, cfg.seed)
    by_label = dict(zip(hosts, st.streams))
    sides = [Side(n, h, paths[n], "model", by_label[n], host_fingerprint(h)) for n, h in hosts.items()]
    floors = {n: Side(f"{n}-random-init", h, floor_paths[n], "random-init floor", by_label[n], host_fingerprint(h))
              for n, h in floor_hosts.items()}
    seeds = {n: Side(f"{n}-model-seed", h, seed_paths[n], "model-seed skyline", by_label[n], host_fingerprint(h))
             for n, h in seed_hosts.items()}
    cmp = run_compare(run, cfg, sides, floors, seeds, st.alignment, device, log)
    n_tok = int(sides[0].stream.mask.sum())
    return RunResults(title, now(), environment(device), corpus_entry(corpus, n_tok, cfg.corpus), models=cmp["models"],
                      pairs=cmp["pairs"], families=cmp["families"], dictionaries=cmp["dictionaries"], config=config_dict(cfg),
                      joint=cmp.get("joint"))
