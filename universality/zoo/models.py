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

        return RwkvConfig(hidden_size=p.d_model, num_hidden_layers=p.n_layers, attention_hidden_size=p.state_size("rwkv", p.d_model),
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
    model = AutoModelForCausalLM.from_config(hf_config(arch, p, vocab_size, eos_id, pad_id)).float()
    if arch == "rwkv" and p.rwkv_recall_init:
        init_rwkv_for_recall(model, fan_in_std(p.d_model))
    return model


RECALL_DECAY_RANGE = (-7.0, -3.0)
"""``time_decay`` range of :func:`init_rwkv_for_recall`: per-step decay factors from exp(-e^-7) ≈ 0.999 to
exp(-e^-3) ≈ 0.95, so every channel still holds a token 32 positions back."""
RECALL_BONUS = -2.0
"""``time_first`` of :func:`init_rwkv_for_recall`: the current position's own key counts e^-2 as much as a stored one."""
RECALL_KEY_GAIN = 2.0
"""Scale of the key weights under :func:`init_rwkv_for_recall`: sharper ``exp(k)`` selects fewer stored positions."""


@torch.no_grad()
def init_rwkv_for_recall(model: torch.nn.Module, embedding_std: float | None, *, last_blocks: int | None = None,
                         tie_receptance: bool = True, key_gain: float = RECALL_KEY_GAIN,
                         decay_range: tuple[float, float] = RECALL_DECAY_RANGE, bonus: float = RECALL_BONUS) -> None:
    """Re-initialise an ``RwkvForCausalLM`` in place with a prior for in-context recall.

    - tied embeddings normal with std ``embedding_std`` (``None`` leaves them; transformers' 1e-4 start stalls
      learning to copy, :func:`fan_in_std` does not);
    - in every block's time mix (the last ``last_blocks`` only, if given), token shift makes the key read only the
      previous position (``time_mix_key = 0``) and value and receptance only the current one (``time_mix_value =
      time_mix_receptance = 1``), so each WKV channel stores "what followed which";
    - decays spread evenly over ``decay_range`` (``time_decay``), bonus ``time_first = bonus``;
    - key weights scaled by ``key_gain``; with ``tie_receptance`` the receptance weights start as the unscaled key
      weights, so the channel a stored key fills is the channel the same token, seen again, opens.

    Everything stays trainable: a starting point, in the spirit of Mamba's Δ initialisation (docs/zoo.md).
    """
    if embedding_std is not None:
        model.get_input_embeddings().weight.normal_(0.0, embedding_std)
    blocks = list(model.rwkv.blocks)
    lo, hi = decay_range
    for block in blocks if last_blocks is None else blocks[len(blocks) - last_blocks:]:
        att = block.attention
        att.time_mix_key.fill_(0.0)
        att.time_mix_value.fill_(1.0)
        att.time_mix_receptance.fill_(1.0)
        att.time_decay.copy_(torch.linspace(lo, hi, att.time_decay.numel()))
        att.time_first.fill_(bonus)
        if tie_receptance:
            att.receptance.weight.copy_(att.key.weight)
        att.key.weight.mul_(key_gain)
