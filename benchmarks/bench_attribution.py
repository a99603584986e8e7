"""Attribution graphs: wall time and peak memory of one graph, and how both grow with the prompt.

The host is the default zoo's Transformer when it is built (``--model`` names any checkpoint folder),
else a random-init stand-in with the default preset's shape (GPT-NeoX, 4 blocks, 192 wide, 6 heads,
2,048 tokens of vocabulary); the dictionaries are random TopK skip transcoders with 512 latents and
k = 16 (TopK fixes how many features are active, 16 per block and position, so the cost does not depend
on training). Each graph is made in a child process whose peak RSS is its own VmHWM.

Goal (issue 16): a 64-token graph on a 4-layer zoo model in ≤ 60 s and ≤ 2 GB on 2 cores; memory no
worse than linear in the number of active features (fixed ``max_feature_nodes``: rows are
``max_feature_nodes × n_sources``; the forward holds ``batch_size`` replicas). Standalone::

    python benchmarks/bench_attribution.py [--model DIR] [--lengths 64 128 256 512] [--max-nodes 2048] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure

N_LATENTS, K = 512, 16
_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[5])
from bench_attribution import random_transcoders
import universality as uv
from universality.analysis.attribution import attribution_graph
host = uv.load_host(sys.argv[2], device="cpu")
t = int(sys.argv[3]); limit = int(sys.argv[4]) or None
coders = random_transcoders(host)
prompt = torch.randint(3, host.vocab_size, (t,), generator=torch.Generator().manual_seed(0))
t0, c0 = time.perf_counter(), time.process_time()
g = attribution_graph(host, prompt, coders, max_feature_nodes=limit)
kept = g.prune()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
from universality._memory import process_peak
hwm = process_peak() // 1024
json.dump({"wall_s": wall, "cpu_s": cpu, "threads": torch.get_num_threads(), "peak_rss_kib": hwm, "tokens": t, "batch": g.settings["batch_size"],
           "feature_nodes": g.n_features, "kept_edges": int(kept.edge_mask.sum())}, open(sys.argv[1], "w"))
"""


def default_model(folder: Path) -> Path:
    """The default zoo's Transformer if built, else a random-init stand-in of the same shape saved under ``folder``."""
    from universality.zoo.presets import PRESETS

    home = Path(os.environ.get("UNIVERSALITY_HOME", Path.home() / ".cache" / "universality"))
    built = home / "zoo" / "default" / "transformer"
    if (built / "config.json").is_file():
        return built
    path = folder / "default-shape-transformer"
    if not (path / "config.json").is_file():
        import torch
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        p = PRESETS["default"]
        torch.manual_seed(0)
        GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=p.vocab_size, hidden_size=p.d_model, num_hidden_layers=p.n_layers, num_attention_heads=p.n_heads,
            intermediate_size=4 * p.d_model, rotary_pct=0.25, max_position_embeddings=1024, bos_token_id=0, eos_token_id=0,
        )).save_pretrained(path)
    return path


def random_transcoders(host) -> list:
    """Random TopK skip transcoders ``mlp_in -> mlp_out``, one per block (k = 16 of 512 latents active)."""
    import torch

    from universality import sae
    from universality.analysis.attribution import settled_fingerprint

    gen = torch.Generator().manual_seed(0)
    fp, d = settled_fingerprint(host), host.d_model
    out = []
    for i in range(host.n_layers):
        cfg = sae.CoderConfig(kind="topk", k=K, d_in=d, n_latents=N_LATENTS, d_out=d, transcoder=True, skip=True,
                              hook=f"blocks.{i}.mlp_in", target_hook=f"blocks.{i}.mlp_out", host=fp)
        coder = sae.build_coder(cfg)
        with torch.no_grad():
            coder.W_enc.copy_(torch.randn(N_LATENTS, d, generator=gen) / d ** 0.5)
            coder.W_dec.copy_(torch.randn(N_LATENTS, d, generator=gen) / d ** 0.5)
            coder.W_skip.copy_(0.1 * torch.randn(d, d, generator=gen) / d ** 0.5)
        out.append(coder.eval())
    return out


def measure(model: Path, tokens: int, max_nodes: int = 0) -> dict:
    """One graph in a child process: wall seconds, peak RSS (KiB), active features, feature nodes, kept edges."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.json"
        env = {**os.environ, "UNIVERSALITY_QUIET": "1"}
        subprocess.run([sys.executable, "-c", _CHILD, str(out), str(model), str(tokens), str(max_nodes),
                        str(Path(__file__).resolve().parent)], check=True, env=env)
        return json.loads(out.read_text())


def run(quick: bool = False) -> list[Figure]:
    """The 64-token graph against the issue's absolute goals (60 s, 2 GB)."""
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(default_model(Path(tmp)), 32 if quick else 64)
    return [Figure(f"attribution graph, {m['tokens']} tokens, {m['feature_nodes']} features, wall", m["wall_s"], "s",
                   "goal", 60.0, higher_is_better=False, goal_value=60.0),
            Figure(f"attribution graph, {m['tokens']} tokens, peak RSS", m["peak_rss_kib"] / 1024 ** 2, "GiB",
                   "goal", 2.0, higher_is_better=False, goal_value=2.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: the default zoo's Transformer or a stand-in)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64])
    ap.add_argument("--max-nodes", type=int, default=0, help="max_feature_nodes (0: every active feature)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else default_model(Path(tmp))
        rows = []
        for t in args.lengths:
            m = measure(model, t, args.max_nodes)
            rows.append(m)
            print(json.dumps(m), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
