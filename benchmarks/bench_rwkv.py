"""RWKV-4 host speed against transformers' own RwkvForCausalLM on the same weights (same process).

Model: d=256, 4 layers, vocab 4096, batch 16 x 256 tokens (``--quick``: batch 4 x 64).
Figures: forward tokens/s and forward+backward tokens/s (cross-entropy on the
logits, gradients into every weight), plus the WKV kernel alone, forward+backward.
"""

from __future__ import annotations

import tempfile

import torch

from common import Figure, best_time

FULL = dict(d=256, layers=4, vocab=4096, batch=16, seq=256)
QUICK = dict(d=256, layers=4, vocab=4096, batch=4, seq=64)


def _build(size: dict, folder: str):
    import transformers as tf

    import universality as uv

    cfg = tf.RwkvConfig(vocab_size=size["vocab"], hidden_size=size["d"], attention_hidden_size=size["d"],
                        intermediate_size=4 * size["d"], num_hidden_layers=size["layers"], context_length=1024,
                        rescale_every=6, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    tf.RwkvForCausalLM(cfg).save_pretrained(folder)
    host = uv.load_host(folder, device="cpu")
    return host, host.model  # the same module: identical weights for both paths


def _loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def run(quick: bool) -> list[Figure]:
    size = QUICK if quick else FULL
    n_tokens = size["batch"] * size["seq"]
    shape = f"d={size['d']} L={size['layers']} V={size['vocab']} {size['batch']}x{size['seq']}"
    tokens = torch.randint(0, size["vocab"], (size["batch"], size["seq"]), generator=torch.Generator().manual_seed(0))
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        host, model = _build(size, folder)
        with torch.no_grad():
            hf_logits = model(tokens, use_cache=False).logits
            ours = host(tokens)
        assert torch.allclose(ours, hf_logits, atol=1e-4), "parity lost: no timing"

        def ours_forward():
            with torch.no_grad():
                host(tokens)

        def hf_forward():
            with torch.no_grad():
                model(tokens, use_cache=False)

        t_ours = best_time(ours_forward, repeat=3)
        t_hf = best_time(hf_forward, repeat=3)
        figures.append(Figure(f"rwkv forward tokens/s ({shape})", n_tokens / t_ours, "tok/s",
                              "transformers RwkvForCausalLM forward", n_tokens / t_hf))

        def ours_train_step():
            model.zero_grad(set_to_none=True)
            _loss(host(tokens), tokens).backward()

        def hf_train_step():
            model.zero_grad(set_to_none=True)
            _loss(model(tokens, use_cache=False).logits, tokens).backward()

        t_ours = best_time(ours_train_step, repeat=3)
        # transformers' step loop is slow under autograd: one timed run after one warm-up in quick, one in full
        t_hf = best_time(hf_train_step, repeat=1, warmup=1 if quick else 0)
        figures.append(Figure(f"rwkv forward+backward tokens/s ({shape})", n_tokens / t_ours, "tok/s",
                              "transformers RwkvForCausalLM forward+backward", n_tokens / t_hf))
        figures.append(_kernel_figure(size))
    figures.append(_prefix_sum_figure())
    return figures


def _kernel_figure(size: dict) -> Figure:
    from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

    from universality.hosts.wkv import wkv

    g = torch.Generator().manual_seed(1)
    b, t, c = size["batch"], size["seq"], size["d"]
    inputs = [torch.randn(b, t, c, generator=g), torch.randn(b, t, c, generator=g),
              torch.randn(c, generator=g), torch.randn(c, generator=g)]
    leaves = [x.requires_grad_() for x in inputs]
    k, v, td, tf = leaves

    def ours():
        wkv(k, v, td, tf).sum().backward()

    def hf():
        rwkv_linear_attention_cpu(td, tf, k, v)[0].sum().backward()

    t_ours = best_time(ours, repeat=3)
    t_hf = best_time(hf, repeat=1, warmup=0)
    return Figure(f"WKV kernel forward+backward tokens/s (C={c}, {b}x{t})", b * t / t_ours, "tok/s",
                  "transformers rwkv_linear_attention_cpu", b * t / t_hf)


def _prefix_sum_figure() -> Figure:
    """``wkv`` (prefix sums where the channels allow) against the log-scaled scan alone, at the circuits zoo's RWKV
    shape: 16 x 64 tokens, 1,536 channels, the recall prior's decays (time_decay -7..-3), keys of std 2."""
    from universality.hosts.wkv import cumulative_channels, scan_wkv, wkv
    from universality.zoo.models import RECALL_DECAY_RANGE

    g = torch.Generator().manual_seed(2)
    b, t, c = 16, 64, 1536
    k = (2 * torch.randn(b, t, c, generator=g)).requires_grad_()
    v = torch.randn(b, t, c, generator=g).requires_grad_()
    td = torch.linspace(*RECALL_DECAY_RANGE, c).requires_grad_()
    tf = torch.full((c,), -2.0).requires_grad_()
    assert bool(cumulative_channels(k, td, tf).all()), "the prefix-sum path does not apply: no timing"
    assert torch.allclose(wkv(k, v, td, tf), scan_wkv(k, v, td, tf), atol=1e-5), "paths disagree: no timing"
    t_fast = best_time(lambda: wkv(k, v, td, tf).sum().backward(), repeat=5)
    t_scan = best_time(lambda: scan_wkv(k, v, td, tf).sum().backward(), repeat=5)
    return Figure(f"WKV forward+backward tokens/s, prefix sums (C={c}, {b}x{t}, slow decays)", b * t / t_fast, "tok/s",
                  "log-scaled scan (scan_wkv)", b * t / t_scan)
