"""``universality compare`` end to end under ``torchrun --nproc-per-node 2`` (gloo, CPU) against one process.

Independent references:
* the activation stores of both runs are byte-identical (caching is split by shards, not recomputed differently);
* the 2-process run's MPPC summaries and bootstrap intervals equal what one process computes with
  :func:`universality.matching.mppc` / :func:`~universality.matching.bootstrap_mppc` from the 2-process run's own
  code stores, to 1e-12, and its top matches are that MPPC's argmax;
* the dictionaries trained by 2 processes (averaged gradients of half batches) stay within float rounding of the
  1-process ones, so the two runs' MPPC means agree closely.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_dist import _torchrun, needs_torchrun, run_retrying_gloo_abort, worker_env

MAIN = "import sys\nfrom universality.cli import main\nsys.exit(main(sys.argv[1:]))\n"

SETTINGS = ("n_tokens = 3000\nseq_len = 32\nn_latents = 48\nk = 4\nsae_epochs = 2\nn_boot = 6\nn_boot_refs = 0\n"
            "floor = false\nsae_seed_skyline = false\nlayers = [0.0, 1.0]\ntop_matches = 3\n")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """A tiny GPT-NeoX and a tiny Mamba sharing one byte-BPE tokenizer (so both read one token stream)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, MambaConfig, MambaForCausalLM

    from universality.data import default_corpus
    from universality.data.bpe import train_byte_bpe

    root = tmp_path_factory.mktemp("dist-compare")
    docs = sorted(default_corpus().split("heldout"), key=lambda d: len(d.text))[50:90]
    tok = train_byte_bpe(["\n".join(d.text for d in docs)], vocab_size=300)
    torch.manual_seed(0)
    neox, mamba = root / "neox", root / "mamba"
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, bos_token_id=0,
                                     eos_token_id=0)).save_pretrained(neox)
    MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, state_size=8, expand=2,
                                 conv_kernel=4, bos_token_id=0, eos_token_id=0)).save_pretrained(mamba)
    for p in (neox, mamba):
        tok.save_pretrained(p)
    (root / "settings.toml").write_text(SETTINGS)
    return root


def _compare(hosts: Path, out: Path, n: int) -> None:
    script = hosts / "main.py"
    script.write_text(MAIN)
    argv = [str(script), "compare", str(hosts / "neox"), str(hosts / "mamba"), "--names", "neox,mamba",
            "--config", str(hosts / "settings.toml"), "--out", str(out), "--quiet"]
    env = worker_env()
    cmd = [_torchrun(), "--standalone", f"--nproc_per_node={n}", *argv] if n > 1 else [sys.executable, *argv]
    run_retrying_gloo_abort(cmd, env, [out])


@needs_torchrun
def test_compare_on_two_processes_matches_one(hosts, tmp_path):
    from universality import matching
    from universality.activations import ActivationStore
    from universality.activations.codes import CodeStore

    one, two = tmp_path / "one", tmp_path / "two"
    _compare(hosts, one, 1)
    _compare(hosts, two, 2)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert (two / "report.html").is_file()

    # activation stores: same manifests, byte-identical shards
    for label in ("neox", "mamba"):
        m1 = json.loads((one / "stages" / f"acts-{label}" / "manifest.json").read_text())
        m2 = json.loads((two / "stages" / f"acts-{label}" / "manifest.json").read_text())
        assert m1 == m2
        for f in sorted((one / "stages" / f"acts-{label}").rglob("*.safetensors")):
            assert f.read_bytes() == (two / f.relative_to(one)).read_bytes(), f

    # the 2-process statistics equal one process on the 2-process run's own codes
    pair = r2["pairs"][0]
    la, lb = pair["layer_a"], pair["layer_b"]
    store = ActivationStore(two / "stages" / "acts-neox")
    rows = store.mask.reshape(-1).nonzero().squeeze(1)

    def codes(label: str, layer: int):
        return CodeStore(two / "stages" / f"codes-{label}-blocks.{layer}.resid_post-topk-s0").gather(rows)

    ca, cb = codes("neox", la), codes("mamba", lb)
    ref = matching.mppc(ca, cb)
    vals = ref.a_to_b.max_r.numpy()
    assert abs(pair["a_to_b"]["mean"] - float(np.nanmean(vals))) < 1e-12
    assert abs(pair["b_to_a"]["mean"] - float(np.nanmean(ref.b_to_a.max_r.numpy()))) < 1e-12
    iv = matching.bootstrap_mppc(ca, cb, n_boot=6, seed=0, point=ref)
    np.testing.assert_allclose(pair["a_to_b"]["ci"], [iv["a_to_b.mean"].low, iv["a_to_b.mean"].high], rtol=0, atol=1e-12)
    for m in pair["top_matches"]:
        assert m["b_feature"] == int(ref.a_to_b.argmax[m["a_feature"]])
        assert abs(m["r"] - float(vals[m["a_feature"]])) < 1e-12
    grid = pair["grid"]
    for i, li in enumerate(grid["layers_a"]):
        for j, lj in enumerate(grid["layers_b"]):
            want = float(np.nanmean(matching.mppc(codes("neox", li), codes("mamba", lj)).a_to_b.max_r.numpy()))
            assert abs(grid["values"][i][j] - want) < 1e-12

    # 2 processes train the same dictionaries as 1 (averaged half-batch gradients): the means agree closely
    p1 = r1["pairs"][0]
    assert abs(p1["a_to_b"]["mean"] - pair["a_to_b"]["mean"]) < 0.02, (p1["a_to_b"]["mean"], pair["a_to_b"]["mean"])
    assert r1["corpus"]["n_tokens"] == r2["corpus"]["n_tokens"]
