"""Activation store: contents against HF's hidden states, determinism, kill -9 resume, reads, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import universality as uv
from universality import UniversalityError
from universality.activations import ActivationStore, cache_activations, host_fingerprint, paired_chunks
from universality.data import StreamConfig, corpus_from_texts, default_corpus, make_stream
from universality.data.bpe import train_byte_bpe

HOOKS = ["embed", "blocks.0.resid_post", "blocks.1.mlp_out"]


@pytest.fixture(scope="module")
def corpus():
    docs = sorted(default_corpus().split("heldout"), key=lambda d: len(d.text))[50:90]
    return corpus_from_texts([d.text for d in docs], name="acts")


def _save_model(path: Path, tok, seed: int) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, corpus):
    tok = train_byte_bpe([d.text for d in corpus.documents], vocab_size=300)
    root = tmp_path_factory.mktemp("models")
    return _save_model(root / "m0", tok, 0), _save_model(root / "m1", tok, 1)


@pytest.fixture(scope="module")
def host(models):
    return uv.load_host(models[0], device="cpu")


@pytest.fixture(scope="module")
def stream(host, corpus):
    return make_stream(corpus, host.tokenizer, StreamConfig(seq_len=32, n_sequences=20, seed=0))


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rows_match_hf_hidden_states(tmp_path, host, stream):
    store = cache_activations(host, HOOKS, stream, tmp_path / "s", shard_sequences=6, batch_size=4)
    assert store.n_shards == 4 and store.n_rows == 20 * 32
    with torch.no_grad():
        hs = host.model(stream.tokens, output_hidden_states=True).hidden_states
    ref_embed = hs[0].reshape(-1, 32)
    ref_block0 = hs[1].reshape(-1, 32)
    assert torch.allclose(store.read("embed"), ref_embed, atol=1e-5)
    assert torch.allclose(store.read("blocks.0.resid_post"), ref_block0, atol=1e-5)
    # masked reads keep exactly the counted positions, in order
    keep = stream.mask.reshape(-1)
    assert torch.allclose(store.read("blocks.0.resid_post", masked=True), ref_block0[keep], atol=1e-5)
    assert torch.equal(store.tokens, stream.tokens) and torch.equal(store.mask, stream.mask)
    m = store.manifest
    assert m["host_fingerprint"] == host_fingerprint(host) and m["stream"]["fingerprint"] == stream.fingerprint
    assert m["dtype"] == "float32" and m["hooks"]["blocks.1.mlp_out"]["d"] == 32
    assert all(len(s["files"][h]["sha256"]) == 64 for s in m["shards"] for h in HOOKS)
    # gather reads arbitrary rows across shards
    rows = torch.tensor([639, 0, 200, 191, 192])
    assert torch.allclose(store.gather(rows, "embed"), ref_embed[rows], atol=1e-6)


def test_float16_store_and_rerun_is_a_noop(tmp_path, host, stream):
    store = cache_activations(host, ["blocks.1.resid_post"], stream, tmp_path / "h", dtype="float16", shard_sequences=8)
    assert store.dtype == torch.float16 and store.shard(0).dtype == torch.float16
    before = _bytes(tmp_path / "h")
    cache_activations(host, ["blocks.1.resid_post"], stream, tmp_path / "h", dtype="float16", shard_sequences=8)
    assert _bytes(tmp_path / "h") == before


def test_deterministic_and_different_jobs_refused(tmp_path, host, stream):
    cache_activations(host, HOOKS, stream, tmp_path / "a", shard_sequences=5)
    cache_activations(host, HOOKS, stream, tmp_path / "b", shard_sequences=5)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    with pytest.raises(UniversalityError, match="different job"):
        cache_activations(host, ["embed"], stream, tmp_path / "a", shard_sequences=5)
    store = cache_activations(host, ["embed"], stream, tmp_path / "a", shard_sequences=5, overwrite=True)
    assert store.hooks == ["embed"]
    assert not list((tmp_path / "a" / "blocks.0.resid_post").glob("*.safetensors"))


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    import universality as uv
    from universality.activations import cache_activations
    from universality.data import TokenStream
    torch.set_num_threads(1)
    host = uv.load_host(sys.argv[1], device="cpu")
    stream = TokenStream.load(sys.argv[2])
    real = host.run_with_cache
    def slow(*a, **k):
        time.sleep(0.4)
        return real(*a, **k)
    host.run_with_cache = slow
    cache_activations(host, sys.argv[4].split(","), stream, sys.argv[3], shard_sequences=2, batch_size=2)
""")


def test_resume_after_sigkill_is_byte_identical(tmp_path, models, host, stream):
    torch.set_num_threads(1)
    ref = tmp_path / "ref"
    cache_activations(host, HOOKS, stream, ref, shard_sequences=2, batch_size=2)
    stream.save(tmp_path / "stream.safetensors")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(models[0]), str(tmp_path / "stream.safetensors"), str(out),
                             ",".join(HOOKS)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    recorded = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            recorded = len(json.loads((out / "manifest.json").read_text())["shards"])
        except (OSError, ValueError, KeyError):
            recorded = 0
        if recorded >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and 3 <= len(manifest["shards"]) < 10
    with pytest.raises(UniversalityError, match="incomplete"):
        ActivationStore(out)
    cache_activations(host, HOOKS, stream, out, shard_sequences=2, batch_size=2)
    got, want = _bytes(out), _bytes(ref)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)


def test_shuffled_batches_cover_each_counted_row_once_with_bounded_memory(tmp_path, host, stream):
    store = cache_activations(host, ["blocks.0.resid_post"], stream, tmp_path / "s", shard_sequences=2)
    full = store.read(masked=True)
    loads = []
    real = store.shard
    store.shard = lambda k, hook=None: (loads.append(k), real(k, hook))[1]
    it = store.batches(batch_size=7, shuffle=True, seed=3, buffer_shards=2)
    first = next(it)
    assert len(loads) == 2 and first.shape == (7, 32)
    rest = list(it)
    assert len(loads) == store.n_shards
    got = torch.cat([first] + rest)
    assert got.shape == full.shape
    assert torch.equal(torch.sort(got, dim=0).values, torch.sort(full, dim=0).values)
    assert not torch.equal(got, full)  # shuffled
    again = torch.cat(list(store.batches(batch_size=7, shuffle=True, seed=3, buffer_shards=2)))
    other = torch.cat(list(store.batches(batch_size=7, shuffle=True, seed=4, buffer_shards=2)))
    assert torch.equal(again, got) and not torch.equal(other, got)
    ordered = torch.cat(list(store.batches(batch_size=64, shuffle=False)))
    assert torch.equal(ordered, full)


def test_corrupt_and_truncated_shards_are_caught(tmp_path, host, stream):
    store = cache_activations(host, ["embed"], stream, tmp_path / "s", shard_sequences=10)
    f = tmp_path / "s" / store.manifest["shards"][1]["files"]["embed"]["file"]
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(UniversalityError, match="corrupt or truncated"):
        store.read()
    f.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(UniversalityError, match="corrupt or truncated"):
        ActivationStore(tmp_path / "s").verify()
    # rerunning the job rewrites the damaged shard
    store = cache_activations(host, ["embed"], stream, tmp_path / "s", shard_sequences=10)
    store.verify()


def test_nan_is_reported_with_hook_and_position(tmp_path, models, stream):
    h = uv.load_host(models[1], device="cpu")
    flat = stream.tokens.reshape(-1)
    victim = int(flat[75])
    first = int((flat == victim).nonzero()[0])
    with torch.no_grad():
        h.model.get_input_embeddings().weight[victim, 3] = float("nan")
    seq, pos = first // stream.seq_len, first % stream.seq_len
    with pytest.raises(UniversalityError, match=rf"hook 'embed' produced NaN/inf at sequence {seq}, position {pos}"):
        cache_activations(h, ["embed"], stream, tmp_path / "n")


def test_bad_input(tmp_path, host, stream, corpus):
    with pytest.raises(UniversalityError, match="unknown hook point"):
        cache_activations(host, ["blocks.0.resid_pots"], stream, tmp_path / "x")
    with pytest.raises(UniversalityError, match="not one vector per token"):
        cache_activations(host, ["blocks.0.attn.pattern"], stream, tmp_path / "x")
    long = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=128, n_sequences=2))
    with pytest.raises(UniversalityError, match="context of 64"):
        cache_activations(host, ["embed"], long, tmp_path / "x")
    with pytest.raises(UniversalityError, match="dtype"):
        cache_activations(host, ["embed"], stream, tmp_path / "x", dtype="int8")
    with pytest.raises(UniversalityError, match="not an activation store"):
        ActivationStore(tmp_path / "nothing")


def test_paired_chunks_of_two_seeds(tmp_path, models, host, stream):
    other = uv.load_host(models[1], device="cpu")
    a = cache_activations(host, ["blocks.1.resid_post"], stream, tmp_path / "a", shard_sequences=4)
    b = cache_activations(other, ["blocks.1.resid_post"], stream, tmp_path / "b", shard_sequences=7)
    pairs = list(paired_chunks(a, b))
    xa = torch.cat([p[0] for p in pairs])
    xb = torch.cat([p[1] for p in pairs])
    assert torch.equal(xa, a.read(masked=True)) and torch.equal(xb, b.read(masked=True))
    assert a.manifest["host_fingerprint"] != b.manifest["host_fingerprint"]
