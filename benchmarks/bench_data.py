"""Activation store speed: extraction overhead over a bare forward, and streamed shuffled reads vs in-memory shuffling."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from common import Figure, best_time

import universality as uv
from universality.activations import ActivationStore, cache_activations
from universality.data import StreamConfig, corpus_from_texts, default_corpus, make_stream
from universality.data.bpe import train_byte_bpe


def _host(tmp: Path, d: int, layers: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    docs = [x.text for x in default_corpus().split("heldout")[:60]]
    tok = train_byte_bpe(docs, vocab_size=1024)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=d, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=4 * d, max_position_embeddings=128)
    GPTNeoXForCausalLM(cfg).save_pretrained(tmp / "m")
    tok.save_pretrained(tmp / "m")
    return uv.load_host(tmp / "m", device="cpu"), corpus_from_texts(docs)


def run(quick: bool) -> list[Figure]:
    n_seq = 64 if quick else 512
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        host, corpus = _host(tmp, 128, 4)
        stream = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=128, n_sequences=n_seq))
        hooks = ["blocks.1.resid_post", "blocks.3.resid_post"]
        tokens = n_seq * 128
        count = {"k": 0}

        def bare():
            with torch.no_grad():
                for i in range(0, n_seq, 8):
                    host.run_with_cache(stream.tokens[i:i + 8], names=hooks, return_logits=False)

        def cached():
            count["k"] += 1
            cache_activations(host, hooks, stream, tmp / f"s{count['k']}", batch_size=8, shard_sequences=64)

        t_bare = best_time(bare, repeat=2, warmup=1)
        t_cache = best_time(cached, repeat=2, warmup=1)
        store = ActivationStore(tmp / "s1")
        rows = store.read(hooks[0], masked=True)

        def streamed():
            for _ in store.batches(4096, hook=hooks[0], shuffle=True, seed=0, buffer_shards=2):
                pass

        def in_memory():
            perm = torch.randperm(rows.shape[0])
            for i in range(0, rows.shape[0], 4096):
                rows[perm[i:i + 4096]]

        t_stream = best_time(streamed, repeat=3)
        t_mem = best_time(in_memory, repeat=3)
        n = rows.shape[0]
        return [
            Figure("activation cache tokens/s (2 hooks, sharded, checksummed)", tokens / t_cache, "tok/s",
                   "bare run_with_cache over the same batches", tokens / t_bare, goal_ratio=0.8),
            Figure("store shuffled batches rows/s (streamed from disk, 2-shard buffer)", n / t_stream, "rows/s",
                   "shuffling the same rows held in memory", n / t_mem),
        ]
