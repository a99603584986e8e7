"""Mamba-1 host speed on CPU against transformers' own ``MambaForCausalLM`` (same weights, same process).

Config (issue 2): d_model 256, 4 layers, vocab 4096, state 16, expand 2, batch 16 x 256 tokens,
2 threads (set by ``benchmarks/run.py``). Figures:

* forward tokens/s, ours vs HF forward on the same batch (goal: ratio >= 3);
* forward+backward tokens/s with gradients to every weight (loss = mean logit), ours on
  16 x 256 (goal: >= 5,000 tokens/s). HF's forward+backward runs a Python loop per position
  (~55 tokens/s), so it is timed once on 1 x 256 and reported as tokens/s; the figure's
  name says so. Its cost per token does not shrink with a larger batch.
* (informational) forward+backward to the activations only, weights frozen, as attribution
  methods use it (gradient of the mean logit w.r.t. the embeddings); HF timed on 1 x 64.

HF is timed with fewer repeats than ours (it is ~10-50x slower); every HF number is the best
of the runs made. ``--quick`` shrinks everything for a smoke run.
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
    cfg = MambaConfig(vocab_size=512 if quick else 4096, hidden_size=64 if quick else 256, state_size=16,
                      num_hidden_layers=2 if quick else 4, expand=2, conv_kernel=4)
    MambaForCausalLM(cfg).save_pretrained(tmp)
    return uv.load_host(tmp, device="cpu")


def _train_step(forward, model, tokens):
    model.zero_grad(set_to_none=True)
    forward(tokens).float().mean().backward()


def _set_requires_grad(model, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def run(quick: bool) -> list[Figure]:
    from universality.hosts.ssm.scan import resolve_backend

    batch, seq = (4, 64) if quick else (16, 256)
    hf_seq_attr = 32 if quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        host = _build(tmp, quick)
        model = host.model
        used = resolve_backend(host.scan_backend, host.device, host.dtype)
        tokens = torch.randint(0, host.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
        one = tokens[:1]

        def hf_logits(t):
            return model(t, use_cache=False).logits

        with torch.no_grad():
            ours_fwd = best_time(lambda: host(tokens), repeat=3)
            hf_fwd = best_time(lambda: hf_logits(tokens), repeat=1, warmup=1)
        ours_fb = best_time(lambda: _train_step(host, model, tokens), repeat=3)
        hf_fb = best_time(lambda: _train_step(hf_logits, model, one), repeat=1, warmup=0)

        # attribution-style backward: weights frozen, gradient w.r.t. the embeddings only
        _set_requires_grad(model, False)
        try:
            def ours_attr():
                emb = {}

                def keep(x):
                    x = x.detach().requires_grad_()
                    emb["x"] = x
                    return x

                logits = host.run_with_hooks(tokens, {"embed": keep})
                torch.autograd.grad(logits.mean(), emb["x"])

            def hf_attr():
                e = model.get_input_embeddings()(one[:, :hf_seq_attr]).detach().requires_grad_()
                torch.autograd.grad(model(inputs_embeds=e, use_cache=False).logits.mean(), e)

            ours_at = best_time(ours_attr, repeat=3)
            hf_at = best_time(hf_attr, repeat=1, warmup=0)
        finally:
            _set_requires_grad(model, True)

    n = batch * seq
    return [
        Figure(f"mamba forward tokens/s (b{batch}x{seq}, scan={used})", n / ours_fwd, "tokens/s",
               "transformers MambaForCausalLM forward", n / hf_fwd, goal_ratio=3.0),
        Figure(f"mamba forward+backward tokens/s, weight grads (b{batch}x{seq}, scan={used}; HF timed at b1x{seq})",
               n / ours_fb, "tokens/s", "transformers MambaForCausalLM forward+backward", seq / hf_fb,
               goal_value=None if quick else 5000.0),
        Figure(f"mamba forward+backward tokens/s, activation grads only (b{batch}x{seq}; HF timed at b1x{hf_seq_attr})",
               n / ours_at, "tokens/s", "transformers MambaForCausalLM forward+backward (frozen weights)",
               hf_seq_attr / hf_at),
    ]


if __name__ == "__main__":
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    for fig in run(quick=False):
        print(fig.line(), flush=True)
    print(f"({time.perf_counter() - t0:.1f} s)")
