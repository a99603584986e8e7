"""Sparse code store: contents against dense in-memory encoding, row gathering, reuse, corruption, and the
streamed compare helpers (top-activating contexts, MPPC reuse) against the dense path."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import universality as uv
from universality import UniversalityError, sae
from universality.activations import cache_activations
from universality.activations.codes import CodeStore, encode_chunk, encode_store
from universality.data import StreamConfig, corpus_from_texts, default_corpus, make_stream
from universality.data.bpe import train_byte_bpe

HOOK = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    docs = sorted(default_corpus().split("heldout"), key=lambda d: len(d.text))[50:90]
    corpus = corpus_from_texts([d.text for d in docs], name="codes")
    tok = train_byte_bpe([d.text for d in corpus.documents], vocab_size=300)
    root = tmp_path_factory.mktemp("codes")
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    GPTNeoXForCausalLM(cfg).save_pretrained(root / "m")
    tok.save_pretrained(root / "m")
    host = uv.load_host(root / "m", device="cpu")
    stream = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=32, n_sequences=24, seed=0, bos="always"))
    store = cache_activations(host, [HOOK], stream, root / "acts", shard_sequences=5)  # 5 shards, the last short
    x = store.read(HOOK)
    coder = sae.fit(x[store.mask.reshape(-1)], kind="topk", n_latents=48, k=4, seed=0, n_tokens=2048, batch_size=128,
                    device="cpu")
    return root, host, stream, store, coder


def _dense(coder, store, rows):
    with torch.no_grad():
        return coder.encode(store.read(HOOK)[torch.as_tensor(rows)]).numpy()


def test_codes_equal_dense_encoding_in_any_row_order(setup):
    root, _, _, store, coder = setup
    codes = encode_store(coder, store, HOOK, root / "c1", job={"t": 1})
    mask_rows = store.mask.reshape(-1).nonzero().squeeze(1)
    assert 0 < codes.n_rows == mask_rows.numel() < store.n_rows  # BOS rows are left out
    assert np.array_equal(codes.rows, mask_rows.numpy())
    got = codes.gather(mask_rows)
    assert got.shape == (mask_rows.numel(), 48)
    assert np.array_equal(got.toarray(), _dense(coder, store, mask_rows))  # bit-identical to the dense path
    assert np.diff(got.indptr).max() <= 4  # TopK: at most k stored entries a row
    perm = mask_rows[torch.randperm(mask_rows.numel(), generator=torch.Generator().manual_seed(3))][:300]
    assert np.array_equal(codes.gather(perm).toarray(), _dense(coder, store, perm))
    # another chunk size: the same active latents; values agree to float32 rounding (matmul blocking differs)
    x = store.read(HOOK)[mask_rows]
    small = encode_chunk(coder, x, chunk=7)
    assert np.array_equal(small.indptr, got.indptr) and np.array_equal(small.indices, got.indices)
    np.testing.assert_allclose(small.data, got.data, rtol=1e-5, atol=1e-6)


def test_rows_that_do_not_count_are_refused(setup):
    root, _, _, store, coder = setup
    codes = encode_store(coder, store, HOOK, root / "c2", job={"t": 2})
    masked_out = (~store.mask.reshape(-1)).nonzero().squeeze(1)
    assert masked_out.numel() > 0
    with pytest.raises(UniversalityError, match="not counted rows"):
        codes.gather(masked_out[:1])
    with pytest.raises(UniversalityError, match="not counted rows"):
        codes.gather(torch.tensor([store.n_rows + 5]))


def test_same_job_is_reused_and_another_job_rewrites(setup):
    root, _, _, store, coder = setup
    folder = root / "c3"
    encode_store(coder, store, HOOK, folder, job={"t": 3})
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    encode_store(coder, store, HOOK, folder, job={"t": 3})
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    other = sae.fit(store.read(HOOK), kind="topk", n_latents=16, k=2, seed=1, n_tokens=512, batch_size=128, device="cpu")
    again = encode_store(other, store, HOOK, folder, job={"t": "other"})
    assert again.n_latents == 16 and again.gather(again.rows[:10]).shape == (10, 16)


def test_corrupt_or_incomplete_code_store_is_one_clear_error(setup):
    root, _, _, store, coder = setup
    folder = root / "c4"
    codes = encode_store(coder, store, HOOK, folder, job={"t": 4})
    f = folder / codes.manifest["shards"][1]["file"]
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(UniversalityError, match="corrupt or truncated"):
        CodeStore(folder).gather(codes.rows)
    (folder / "manifest.json").unlink()  # what an interrupted encode leaves: shards without a manifest
    with pytest.raises(UniversalityError, match="not a code store"):
        CodeStore(folder)
    assert encode_store(coder, store, HOOK, folder, job={"t": 4}).gather(codes.rows).nnz == codes.gather(codes.rows).nnz


def _dense_contexts(side, rows, codes, feature, n=2, window=10):
    """The former dense implementation: torch.topk over a dense code column."""
    col = codes[:, feature]
    top = torch.topk(col, min(n, col.numel())).indices
    out = []
    for i in top.tolist():
        if col[i] <= 0:
            continue
        s, pos = divmod(int(rows[i]), side.stream.seq_len)
        start = max(0, pos - window + 1)
        out.append({"tokens": [f"<{t}>" for t in side.stream.tokens[s, start:pos + 1].tolist()], "target": pos - start,
                    "activation": float(col[i])})
    return out


def test_sparse_top_matches_equal_the_dense_reference(setup):
    from universality import matching
    from universality.jobs.compare import top_matches

    root, _, stream, store, coder = setup
    other = sae.fit(store.read(HOOK, masked=True), kind="topk", n_latents=40, k=4, seed=5, n_tokens=2048, batch_size=128,
                    device="cpu")
    ca_store = encode_store(coder, store, HOOK, root / "c5a", job={"t": "a"})
    cb_store = encode_store(other, store, HOOK, root / "c5b", job={"t": "b"})
    rows = torch.from_numpy(ca_store.rows)
    ca, cb = ca_store.gather(rows), cb_store.gather(rows)
    side = SimpleNamespace(stream=stream, host=SimpleNamespace(tokenizer=None))
    res = matching.mppc(ca, cb)
    got = top_matches(side, side, rows, rows, ca, cb, res, 5)
    da, db = torch.from_numpy(ca.toarray()), torch.from_numpy(cb.toarray())
    assert len(got) == 5
    for m in got:
        i, j = m["a_feature"], m["b_feature"]
        assert int((da[:, i] > 0).sum()) >= 5
        assert m["contexts"]["a"] == _dense_contexts(side, rows, da, i)
        assert m["contexts"]["b"] == _dense_contexts(side, rows, db, j)
    # the ranking is the dense one: highest finite MPPC among features active on >= 5 tokens
    r = res.a_to_b.max_r.clone()
    r[~torch.isfinite(r) | ((da > 0).sum(0) < 5)] = -2
    assert [m["a_feature"] for m in got] == torch.argsort(r, descending=True)[:5].tolist()


def test_a_store_whose_shards_do_not_cover_the_stream_is_refused(setup):
    import json
    import shutil

    from universality.activations import ActivationStore

    root, _, _, store, _ = setup
    broken = root / "broken"
    shutil.copytree(store.path, broken)
    mf = json.loads((broken / "manifest.json").read_text())
    del mf["shards"][2]  # a hole in the middle: sequences 10..15 have no shard
    (broken / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(UniversalityError, match="do not cover its 24 sequences"):
        ActivationStore(broken)
