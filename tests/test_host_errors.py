"""Bad input to hosts: each case is one clear UniversalityError sentence."""

from __future__ import annotations

import json

import pytest
import torch

import universality as uv
from universality import UniversalityError
from conftest import tiny_transformer


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    path = tmp_path_factory.mktemp("neox")
    tiny_transformer("gpt_neox").save_pretrained(path)
    return uv.load_host(str(path), device="cpu")


def test_misspelled_hook_names_closest(host):
    with pytest.raises(UniversalityError, match=r"unknown hook point 'blocks\.1\.resid_psot'.*blocks\.1\.resid_post"):
        host.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=["blocks.1.resid_psot"])
    with pytest.raises(UniversalityError, match=r"closest valid names: .*blocks\.0\.mixer_out"):
        host.run_with_hooks(torch.zeros(1, 3, dtype=torch.long), {"blocks.0.mixer_ou": lambda x: x})


def test_block_out_of_range(host):
    with pytest.raises(UniversalityError, match=r"block 7.*blocks 0\.\.2"):
        host.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=["blocks.7.resid_post"])


@pytest.mark.parametrize("tokens, pattern", [
    (torch.zeros(3, dtype=torch.long), r"2-D integer tensor.*\(3,\)"),
    (torch.zeros(1, 2, 3, dtype=torch.long), r"2-D integer tensor"),
    (torch.zeros(0, 4, dtype=torch.long), r"empty"),
    (torch.zeros(1, 4), r"integer ids.*float"),
    (torch.full((1, 4), 97), r"token id 97 is outside this model's vocabulary 0\.\.96"),
    (torch.full((1, 4), -1), r"token id -1"),
    (torch.zeros(1, 65, dtype=torch.long), r"exceeds this model's context of 64"),
])
def test_bad_tokens(host, tokens, pattern):
    with pytest.raises(UniversalityError, match=pattern):
        host(tokens)


def test_hook_must_keep_shape(host):
    with pytest.raises(UniversalityError, match=r"must keep the shape"):
        host.run_with_hooks(torch.zeros(1, 3, dtype=torch.long), {"embed": lambda x: x[:, :1]})


def test_hook_must_be_callable(host):
    with pytest.raises(UniversalityError, match=r"not a function"):
        host.run_with_hooks(torch.zeros(1, 3, dtype=torch.long), {"embed": 3})


def test_unknown_model_type_lists_supported(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(UniversalityError, match=r"model_type 'bert' is not supported; supported model types: .*gpt_neox.*llama"):
        uv.load_host(str(tmp_path))


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_transformer("gpt2").config.to_dict()))
    with pytest.raises(UniversalityError, match=r"has no weights"):
        uv.load_host(str(tmp_path))


def test_folder_without_config(tmp_path):
    with pytest.raises(UniversalityError, match=r"no config.json"):
        uv.load_host(str(tmp_path))


def test_unreachable_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UniversalityError, match=r"not a local checkpoint folder"):
        uv.load_host("nobody-here/not-a-model-xyz")


def test_bad_dtype_and_device(host, tmp_path):
    tiny_transformer("gpt2").save_pretrained(tmp_path)
    with pytest.raises(UniversalityError, match=r"dtype 'float8'"):
        uv.load_host(str(tmp_path), dtype="float8")
    with pytest.raises(UniversalityError, match=r"device 'tpu'"):
        uv.load_host(str(tmp_path), device="tpu")


def test_float64_and_hook_points_listing(tmp_path):
    tiny_transformer("llama").save_pretrained(tmp_path)
    h = uv.load_host(str(tmp_path), dtype="float64")
    assert h.dtype == torch.float64 and h(torch.zeros(1, 3, dtype=torch.long)).dtype == torch.float64
    assert h.hook_points[0] == "embed" and h.hook_points[-1] == "final_norm"
    assert "blocks.2.attn.pattern" in h.hook_points and "gpt_neox" in uv.supported_model_types()
