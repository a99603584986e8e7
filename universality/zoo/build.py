"""Building the zoo: tokenizer, training data, every model, and ``zoo.json`` with what each reaches.

Layout under ``$UNIVERSALITY_HOME/zoo/<preset>/`` (home defaults to ``~/.cache/universality``)::

    tokenizer/            the byte-level BPE (HF tokenizer files)
    transformer/          an ordinary HF checkpoint (config, model.safetensors, tokenizer) + zoo_model.json
    mamba-seed1/ ...      one folder per member
    .work/<name>/         training checkpoints while a model is being trained
    zoo.json              preset, fingerprints, per-model metrics and timings

A member whose ``zoo_model.json`` carries the current build fingerprint is
reused; anything else is (re)built, continuing from its training checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json, ensure_writable_dir, fingerprint
from .._progress import progress
from ..precision import home_dir
from ..data.bpe import train_byte_bpe
from ..data.corpus import Corpus, default_corpus
from ..data.stream import StreamConfig, make_stream, shuffled_documents
from ..data.tokenizing import OffsetEncoder, special_ids, tokenizer_fingerprint
from .models import init_model
from .presets import ZooPreset, get_preset, resolve_precision
from .train import (TrainData, clock, copy_warmup_steps, cpu_seconds, evaluate, tokens_per_member, total_steps,
                    train_model, training_precision)

ZOO_VERSION = 3  # 2: tied embeddings, width 192, bfloat16 autocast; 3: fan-in init, copy warm-up, float32 attention backward


def zoo_home(home: str | os.PathLike | None = None) -> Path:
    """The cache root: ``home``, else ``$UNIVERSALITY_HOME``, else ``~/.cache/universality``."""
    return Path(home).expanduser() if home is not None else home_dir()


def zoo_dir(preset: str | ZooPreset = "default", home: str | os.PathLike | None = None) -> Path:
    """Folder of one preset's zoo."""
    return zoo_home(home) / "zoo" / get_preset(preset).name


def zoo_paths(preset: str | ZooPreset = "default", home: str | os.PathLike | None = None) -> dict[str, Path]:
    """name → checkpoint folder of every member already built (no training); empty when none is."""
    root = zoo_dir(preset, home)
    p = get_preset(preset)
    return {m.name: root / m.name for m in p.models if (root / m.name / "zoo_model.json").is_file()}


def load_zoo_results(preset: str | ZooPreset = "default", home: str | os.PathLike | None = None) -> dict:
    """The parsed ``zoo.json`` of a built zoo (metrics and timings per member)."""
    f = zoo_dir(preset, home) / "zoo.json"
    if not f.is_file():
        raise UniversalityError(f"no zoo has been built at '{f.parent}'; run ensure_zoo('{get_preset(preset).name}') first")
    return json.loads(f.read_text())


def ensure_zoo(preset: str | ZooPreset = "default", home: str | os.PathLike | None = None, *,
               only: list[str] | None = None, corpus: Corpus | None = None, workers: int | None = None) -> dict[str, Path]:
    """Build (or reuse) the zoo of ``preset`` and return name → HF checkpoint folder.

    ``only`` restricts the build to some members (names as in the preset).
    ``corpus`` replaces the default stdlib corpus (for tests and custom zoos).
    ``workers`` trains that many members at once in separate processes, each with
    ``cpu_count // workers`` torch threads (default: 2 when there are at least 2
    CPUs, since these small models use one core better than two; 1, or a custom ``corpus``, trains in
    this process). Workers are fresh interpreters, so calling scripts need no ``__main__`` guard.
    Every folder loads with ``universality.load_host(path)``.
    """
    p = resolve_precision(get_preset(preset))
    members = list(p.models)
    if only is not None:
        known = {m.name for m in members}
        bad = [n for n in only if n not in known]
        if bad:
            raise UniversalityError(f"zoo member(s) {', '.join(bad)} not in preset '{p.name}'; members: {', '.join(sorted(known))}")
        members = [m for m in members if m.name in only]
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    if not isinstance(workers, int) or workers < 1:
        raise UniversalityError(f"workers {workers!r} is not valid; use a positive integer")
    root = ensure_writable_dir(zoo_dir(p, home))
    t_start, c_start = clock(), cpu_seconds()
    user_corpus = corpus
    corpus = corpus or default_corpus()
    build_fp = fingerprint({"version": ZOO_VERSION, "preset": p.as_dict(), "corpus": corpus.fingerprint})
    results = _read_results(root, build_fp)
    base_s, base_c = results.get("build_seconds", 0.0), results.get("build_cpu_seconds", 0.0)  # earlier partial builds
    todo = [m for m in members if not _is_built(root / m.name, build_fp)]
    if not todo:
        return {m.name: root / m.name for m in members}
    tokenizer, tok_seconds = _ensure_tokenizer(root, corpus, p, build_fp)
    worker_cpu = 0.0

    def record(info: dict) -> None:
        results["models"][info["name"]] = info
        _write_results(root, results, p, corpus, tokenizer, build_fp, tok_seconds,
                       base_s + clock() - t_start, base_c + cpu_seconds() - c_start + worker_cpu)

    trained = [m for m in todo if m.trained]
    if workers > 1 and len(trained) > 1 and user_corpus is None:
        for info in _parallel_build(root, p, trained, build_fp, workers):
            worker_cpu += info["cpu_seconds"]
            record(info)
        todo = [m for m in todo if not m.trained]
    for m in todo:
        record(_build_member(str(root), p, m, build_fp, corpus, None, tokenizer))
    shutil.rmtree(root / ".work", ignore_errors=True)
    return {m.name: root / m.name for m in members}


_STEP_COST = {"mamba2": 3.0, "mamba": 2.0, "gpt_neox": 1.4, "rwkv": 1.0}
"""Relative single-thread cost of one training step per architecture (width 192, measured; see docs/zoo.md)."""


def member_cost(p: ZooPreset, arch: str) -> float:
    """Relative CPU cost of training one ``arch`` member under ``p``: its training tokens times the step cost, and for
    RWKV-4 ``1 + (channels / d_model - 1) / 6`` more per token for WKV channels beyond the width (measured at width
    64 with the scan kernel: 1,024 channels cost 3.0x, 2,048 5.7x). The parallel build starts the costliest member
    first."""
    per_token = _STEP_COST[arch]
    if arch == "rwkv":
        per_token *= 1 + (p.state_size("rwkv", p.d_model) / p.d_model - 1) / 6
    return tokens_per_member(p, arch) * per_token


def _parallel_build(root: Path, p: ZooPreset, members: list, build_fp: str, workers: int):
    """Train ``members`` in up to ``workers`` fresh interpreters at once; yield each ``zoo_model.json`` record."""
    import subprocess
    import time

    threads = max(1, (os.cpu_count() or 1) // workers)
    spec_dir = ensure_writable_dir(root / ".work")
    env = dict(os.environ, UNIVERSALITY_QUIET="1")
    # costliest first, so that the workers finish together
    queue, running = sorted(members, key=lambda m: -member_cost(p, m.arch)), {}
    bar = progress(total=len(members), desc=f"zoo {p.name}", unit="model")
    try:
        while queue or running:
            while queue and len(running) < workers:
                m = queue.pop(0)
                spec = spec_dir / f"{m.name}.spec.json"
                atomic_write_json(spec, {"root": str(root), "preset": p.as_dict(), "member": m.name,
                                         "build_fp": build_fp, "threads": threads})
                log = open(spec_dir / f"{m.name}.log", "wb")
                running[m.name] = (subprocess.Popen([sys.executable, "-m", "universality.zoo._worker", str(spec)],
                                                    stdout=log, stderr=subprocess.STDOUT, env=env), log)
            time.sleep(0.5)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                if proc.returncode != 0:
                    tail = (spec_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"training zoo member '{name}' failed (exit {proc.returncode}):\n{tail}")
                bar.update(1)
                yield json.loads((root / name / "zoo_model.json").read_text())
    finally:
        for proc, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
        bar.close()


def _build_member(root: str, p: ZooPreset, m, build_fp: str, corpus: Corpus | None, threads: int | None,
                  tokenizer=None) -> dict:
    """Train (if asked), evaluate and save one member; returns its ``zoo_model.json`` record. Runs in a worker too."""
    from transformers import AutoTokenizer

    from ..hosts.registry import host_class

    if threads is not None:
        torch.set_num_threads(threads)
    folder = Path(root)
    corpus = corpus or default_corpus()
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder / "tokenizer")
    t0, c0 = clock(), cpu_seconds()
    data = _training_data(corpus, tokenizer, p)
    ids = special_ids(tokenizer)
    model = init_model(m.arch, p, len(tokenizer), ids.eos, ids.pad, m.seed)
    host = host_class(model.config.model_type)(model, tokenizer, name_or_path=m.name)
    losses: list[float] = []
    work = folder / ".work" / m.name
    if m.trained:
        losses = train_model(host, data, p, m.seed, work, tag=f"{build_fp}:{m.name}", desc=f"zoo {m.name}")
    ev = evaluate(host, data)
    info = {"name": m.name, "arch": m.arch, "seed": m.seed, "trained": m.trained, "build_fingerprint": build_fp,
            "n_params": int(sum(q.numel() for q in model.parameters())), "steps": total_steps(p, m.arch) if m.trained else 0,
            "copy_warmup_steps": copy_warmup_steps(p, m.arch) if m.trained else 0,
            "tokens_seen": tokens_per_member(p, m.arch) if m.trained else 0, **ev.as_dict(),
            "precision": training_precision(p, m.arch) if m.trained else None,
            "final_train_loss": losses[-1] if losses else None, "threads": torch.get_num_threads(),
            "seconds": round(clock() - t0, 1), "cpu_seconds": round(cpu_seconds() - c0, 1)}
    _save_member(folder / m.name, model, tokenizer, info)
    shutil.rmtree(work, ignore_errors=True)
    return info


# ----- pieces --------------------------------------------------------------------------

def _is_built(folder: Path, build_fp: str) -> bool:
    f = folder / "zoo_model.json"
    if not f.is_file() or not (folder / "model.safetensors").is_file():
        return False
    try:
        return json.loads(f.read_text()).get("build_fingerprint") == build_fp
    except ValueError:
        return False


def _read_results(root: Path, build_fp: str) -> dict:
    f = root / "zoo.json"
    if f.is_file():
        try:
            r = json.loads(f.read_text())
            if r.get("build_fingerprint") == build_fp:
                return r
        except ValueError:
            pass
    return {"models": {}, "build_seconds": 0.0, "build_cpu_seconds": 0.0}


def _write_results(root: Path, results: dict, p: ZooPreset, corpus: Corpus, tokenizer, build_fp: str,
                   tok_seconds: float, seconds: float, cpu: float) -> None:
    results.update({
        "preset": p.as_dict(), "build_fingerprint": build_fp, "corpus": corpus.describe(),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "tokenizer_seconds": round(tok_seconds, 1),
        "python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
    })
    results["build_seconds"] = round(seconds, 1)
    results["build_cpu_seconds"] = round(cpu, 1)
    atomic_write_json(root / "zoo.json", results)


def _ensure_tokenizer(root: Path, corpus: Corpus, p: ZooPreset, build_fp: str):
    from transformers import AutoTokenizer

    folder = root / "tokenizer"
    stamp = folder / "zoo_tokenizer.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("build_fingerprint") == build_fp:
        return AutoTokenizer.from_pretrained(folder), 0.0
    t0 = clock()
    texts, n = [], 0
    for d in corpus.split("train"):  # name order: deterministic
        texts.append(d.text)
        n += len(d.text)
        if n >= p.tokenizer_chars:
            break
    tok = train_byte_bpe(texts, vocab_size=p.vocab_size)
    tmp = root / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / "zoo_tokenizer.json", {"build_fingerprint": build_fp, "fingerprint": tokenizer_fingerprint(tok)})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return AutoTokenizer.from_pretrained(folder), clock() - t0


_DATA_MEMO: dict[tuple, TrainData] = {}


def training_data(preset: str | ZooPreset, tokenizer, corpus: Corpus | None = None) -> TrainData:
    """The token material a build of ``preset`` trains and evaluates on: ``corpus`` (default: the stdlib corpus)
    tokenized with ``tokenizer`` (the build's own, ``zoo_dir(preset) / "tokenizer"``), held-out rows and the probe."""
    return _training_data(corpus or default_corpus(), tokenizer, get_preset(preset))


def _training_data(corpus: Corpus, tokenizer, p: ZooPreset) -> TrainData:
    key = (corpus.fingerprint, tokenizer_fingerprint(tokenizer), fingerprint(p.as_dict()))
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()
        _DATA_MEMO[key] = _make_training_data(corpus, tokenizer, p)
    return _DATA_MEMO[key]


def _make_training_data(corpus: Corpus, tokenizer, p: ZooPreset) -> TrainData:
    ids = special_ids(tokenizer)
    need = max(p.steps * p.batch_size * p.seq_len, 50 * p.seq_len)
    encoder = OffsetEncoder(tokenizer)
    pool: list[int] = []
    docs = shuffled_documents(corpus, "train", 0)
    for i in range(0, len(docs), 32):
        for ids_, _ in encoder.encode_batch([d.text for d in docs[i:i + 32]]):
            pool.extend(ids_)
            pool.append(ids.eos)
        if len(pool) >= need:
            break
    held = make_stream(corpus, tokenizer, StreamConfig(seq_len=p.seq_len, n_sequences=p.eval_sequences, split="heldout", seed=0))
    n_special = max(ids.eos, ids.pad) + 1
    gen = torch.Generator().manual_seed(1234)
    L = p.seq_len // 2
    rand = torch.randint(n_special, len(tokenizer), (p.eval_sequences, L), generator=gen)
    return TrainData(torch.tensor(pool, dtype=torch.long), held.tokens, held.mask, torch.cat([rand, rand], dim=1),
                     len(tokenizer), n_special)


def _save_member(folder: Path, model, tokenizer, info: dict) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the zoo shows its own progress
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "zoo_model.json", info)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
