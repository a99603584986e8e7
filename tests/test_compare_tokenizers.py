"""``universality compare`` on two hosts whose tokenizers differ: rows are aligned at shared character offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from universality import reports
from universality.cli import main
from universality.data.bpe import train_byte_bpe

pytestmark = pytest.mark.slow

TEXT = "\n\n".join(
    f"def function_{i}(value, other):\n    \"\"\"Return the sum of value and other, times {i}.\"\"\"\n"
    f"    result = (value + other) * {i}\n    return result\n" for i in range(400))


def _model(tmp, name, tokenizer, seed):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
    path = tmp / name
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_aligns_hosts_with_different_tokenizers(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    tok_a = train_byte_bpe([TEXT], vocab_size=300)
    tok_b = train_byte_bpe([TEXT], vocab_size=420)
    sample = "    result = (value + other) * 7"
    assert tok_a(sample)["input_ids"] != tok_b(sample)["input_ids"]  # genuinely different tokenizations
    a, b = _model(tmp_path, "a", tok_a, 0), _model(tmp_path, "b", tok_b, 1)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--names", "a,b", "--corpus", str(corpus), "--n-tokens", "1024",
                 "--n-latents", "32", "--k", "4", "--n-boot", "0", "--sae-epochs", "1", "--layers", "1",
                 "--no-floor", "--out", str(out), "--quiet"]) == 0
    res = reports.load_results(out)
    (pair,) = res["pairs"]
    assert (pair["a"], pair["b"]) == ("a", "b")
    for direction in ("a_to_b", "b_to_a"):
        s = pair[direction]
        assert s["n"] > 0 and np.isfinite(s["mean"]) and -1 <= s["mean"] <= 1
    assert res["corpus"]["n_tokens"] > 0
    # the best-matched features' top contexts come from the two hosts' own, different tokenizations
    ctx = pair["top_matches"][0]["contexts"]
    assert ctx["a"] and ctx["b"]
    text_a = {"".join(c["tokens"]) for c in ctx["a"]}
    assert all(t for t in text_a)
