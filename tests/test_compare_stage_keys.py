"""A rerun of ``universality compare`` into the same run directory with another hook, token count or corpus must
recompute every stage whose output depends on it (the N-way families stage once kept its old result)."""

from __future__ import annotations

import json

import pytest
import torch

from universality.cli import main
from universality.data.bpe import train_byte_bpe

pytestmark = pytest.mark.slow

TEXT = "\n\n".join(f"def f_{i}(x, y):\n    return (x + y) * {i} - x // {i + 1}\n" for i in range(300))


def _models(tmp):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = train_byte_bpe([TEXT], vocab_size=300)
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
        path = tmp / f"m{seed}"
        GPTNeoXForCausalLM(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(str(path))
    return paths


def _compare(paths, out, *extra):
    args = ["compare", *paths, "--names", "a,b,c", "--n-latents", "32", "--k", "4",
            "--n-boot", "0", "--sae-epochs", "1", "--layers", "1", "--no-floor", "--top-matches", "1",
            "--out", str(out), "--quiet", *extra]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("change", [("--hook", "mlp_out"), ("--n-tokens", "768"), ("--corpus", "other")])
def test_rerun_with_other_inputs_recomputes_families(tmp_path, change):
    texts = {"corpus": TEXT, "other": TEXT.replace("+", "*").replace("def", "async def")}
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text)
    paths = _models(tmp_path)
    first = {"--n-tokens": "1024", "--corpus": str(tmp_path / "corpus.txt")}
    then = {**first, change[0]: str(tmp_path / "other.txt") if change[1] == "other" else change[1]}
    flat = lambda d: [x for kv in d.items() for x in kv]  # noqa: E731
    reused = tmp_path / "reused"
    _compare(paths, reused, *flat(first))
    second = _compare(paths, reused, *flat(then))
    fresh = _compare(paths, tmp_path / "fresh", *flat(then))
    assert second["timings"]["families"]["status"] == "ran"
    assert second["families"] == fresh["families"]
    assert second["pairs"] == fresh["pairs"]
