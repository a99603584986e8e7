"""Host facts live on the host: max_positions, a cached fingerprint, hook-name builders and layer_at."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import universality as uv
from universality import UniversalityError
from universality.activations import host_fingerprint
from universality.data import context_length
from universality.hosts import base as host_base
from universality.hosts.fingerprint import compute_fingerprint
from universality.hosts.names import hook_name, layer_at
from universality.jobs import common

from conftest import tiny_transformer


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    tiny_transformer("gpt2").save_pretrained(path)
    return uv.load_host(path, device="cpu")


@pytest.fixture(scope="module")
def mamba(tmp_path_factory):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mamba")
    MambaForCausalLM(MambaConfig(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2)).save_pretrained(path)
    return uv.load_host(path, device="cpu")


def test_max_positions_is_public_and_read_by_the_streams(gpt2, mamba):
    assert gpt2.max_positions == 64 and mamba.max_positions is None
    assert context_length(gpt2) == 64 and context_length(mamba) is None
    # context_length reads the public fact: a stand-in host with only max_positions is obeyed
    assert context_length(SimpleNamespace(max_positions=17, arch="rwkv")) == 17
    with pytest.raises(UniversalityError, match="exceeds this model's context of 64"):
        gpt2(torch.zeros(1, 65, dtype=torch.long))


def test_fingerprint_is_hashed_once_and_follows_weight_changes(gpt2, monkeypatch):
    calls = []

    def counting(host):
        calls.append(1)
        return compute_fingerprint(host)

    monkeypatch.setattr(host_base, "compute_fingerprint", counting)
    gpt2._fingerprint = None
    fp = gpt2.fingerprint
    assert len(fp) == 16 and gpt2.fingerprint == fp and host_fingerprint(gpt2) == fp
    assert len(calls) == 1  # three reads, one hash
    w = gpt2.model.transformer.h[0].mlp.c_fc.weight
    old = w[0, 0].item()
    with torch.no_grad():
        w[0, 0] += 1.0
    changed = gpt2.fingerprint
    assert changed != fp and len(calls) == 2
    with torch.no_grad():
        w[0, 0] = old
    assert gpt2.fingerprint == fp == compute_fingerprint(gpt2) and len(calls) == 3


def test_fingerprint_of_a_stand_in_host_is_computed():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    stand_in = SimpleNamespace(model=model, config=None, arch="toy", model_type="toy")
    fp = host_fingerprint(stand_in)
    assert fp == compute_fingerprint(stand_in)
    with torch.no_grad():
        model.weight.zero_()
    assert host_fingerprint(stand_in) != fp


def test_hook_names_and_layer_at(gpt2, mamba):
    assert hook_name(3, "mlp_out") == "blocks.3.mlp_out"
    assert gpt2.hook_name(1, "resid_post") == "blocks.1.resid_post"
    gpt2.validate_names([gpt2.hook_name(gpt2.layer_at(d), "mlp_out") for d in (0, 0.5, 1)])
    with pytest.raises(UniversalityError, match="names block 3, but this transformer host has blocks 0..2"):
        gpt2.hook_name(3, "resid_post")
    with pytest.raises(UniversalityError, match="unknown hook point 'blocks.0.attn_out_typo'"):
        gpt2.hook_name(0, "attn_out_typo")
    with pytest.raises(UniversalityError, match="layer -1 is not valid"):
        hook_name(-1, "mlp_out")
    assert [gpt2.layer_at(d) for d in (0, 0.2, 0.25, 0.5, 0.75, 1)] == [0, 0, 1, 1, 2, 2]
    assert [mamba.layer_at(d) for d in (0, 0.49, 0.5, 1)] == [0, 0, 1, 1]
    assert layer_at(1, 0.7) == 0
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(UniversalityError, match="is not valid; give a relative depth between 0"):
            gpt2.layer_at(bad)
    # the pipeline's jobs use hosts.names itself, no copy of it
    from universality.jobs import compare

    assert not hasattr(common, "layer_at") and compare.layer_at is layer_at and compare.hook_name is hook_name


def test_release_weights_frees_storage_keeps_facts_and_refuses_forward_passes(tmp_path):
    path = tmp_path / "neox"
    tiny_transformer("gpt_neox").save_pretrained(path)
    host = uv.load_host(path, device="cpu")
    tokens = torch.tensor([[1, 2, 3, 4]])
    fp, n_params, described = host.fingerprint, sum(p.numel() for p in host.model.parameters()), host.describe()
    host.run_with_cache(tokens, names=["blocks.0.resid_post"])
    host.release_weights()
    assert host.released and all(p.device.type == "meta" for p in host.model.parameters())
    assert host.fingerprint == fp == compute_fingerprint(uv.load_host(path, device="cpu"))  # the facts stay readable
    assert sum(p.numel() for p in host.model.parameters()) == n_params and host.describe() == described
    assert host.device == torch.device("cpu")
    with pytest.raises(UniversalityError, match="were released after its activations were cached; load the model again"):
        host.run_with_cache(tokens, names=["blocks.0.resid_post"])
