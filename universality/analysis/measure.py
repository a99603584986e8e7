"""Timings and side-by-side write-lag profiles for the analyses docs.

``python -m universality.analysis.measure`` builds untrained models at the
default zoo sizes (Transformer, Mamba, Mamba-2, RWKV; nothing is downloaded),
or loads the checkpoint folders given with ``--model``, and prints a Markdown
report: wall time of :func:`induction` and :func:`write_lag_all` with their
default settings, the speed-up of stacking patching sites in one batch over one
site per forward pass (same process, same sites), and every layer's write-lag
profile.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from .._timing import best_time
from .induction import InductionConfig, induction, induction_sites
from .patching import patch_sites
from .tasks import induction_prompts
from .write_lag import write_lag_all


def _zoo_sized_hosts(folder: Path, archs: list[str]) -> dict:
    """Untrained models at the default zoo preset's sizes, saved and loaded as hosts."""
    import universality as uv
    from universality.zoo.models import init_model
    from universality.zoo.presets import get_preset

    preset = get_preset("default")
    hosts = {}
    for arch in archs:
        model = init_model(arch, preset, preset.vocab_size, eos_id=0, pad_id=1, seed=0)
        path = folder / arch
        model.save_pretrained(path)
        hosts[f"{arch} (untrained)"] = uv.load_host(path, device="cpu")
    return hosts


def _batching_ratio(host, repeat: int) -> tuple[float, float, int]:
    """Seconds for the induction patching sweep with stacked sites vs one site per pass, and the site count."""
    cfg = InductionConfig()
    prompts = induction_prompts(cfg.n_prompts, cfg.seq_len, cfg.s, host.vocab_size, torch.Generator().manual_seed(0))
    sites = induction_sites(host, cfg)
    args = (host, prompts.clean, prompts.corrupted, prompts.targets, sites, cfg.metric)
    stacked = best_time(lambda: patch_sites(*args, max_rows=256), repeat, warmup=0)
    single = best_time(lambda: patch_sites(*args, max_rows=cfg.n_prompts), repeat, warmup=0)
    return stacked, single, len(sites)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: print the Markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="checkpoint folder (repeatable); default: zoo-sized untrained models")
    ap.add_argument("--archs", default="gpt_neox,mamba,mamba2,rwkv", help="architectures of the untrained zoo-sized models")
    ap.add_argument("--repeat", type=int, default=2, help="timing repeats (best is reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import universality as uv

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            hosts = {str(p): uv.load_host(p, device="cpu") for p in args.model}
        else:
            hosts = _zoo_sized_hosts(Path(tmp), args.archs.split(","))
        print("| model | layers | induction() s | write_lag_all() s | patching stacked s | one site/pass s | speed-up |")
        print("|---|---|---|---|---|---|---|")
        tables = {}
        for name, host in hosts.items():
            t_ind = best_time(lambda: induction(host), 1, warmup=0)
            t0 = time.perf_counter()
            tables[name] = write_lag_all(host, name=name)
            t_wl = time.perf_counter() - t0
            stacked, single, n_sites = _batching_ratio(host, args.repeat)
            print(f"| {name} | {host.n_layers} | {t_ind:.2f} | {t_wl:.2f} | {stacked:.2f} ({n_sites} sites) | "
                  f"{single:.2f} | {single / stacked:.1f}x |")
        print()
        print("| model | layer | effect δ=0..3 | peak | behavioural δ=0..3 | behavioural peak |")
        print("|---|---|---|---|---|---|")
        for name, table in tables.items():
            for p in table.profiles:
                eff = " ".join(f"{v:.2f}" for v in p.effect.tolist())
                beh = " ".join(f"{v:.2f}" for v in p.behavioural_effect.tolist())
                print(f"| {name} | {p.layer} | {eff} | {p.peak} | {beh} | {p.behavioural_peak} |")


if __name__ == "__main__":
    main()
