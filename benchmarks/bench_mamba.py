"""Mamba-1 host speed on CPU against transformers' own ``MambaForCausalLM`` (same weights, same process).

Config (issue 2): d_model 256, 4 layers, vocab 4096, state 16, expand 2, batch 16 x 256 tokens,
2 threads (set by ``benchmarks/run.py``). Figures:

* forward tokens/s, ours vs HF forward (goal: ratio >= 3);
* forward+backward tokens/s (loss = mean logit, gradients to every weight), ours vs HF
  (goal: ours >= 5,000 tokens/s). HF's forward+backward is so slow (~55 tokens/s) that it
  is timed on a smaller batch (2 x 256) and reported as tokens/s, which it does not depend on
  (its per-step loop costs grow linearly with the batch); the figure's name says so.

``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import tempfile
import time

import torch

from common import Figure, best_time


def _build(tmp: str, quick: bool):
    from transformers import MambaConfig, MambaForCausalLM

    import universality as uv

    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=4096 if not quick else 512, hidden_size=256 if not quick else 64, state_size=16,
                      num_hidden_layers=4 if not quick else 2, expand=2, conv_kernel=4)
    MambaForCausalLM(cfg).save_pretrained(tmp)
    host = uv.load_host(tmp, device="cpu")
    return host, host.model


def _fwd_bwd(fn, model, tokens):
    model.zero_grad(set_to_none=True)
    logits = fn(tokens)
    logits.float().mean().backward()


def run(quick: bool) -> list[Figure]:
    batch, seq = (16, 256) if not quick else (4, 64)
    hf_bwd_batch = 2 if not quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        host, model = _build(tmp, quick)
        tokens = torch.randint(0, host.vocab_size, (batch, seq))
        small = tokens[:hf_bwd_batch]

        def hf_forward(t):
            return model(t, use_cache=False).logits

        with torch.no_grad():
            ours_f = best_time(lambda: host(tokens), repeat=3)
            hf_f = best_time(lambda: hf_forward(tokens), repeat=2 if not quick else 3)
        ours_fb = best_time(lambda: _fwd_bwd(host, model, tokens), repeat=3)
        hf_fb = best_time(lambda: _fwd_bwd(hf_forward, model, small), repeat=1 if not quick else 2, warmup=1)

        n, n_small = batch * seq, hf_bwd_batch * seq
        backend = host.scan_backend
        from universality.hosts.ssm.scan import resolve_backend

        used = resolve_backend(backend, host.device, host.dtype)
        return [
            Figure(f"mamba forward tokens/s (b{batch}x{seq}, scan={used})", n / ours_f, "tokens/s",
                   "transformers MambaForCausalLM forward", n / hf_f, goal_ratio=3.0),
            Figure(f"mamba forward+backward tokens/s (b{batch}x{seq}, scan={used}; HF timed at b{hf_bwd_batch}x{seq})",
                   n / ours_fb, "tokens/s", "transformers MambaForCausalLM forward+backward", n_small / hf_fb,
                   goal_value=5000.0 if not quick else None),
        ]


if __name__ == "__main__":
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    for fig in run(quick=False):
        print(fig.line())
    print(f"({time.perf_counter() - t0:.1f} s)")
