"""Pieces shared by the pipeline commands: hosts, environment facts, activations and dictionaries as cached stages."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

import torch

from .. import _dist
from .._errors import UniversalityError
from .rundir import RunDir


def now() -> str:
    """Current UTC time, ISO 8601 with a Z."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def environment(device: torch.device) -> dict:
    """Versions and hardware recorded in results.json."""
    import numpy
    import transformers

    from .. import __version__, precision

    env = {"universality": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count() or 0, "device": str(device), "torch_threads": torch.get_num_threads(),
           "cpu": precision.cpu_model(), "cpu_capability": precision.cpu_capability(),
           "bf16": precision.bf16_pays(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def load_hosts(paths: dict[str, str], device: torch.device) -> dict[str, Any]:
    """Label → host for every checkpoint; a model that cannot be loaded is one clear error."""
    from ..hosts import load_host

    return {name: load_host(path, device=str(device)) for name, path in paths.items()}


def model_entry(name: str, host: Any, path: str, role: str, fingerprint: str | None = None) -> dict:
    """The results.json ``models`` entry of one host (``fingerprint``: its known host fingerprint, else hashed here)."""
    from ..activations import host_fingerprint

    return {"name": name, "arch": host.arch, "model_type": getattr(getattr(host.model, "config", None), "model_type", ""),
            "role": role, "n_layers": int(host.n_layers), "d_model": int(host.d_model),
            "n_params": int(sum(p.numel() for p in host.model.parameters())), "path": str(path),
            "fingerprint": fingerprint if fingerprint is not None else host_fingerprint(host)}


def cache_stage(run: RunDir, label: str, host: Any, hooks: list[str], stream: Any, host_fp: str):
    """Activations of ``hooks`` over ``stream`` in ``stages/acts-<label>`` (the store resumes by itself)."""
    from ..activations import ActivationStore, cache_activations

    folder = run.path / "stages" / f"acts-{label}"
    inputs = {"host": host_fp, "hooks": sorted(hooks), "stream": stream.fingerprint}

    def build():
        cache_activations(host, hooks, stream, folder, overwrite=True)
        return {"folder": folder.name}

    run.stage(f"acts-{label}", inputs, build, valid=lambda r: (folder / "manifest.json").is_file())
    return ActivationStore(folder)


def train_stage(run: RunDir, store: Any, hook: str, rows: torch.Tensor, *, tag: str, host_fp: str, kind: str,
                n_latents: int, k: int, seed: int, epochs: int, device: torch.device):
    """A dictionary on the counted rows ``rows`` of ``store``'s ``hook``, trained once and reloaded on rerun.

    Training streams shuffled batches from the store (a few shards in memory), ``epochs`` passes over the rows;
    the dictionary's metrics are measured on its last training batches.
    """
    from .. import sae

    name = f"sae-{tag}"
    folder = run.path / "stages" / name
    inputs = {"source": "store-batches", "host": host_fp, "hook": hook, "rows": int(rows.numel()), "stream": store.stream.fingerprint, "kind": kind,
              "n_latents": n_latents, "k": k, "seed": seed, "epochs": epochs}

    n_rows = int(rows.numel())
    if n_rows != int(store.mask.sum()):
        raise UniversalityError(f"dictionaries train on the {int(store.mask.sum())} counted rows of the store, not on {n_rows} chosen rows")

    # under torchrun every process reads the same global batches and trains on its 1/world share of each
    # (the trainer averages gradients): the batch and the run's total rows are cut to multiples of the world size
    world = _dist.world()
    batch = min(1024, n_rows) // world * world
    total = epochs * n_rows // world * world
    if batch == 0:
        raise UniversalityError(f"{n_rows} counted rows cannot be shared by {world} processes; use more tokens or fewer processes")

    def batches():  # the store's bounded-memory reader, reshuffled each epoch, stopped after ``total`` rows
        left = total
        for epoch in range(epochs):
            for b in store.batches(batch, hook=hook, shuffle=True, seed=seed * 1_000_003 + epoch, masked=True):
                b = b[:left]
                if not b.shape[0]:
                    return
                left -= b.shape[0]
                yield b

    def build():
        coder = sae.fit(batches, kind=kind, n_latents=n_latents, k=k, seed=seed, n_tokens=total,
                        batch_size=batch, device=str(device), hook=hook)
        if _dist.is_main():  # one writer; the others load rank 0's files, so every process encodes with the same weights
            coder.save(folder)
        _dist.barrier()
        metrics = getattr(coder, "metrics", None)
        out = {"folder": name}
        if metrics is not None and hasattr(metrics, "_asdict"):
            out["metrics"] = {k2: float(v) for k2, v in metrics._asdict().items() if isinstance(v, (int, float))}
        elif isinstance(metrics, dict):
            out["metrics"] = {k2: float(v) for k2, v in metrics.items() if isinstance(v, (int, float))}
        return out

    run.stage(name, inputs, build, valid=lambda r: folder.is_dir() and any(folder.iterdir()))
    return sae.load(folder)


def load_corpus_checked(source: str):
    """The corpus named by ``source`` (``default`` = stdlib source) via :func:`universality.data.load_corpus`."""
    from ..data import load_corpus

    if source != "default" and not Path(source).exists() and os.sep in source:
        raise UniversalityError(f"corpus '{source}' does not exist; give a text file, a folder, a JSONL file or 'default'")
    return load_corpus(source)
