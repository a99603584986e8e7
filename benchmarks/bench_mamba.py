"""Mamba-1 host speed on CPU against transformers' own ``MambaForCausalLM`` (same weights, same process).

Config (issue 2): d_model 256, 4 layers, vocab 4096, state 16, expand 2, batch 16 x 256 tokens,
2 threads (set by ``benchmarks/run.py``). Figures:

* forward tokens/s, ours vs HF forward on the same batch (goal: ratio >= 3);
* forward+backward tokens/s with gradients to every weight (loss = mean logit), ours on
  16 x 256 (goal: >= 5,000 tokens/s). HF's forward+backward runs a Python loop per position
  (~55 tokens/s), so it is timed once on the same batch of 16 but only the first 32 positions
  and reported as tokens/s (its cost per position is the same at every position); the
  figure's name says so.
* the same forward+backward inside ``retained_heap()`` (glibc keeps freed buffers in the heap
  instead of unmapping them: the 64 MiB gradient of the logits and the re-grown heap otherwise
  cost ~20,000-55,000 page faults per step; the logits themselves are written into huge pages
  by the host either way); measured after the default-allocator runs, against the same HF figure.
* the same forward+backward counted in CPU time: tokens / (process CPU seconds / threads).
  On a machine shared with other jobs wall-clock throughput drops with the load while CPU
  time mostly does not, so this is the estimate of the idle-machine figure (informational).
* (informational) forward+backward to the activations only, weights frozen, as attribution
  methods use it (gradient of the mean logit w.r.t. the embeddings); HF on 16 x 32.

HF is timed with fewer repeats than ours (it is ~10-50x slower); every number is the best
of the runs made. ``--quick`` shrinks everything for a smoke run.

The run first prints :func:`universality.precision.cpu_description` (the CPU and what torch
dispatches to) and the instruction set the C kernels were built for (``UNIVERSALITY_KERNEL_ISA``;
unset, it follows ``ATEN_CPU_CAPABILITY``), and each figure's name carries that ISA. An AVX2-only
CPU is reproduced on an AVX-512 one with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``.
"""

from __future__ import annotations

import tempfile
import time

import torch

from common import Figure, best_time


def _best_wall_and_cpu(fn, repeat: int, warmup: int) -> tuple[float, float]:
    """Best wall-clock seconds of ``fn()`` and the process CPU seconds of that same run."""
    for _ in range(warmup):
        fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


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
    from universality.hosts.ssm._ckernel import kernel_isa
    from universality.hosts.ssm.heap import retained_heap
    from universality.hosts.ssm.scan import resolve_backend
    from universality.precision import cpu_description

    isa = kernel_isa()
    print(f"cpu: {cpu_description()}; mamba C kernels built for: {isa}", flush=True)

    batch, seq = (4, 64) if quick else (16, 256)
    hf_seq = 16 if quick else 32  # HF backward: positions timed (same batch)
    with tempfile.TemporaryDirectory() as tmp:
        host = _build(tmp, quick)
        model = host.model
        used = resolve_backend(host.scan_backend, host.device, host.dtype)
        used = f"{used}/{isa}" if used == "c" else used
        tokens = torch.randint(0, host.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
        short = tokens[:, :hf_seq]

        def hf_logits(t):
            return model(t, use_cache=False).logits

        with torch.no_grad():
            ours_fwd = best_time(lambda: host(tokens), repeat=3)
            hf_fwd = best_time(lambda: hf_logits(tokens), repeat=1, warmup=1)
        ours_fb, ours_fb_cpu = _best_wall_and_cpu(lambda: _train_step(host, model, tokens), repeat=3, warmup=1)
        hf_fb, hf_fb_cpu = _best_wall_and_cpu(lambda: _train_step(hf_logits, model, short), repeat=1, warmup=1)
        with retained_heap():
            ours_fb_heap, _ = _best_wall_and_cpu(lambda: _train_step(host, model, tokens), repeat=3, warmup=2)

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
                e = model.get_input_embeddings()(short).detach().requires_grad_()
                torch.autograd.grad(model(inputs_embeds=e, use_cache=False).logits.mean(), e)

            ours_at = best_time(ours_attr, repeat=3)
            hf_at = best_time(hf_attr, repeat=1, warmup=1)
        finally:
            _set_requires_grad(model, True)

    n, n_short = batch * seq, batch * hf_seq
    threads = torch.get_num_threads()
    return [
        Figure(f"mamba forward tokens/s (b{batch}x{seq}, scan={used})", n / ours_fwd, "tokens/s",
               "transformers MambaForCausalLM forward", n / hf_fwd, goal_ratio=3.0),
        Figure(f"mamba forward+backward tokens/s, weight grads (b{batch}x{seq}, scan={used}; HF timed at b{batch}x{hf_seq})",
               n / ours_fb, "tokens/s", "transformers MambaForCausalLM forward+backward", n_short / hf_fb,
               goal_value=None if quick else 5000.0),
        Figure(f"mamba forward+backward tokens/s inside retained_heap() (b{batch}x{seq}; HF as above)",
               n / ours_fb_heap, "tokens/s", "transformers MambaForCausalLM forward+backward", n_short / hf_fb),
        Figure(f"mamba forward+backward tokens per CPU-second x {threads} threads (idle-machine estimate, same runs)",
               n / (ours_fb_cpu / threads), "tokens/s", "transformers MambaForCausalLM forward+backward",
               n_short / (hf_fb_cpu / threads)),
        Figure(f"mamba forward+backward tokens/s, activation grads only (b{batch}x{seq}; HF timed at b{batch}x{hf_seq})",
               n / ours_at, "tokens/s", "transformers MambaForCausalLM forward+backward (frozen weights)",
               n_short / hf_at),
    ]


if __name__ == "__main__":
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    for fig in run(quick=False):
        print(fig.line(), flush=True)
    print(f"({time.perf_counter() - t0:.1f} s)")
