"""Hugging Face configs and freshly initialised models for each zoo architecture."""

from __future__ import annotations

import torch

from .presets import ZooPreset


def hf_config(arch: str, p: ZooPreset, vocab_size: int, eos_id: int, pad_id: int):
    """The Hugging Face config of a zoo model of architecture ``arch`` under preset ``p``."""
    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if arch != "rwkv":  # RWKV-4 has its own init (1e-4 embeddings); it ignores initializer_range
        common["initializer_range"] = fan_in_std(p.d_model)
    if arch == "gpt_neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(hidden_size=p.d_model, num_hidden_layers=p.n_layers, num_attention_heads=p.n_heads,
                             intermediate_size=4 * p.d_model, max_position_embeddings=p.seq_len, rotary_pct=0.25,
                             use_parallel_residual=True, tie_word_embeddings=True, hidden_dropout=0.0,
                             attention_dropout=0.0, **common)
    if arch == "mamba":
        from transformers import MambaConfig

        return MambaConfig(hidden_size=p.d_model, num_hidden_layers=p.n_ssm_layers, state_size=p.state_size("mamba", 16), expand=2,
                           conv_kernel=4, use_cache=False, tie_word_embeddings=True, **common)
    if arch == "mamba2":
        from transformers import Mamba2Config

        head_dim = 32
        return Mamba2Config(hidden_size=p.d_model, num_hidden_layers=p.n_ssm_layers, state_size=p.state_size("mamba2", 32), expand=2,
                            head_dim=head_dim, num_heads=2 * p.d_model // head_dim, n_groups=1, conv_kernel=4,
                            chunk_size=64, use_cache=False, tie_word_embeddings=True, **common)
    if arch == "rwkv":
        from transformers import RwkvConfig

        return RwkvConfig(hidden_size=p.d_model, num_hidden_layers=p.n_layers, attention_hidden_size=p.d_model,
                          intermediate_size=4 * p.d_model, context_length=p.seq_len, rescale_every=0,
                          tie_word_embeddings=True, use_cache=False, **common)
    raise ValueError(arch)


def fan_in_std(d_model: int) -> float:
    """Standard deviation 1/sqrt(d_model) for the zoo's normal-initialised matrices and embeddings.

    transformers' defaults (0.02 for GPT-NeoX, 0.1 for Mamba/Mamba-2) are tuned for other widths; at
    width 192 fan-in scaling lowers held-out loss after the default budget by 0.07-0.19 nats (docs/zoo.md).
    """
    return d_model ** -0.5


def init_model(arch: str, p: ZooPreset, vocab_size: int, eos_id: int, pad_id: int, seed: int) -> torch.nn.Module:
    """A freshly initialised ``*ForCausalLM`` (float32, CPU), deterministic for ``seed``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch, p, vocab_size, eos_id, pad_id))
    return model.float()
