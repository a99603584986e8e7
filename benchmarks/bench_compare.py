"""``universality compare`` at reference width: peak memory and wall time, with each stage's share, as tokens grow.

Two random-init hosts built by hand from the published configs (no download): Pythia-160M (``gpt_neox``,
768 wide, 12 layers, rotary_pct 0.25, parallel residual) and Mamba-130M (``mamba``, 768 wide, 24 layers),
sharing one small byte-BPE tokenizer whose ids fit both vocabularies. The compare runs TopK dictionaries of
16,384 latents, k = 32, on a 3 × 3 layer grid (depths 0, 0.5, 1), without floor or bootstrap, in a child
process whose peak RSS is read from ``/proc/self/status`` (VmHWM) as it ends.

Goal (issue 13): peak RSS ≤ 4 GB at 200K tokens (dense codes would need about 13 GB per dictionary), time
linear in tokens and memory flat. The baseline of each figure is the same run at the smallest token count.
Standalone use (records every size)::

    python benchmarks/bench_compare.py --tokens 50000 100000 200000 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from common import Figure

N_LATENTS, K = 16384, 32
_CHILD = r"""
import json, sys, time
from universality.cli import main
from universality._memory import process_peak
t0 = time.perf_counter()
rc = main(sys.argv[2:])
wall = time.perf_counter() - t0
hwm = process_peak() // 1024
json.dump({"rc": rc, "wall_s": wall, "peak_rss_kib": hwm}, open(sys.argv[1], "w"))
"""


def build_hosts(folder: Path) -> tuple[Path, Path]:
    """Save random-init Pythia-160M- and Mamba-130M-sized checkpoints with one shared tokenizer under ``folder``."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, MambaConfig, MambaForCausalLM

    from universality.data import default_corpus
    from universality.data.bpe import train_byte_bpe

    pythia, mamba = folder / "pythia-160m-init", folder / "mamba-130m-init"
    if (pythia / "config.json").is_file() and (mamba / "config.json").is_file():
        return pythia, mamba
    tok = train_byte_bpe([d.text for d in default_corpus().documents][:400], vocab_size=4096)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0,
    )).save_pretrained(pythia)
    MambaForCausalLM(MambaConfig(
        vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
        bos_token_id=0, eos_token_id=0,
    )).save_pretrained(mamba)
    for p in (pythia, mamba):
        tok.save_pretrained(p)
    return pythia, mamba


def compare_once(pythia: Path, mamba: Path, n_tokens: int, out: Path, epochs: int = 1) -> dict:
    """Run ``universality compare`` in a child process: wall seconds, peak RSS (GiB) and seconds per stage kind."""
    cfg = out.parent / f"compare-{n_tokens}.toml"
    cfg.write_text(f"n_tokens = {n_tokens}\nn_latents = {N_LATENTS}\nk = {K}\nlayers = [0.0, 0.5, 1.0]\n"
                   f"sae_epochs = {epochs}\nn_boot = 0\nfloor = false\nsae_seed_skyline = false\ntop_matches = 3\n")
    stats = out.parent / f"child-{n_tokens}.json"
    argv = [sys.executable, "-c", _CHILD, str(stats), "compare", str(pythia), str(mamba), "--names", "pythia,mamba",
            "--config", str(cfg), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(argv, check=True, env=env)
    child = json.loads(stats.read_text())
    if child["rc"] != 0:
        raise RuntimeError(f"compare exited with {child['rc']}")
    shares: dict[str, float] = defaultdict(float)
    peaks: dict[str, float] = defaultdict(float)
    for name, t in json.loads((out / "results.json").read_text()).get("timings", {}).items():
        shares[name.split("-")[0]] += float(t["seconds"])
        peaks[name.split("-")[0]] = max(peaks[name.split("-")[0]], float(t.get("peak_rss_mib", 0.0)) / 1024)
    return {"tokens": n_tokens, "wall_s": child["wall_s"], "peak_rss_gib": child["peak_rss_kib"] / 2**20,
            "stages_s": dict(shares), "stage_peak_rss_gib": dict(peaks)}


def measure(sizes: list[int], root: Path) -> list[dict]:
    """One fresh compare per token count (models built once, not timed)."""
    pythia, mamba = build_hosts(root / "models")
    return [compare_once(pythia, mamba, n, root / f"run-{n}") for n in sizes]


def run(quick: bool) -> list[Figure]:
    """Peak RSS and wall time at the largest size against the smallest (quick: 2K and 4K tokens)."""
    sizes = [2048, 4096] if quick else [50_000, 200_000]
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(sizes, Path(tmp))
    lo, hi = rows[0], rows[-1]
    return [Figure(f"compare peak RSS at {hi['tokens']} tokens (GiB)", hi["peak_rss_gib"], "GiB",
                   f"same at {lo['tokens']} tokens", lo["peak_rss_gib"], higher_is_better=False, goal_value=4.0),
            Figure(f"compare wall time at {hi['tokens']} tokens (s)", hi["wall_s"], "s",
                   f"same at {lo['tokens']} tokens", lo["wall_s"], higher_is_better=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[50_000, 100_000])
    ap.add_argument("--root", default=None, help="work folder (kept; models are reused from it)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench-compare-"))
    pythia, mamba = build_hosts(root / "models")
    rows = []
    for n in args.tokens:
        r = compare_once(pythia, mamba, n, root / f"run-{n}")
        rows.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
