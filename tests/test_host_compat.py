"""What the hosts read from transformers: derived layouts, attribute guards, RWKV's rescaling without private calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import universality as uv
import transformers as tf
from universality._errors import UniversalityError
from universality.hosts.hf_layout import hidden_states_layout
from test_host_rwkv import _tokens, tiny_rwkv
from conftest import tiny_transformer


class _Out:
    def __init__(self, hidden_states):
        self.hidden_states = hidden_states


class _Toy(nn.Module):
    """Three blocks x -> 2x + 1 and a final 'norm' x -> -x; lists hidden_states in a chosen layout."""

    def __init__(self, embeddings_first: bool):
        super().__init__()
        self.config = type("Config", (), {"num_hidden_layers": 3})()
        self.layers = nn.ModuleList(_Affine() for _ in range(3))
        self.embeddings_first = embeddings_first

    def forward(self, tokens, output_hidden_states=True, use_cache=False):
        x = tokens.float().unsqueeze(-1).repeat(1, 1, 4)
        outputs = []
        for block in self.layers:
            outputs.append(block(outputs[-1] if outputs else x))
        if self.embeddings_first:  # [embeddings, block 0, block 1, norm(block 2)]
            return _Out((x, outputs[0], outputs[1], -outputs[2]))
        return _Out((outputs[0], outputs[1], outputs[2], -outputs[2]))  # [block 0, 1, 2, norm(block 2)]


class _Affine(nn.Module):
    def forward(self, x):
        return 2 * x + 1


def test_layout_is_read_from_the_model_not_assumed():
    tokens = torch.arange(6).reshape(2, 3)
    assert hidden_states_layout(_Toy(True), tokens).names == ("embed", "blocks.0.resid_post", "blocks.1.resid_post",
                                                               "final_norm")
    old = hidden_states_layout(_Toy(False), tokens)
    assert old.names == ("blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.resid_post", "final_norm")
    assert not old.embeddings_first and old.index_of("blocks.2.resid_post") == 2 and old.index_of("embed") is None


def test_layout_entry_matching_nothing_is_one_clear_error():
    class Scrambled(_Toy):
        def forward(self, tokens, **kw):
            out = super().forward(tokens, **kw)
            return _Out((out.hidden_states[0] + 100,) + out.hidden_states[1:])

    with pytest.raises(UniversalityError, match=r"hidden_states\[0\] of Scrambled under transformers"):
        hidden_states_layout(Scrambled(True), torch.arange(6).reshape(2, 3))


@pytest.mark.parametrize("model_type,attr", [("gpt_neox", "attention.dense"), ("gpt2", "attn.c_proj")])
def test_renamed_block_attribute_names_version_and_attribute(tmp_path, model_type, attr):
    model = tiny_transformer(model_type)
    parent, name = attr.rsplit(".", 1)
    blocks = model.gpt_neox.layers if model_type == "gpt_neox" else model.transformer.h
    delattr(blocks[1].get_submodule(parent), name)  # what a rename in a transformers release looks like
    from universality.hosts.registry import host_class

    with pytest.raises(UniversalityError, match=rf"reads '{attr}' of .*transformers {tf.__version__}"):
        host_class(model_type)(model)


def test_rwkv_without_rescaling_flag_is_refused():
    model = tiny_rwkv()
    del model.rwkv.layers_are_rescaled
    from universality.hosts.registry import host_class

    with pytest.raises(UniversalityError, match="rwkv.layers_are_rescaled"):
        host_class("rwkv")(model)


def test_rwkv_host_and_hf_forward_alternate_on_one_model(tmp_path):
    """Our rescaling switch and transformers' own keep the shared weights in one consistent state."""
    tiny_rwkv().save_pretrained(tmp_path)
    host = uv.load_host(str(tmp_path))
    fresh = tf.RwkvForCausalLM.from_pretrained(tmp_path)
    tokens = _tokens(5)
    with torch.no_grad():
        want_eval = fresh.eval()(tokens, use_cache=False).logits
        want_train = fresh.train()(tokens, use_cache=False).logits
        for _ in range(2):
            host.model.eval()
            torch.testing.assert_close(host(tokens), want_eval, rtol=0, atol=1e-4)  # ours switches to eval scale
            torch.testing.assert_close(host.model(tokens, use_cache=False).logits, want_eval, rtol=0, atol=1e-4)
            host.model.train()
            torch.testing.assert_close(host.model(tokens, use_cache=False).logits, want_train, rtol=0, atol=1e-4)
            torch.testing.assert_close(host(tokens), want_train, rtol=0, atol=1e-4)
    ref_weight = tf.RwkvForCausalLM.from_pretrained(tmp_path).rwkv.blocks[3].attention.output.weight
    assert torch.equal(host.model.rwkv.blocks[3].attention.output.weight, ref_weight)  # train mode: unscaled, exactly


@pytest.mark.parametrize("model_type,attr", [("mamba", "mixer.dt_proj"), ("mamba2", "mixer.dt_bias")])
def test_mamba_hosts_name_a_missing_attribute(model_type, attr):
    cfg_cls, model_cls = ((tf.MambaConfig, tf.MambaForCausalLM) if model_type == "mamba"
                          else (tf.Mamba2Config, tf.Mamba2ForCausalLM))
    extra = {} if model_type == "mamba" else {"num_heads": 4, "head_dim": 16, "n_groups": 1, "chunk_size": 16}
    model = model_cls(cfg_cls(vocab_size=50, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, **extra))
    parent, name = attr.rsplit(".", 1)
    delattr(model.backbone.layers[1].get_submodule(parent), name)
    from universality.hosts.registry import host_class

    with pytest.raises(UniversalityError, match=rf"reads '{attr}' of .*transformers {tf.__version__}"):
        host_class(model_type)(model)
