"""Shared fixtures: tiny random-init checkpoints built from configs (never downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNIVERSALITY_QUIET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_transformer(model_type: str, **overrides):
    """A tiny random-init HF causal LM of ``model_type`` (gpt2, gpt_neox, llama, qwen2)."""
    import transformers as tf

    if model_type == "gpt2":
        cfg = tf.GPT2Config(vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
        cls = tf.GPT2LMHeadModel
    elif model_type == "gpt_neox":
        cfg = tf.GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=64, rotary_pct=0.5, max_position_embeddings=64,
                               bos_token_id=0, eos_token_id=0)
        cls = tf.GPTNeoXForCausalLM
    elif model_type == "llama":
        cfg = tf.LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                             bos_token_id=0, eos_token_id=0)
        cls = tf.LlamaForCausalLM
    elif model_type == "qwen2":
        cfg = tf.Qwen2Config(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                             bos_token_id=0, eos_token_id=0)
        cls = tf.Qwen2ForCausalLM
    else:
        raise ValueError(model_type)
    cfg.initializer_range = 0.25  # large enough that attention is far from uniform
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(1234)
    model = cls(cfg).eval()
    with torch.no_grad():  # make biases and norms non-trivial so parity tests see them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def save_model(tmp_path):
    """Save a HF model with ``save_pretrained`` into a fresh folder; return the folder path."""
    counter = {"n": 0}

    def _save(model) -> str:
        counter["n"] += 1
        path = tmp_path / f"ckpt{counter['n']}"
        model.save_pretrained(path)
        return str(path)

    return _save


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny matrices run far faster without oversubscribing a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
