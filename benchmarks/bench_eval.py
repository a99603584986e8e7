"""``sae.evaluate`` on a host: SAEBench's core metrics for a 4,096-latent TopK dictionary on a zoo transformer.

Issue 19: the evaluation runs on CPU for small models. The figure is evaluated tokens per second
(reconstruction statistics, density, CE loss score and KL, which need a clean, a spliced and an
ablated forward pass per batch). The baseline, in the same process, is those three forward passes
alone (clean pass with the hook recorded, dictionary spliced in, hook zero-ablated) with no metric:
the ratio says what the metrics add on top of the unavoidable model work. A second figure times
sparse probing (four code-token classes, probes on all features and the top 1..50) on the same tokens.
"""

from __future__ import annotations

import time

import torch

from common import Figure


def _setup(quick: bool):
    from universality import load_host, sae, zoo
    from universality.data import load_corpus
    from universality.sae.code_labels import labelled_windows

    path = zoo.ensure_zoo("test", only=["transformer"])["transformer"]
    host = load_host(str(path), device="cpu")
    hook = host.hook_name(host.n_layers - 1, "resid_post")
    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=host.d_model, n_latents=4096, k=32, hook=hook, seed=0))
    n_windows = 64 if quick else 512
    texts = [d.text for d in load_corpus("default").split("heldout")]
    lt = labelled_windows(texts, host.tokenizer, host.max_positions or 128, n_windows)
    return host, coder, lt


def run(quick: bool) -> list[Figure]:
    from universality import sae

    host, coder, lt = _setup(quick)
    tokens, hook, bs = lt.tokens, coder.cfg.hook, 32
    n_tok = tokens.numel()
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(0, tokens.shape[0], bs):
            tb = tokens[i:i + bs]
            host.run_with_cache(tb, names=[hook])
            host.run_with_hooks(tb, {hook: lambda t: coder(t)})
            host.run_with_hooks(tb, {hook: torch.zeros_like})
        passes = time.perf_counter() - t0
    t0 = time.perf_counter()
    sae.evaluate_host(coder, host, tokens, batch_size=bs)
    core = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = sae.evaluate_host(coder, host, tokens, batch_size=bs, labels=lt.labels, classes=lt.classes)
    with_probing = time.perf_counter() - t0
    print(f"  {n_tok} tokens, d_model={host.d_model}, 4096 latents: core {core:.2f} s, with probing {with_probing:.2f} s, "
          f"3 forward passes alone {passes:.2f} s; {len(ev.probing)} probing tasks")
    return [
        Figure(name=f"eval core metrics, 4096-latent TopK on the test-zoo transformer ({n_tok} tokens/s)", value=n_tok / core,
               unit="tokens/s", baseline="the 3 forward passes alone (clean, spliced, ablated)", baseline_value=n_tok / passes),
        Figure(name=f"eval with sparse probing ({n_tok} tokens/s)", value=n_tok / with_probing, unit="tokens/s",
               baseline="core metrics alone", baseline_value=n_tok / core),
    ]
