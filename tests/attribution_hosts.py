"""Tiny random hosts and random dictionaries for the attribution tests (built from configs, never downloaded)."""

from __future__ import annotations

import torch
import transformers as tf

from conftest import tiny_transformer
from universality import sae
from universality.analysis.attribution import SITES, settled_fingerprint

ARCHS = ("gpt2", "gpt_neox", "llama", "mamba", "mamba2", "rwkv")


def tiny_model(arch: str):
    """A small random-init HF causal LM of ``arch`` with non-trivial norms, biases, decays and mixes."""
    if arch in ("gpt2", "gpt_neox", "llama"):
        return tiny_transformer(arch, num_hidden_layers=2) if arch != "gpt2" else tiny_transformer(arch, n_layer=2)
    torch.manual_seed(5)
    if arch == "mamba":
        cfg = tf.MambaConfig(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tf.MambaForCausalLM(cfg)
    elif arch == "mamba2":
        cfg = tf.Mamba2Config(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                              num_heads=4, head_dim=16, n_groups=2, chunk_size=8, bos_token_id=0, eos_token_id=0,
                              pad_token_id=0)
        model = tf.Mamba2ForCausalLM(cfg)
    else:
        cfg = tf.RwkvConfig(vocab_size=97, hidden_size=24, attention_hidden_size=24, intermediate_size=48,
                            num_hidden_layers=2, rescale_every=1, context_length=64, bos_token_id=0, eos_token_id=0)
        model = tf.RwkvForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_mix" in name:
                p.uniform_(0.0, 1.0)
            elif "time_decay" in name or "time_first" in name:
                p.copy_(torch.randn_like(p))
            elif "embed" in name:
                p.copy_(torch.randn_like(p))
            elif "norm" in name or "ln" in name or "bias" in name or name.endswith(".D"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def random_dictionaries(host, n_latents: int = 48, seed: int = 0, kind: str = "relu") -> list:
    """One random dictionary per block at the host's site, sparse on the host's own activations."""
    site = SITES[host.arch]
    gen = torch.Generator().manual_seed(seed)
    out = []
    d = host.d_model
    transcoder = site.input_point != site.output_point
    probe = torch.randint(0, host.vocab_size, (2, 16), generator=gen)
    _, cache = host.run_with_cache(probe, [f"blocks.{i}.{site.input_point}" for i in range(host.n_layers)])
    for layer in range(host.n_layers):
        options = {"k": 6} if kind == "topk" else {}
        cfg = sae.CoderConfig(kind=kind, d_in=d, n_latents=n_latents, d_out=d, transcoder=transcoder, skip=transcoder,
                              input_scale=0.7, output_scale=1.3, hook=f"blocks.{layer}.{site.input_point}",
                              target_hook=f"blocks.{layer}.{site.output_point}", host=settled_fingerprint(host), **options)
        coder = sae.build_coder(cfg)
        with torch.no_grad():
            coder.W_enc.copy_(torch.randn(n_latents, d, generator=gen) / d ** 0.5)
            coder.W_dec.copy_(torch.randn(n_latents, d, generator=gen) / d ** 0.5)
            coder.b_dec.copy_(0.1 * torch.randn(d, generator=gen) if transcoder else torch.zeros(d))
            # biases that let about a quarter of the latents fire on the host's own activations
            x = cache[f"blocks.{layer}.{site.input_point}"].reshape(-1, d) * cfg.input_scale
            pre = x @ coder.W_enc.t()
            coder.b_enc.copy_(-torch.quantile(pre, 0.75, dim=0))
            if coder.W_skip is not None:
                coder.W_skip.copy_(0.1 * torch.randn(d, d, generator=gen) / d ** 0.5)
        out.append(coder.eval())
    return out
