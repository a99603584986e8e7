"""Corpora, token streams, tokenizer fingerprints and cross-tokenizer alignment."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from universality import UniversalityError
from universality.data import (AlignConfig, StreamConfig, aligned_streams, corpus_from_texts, default_corpus, load_corpus,
                               make_stream, streams_for_hosts, tokenizer_fingerprint)
from universality.data.bpe import train_byte_bpe


@pytest.fixture(scope="module")
def corpus():
    return default_corpus()


@pytest.fixture(scope="module")
def small(corpus):
    docs = sorted(corpus.split("heldout"), key=lambda d: len(d.text))[40:100]
    return corpus_from_texts([d.text for d in docs], name="small")


@pytest.fixture(scope="module")
def bpe_a(small):
    return train_byte_bpe([d.text for d in small.documents], vocab_size=400)


@pytest.fixture(scope="module")
def bpe_b(small):
    # a genuinely different byte-level BPE: other vocabulary size, trained on other texts
    return train_byte_bpe([d.text.upper() + d.text[::-1] for d in small.documents[::2]], vocab_size=1100)


@pytest.fixture(scope="module")
def unigram(small):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<eos>", "<unk>"], unk_token="<unk>", show_progress=False)
    tok.train_from_iterator([d.text for d in small.documents], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


# ----- corpora ---------------------------------------------------------------------------

def test_default_corpus_is_stdlib_python_split_deterministically(corpus):
    root = Path(sysconfig.get_paths()["stdlib"])
    names = [d.name for d in corpus.documents]
    assert names == sorted(names) and len(names) > 500
    assert all(n.endswith(".py") and "site-packages" not in n for n in names)
    some = corpus.documents[len(names) // 2]
    assert some.text == (root / some.name).read_bytes().decode("utf-8", errors="replace")
    train, held = corpus.split("train"), corpus.split("heldout")
    assert {d.name for d in train}.isdisjoint({d.name for d in held})
    assert len(train) + len(held) == len(corpus.documents)
    assert 0.05 < len(held) / len(corpus.documents) < 0.15
    again = default_corpus()
    assert again.fingerprint == corpus.fingerprint
    assert [d.name for d in again.split("heldout")] == [d.name for d in held]


def test_fingerprint_follows_content(tmp_path):
    a = corpus_from_texts(["alpha beta", "gamma"])
    b = corpus_from_texts(["alpha beta", "gamma!"])
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == corpus_from_texts(["alpha beta", "gamma"]).fingerprint


def test_user_corpora_text_folder_jsonl(tmp_path):
    (tmp_path / "one.txt").write_text("para one\n\npara two\n")
    c = load_corpus(tmp_path / "one.txt")
    assert "para one" in c.documents[0].text and "para two" in c.documents[0].text
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first file")
    (folder / "sub" / "b.md").write_text("second file")
    (folder / ".hidden.txt").write_text("skip me")
    (folder / "blob.bin").write_bytes(b"\0\1\2")
    c = load_corpus(folder)
    assert [(d.name, d.text) for d in c.documents] == [("a.txt", "first file"), ("sub/b.md", "second file")]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(["x y", "z w"])) + "\n")
    c = load_corpus(jl, text_field="body")
    assert [d.text for d in c.documents] == ["x y", "z w"]
    with pytest.raises(UniversalityError, match="no 'text' field"):
        load_corpus(jl)


def test_bad_corpora_are_one_clear_error(tmp_path):
    with pytest.raises(UniversalityError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(UniversalityError, match="empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"abc\0def")
    with pytest.raises(UniversalityError, match="binary"):
        load_corpus(tmp_path / "bin.txt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UniversalityError, match="no readable text"):
        load_corpus(tmp_path / "emptydir")
    with pytest.raises(UniversalityError, match="heldout_percent"):
        load_corpus("default", heldout_percent=100)


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one doc", "two doc"], "n": [1, 2]}).save_to_disk(str(tmp_path / "ds"))
    c = load_corpus(tmp_path / "ds")
    assert [d.text for d in c.documents] == ["one doc", "two doc"]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["a b", "c d"]}),
                               "validation": datasets.Dataset.from_dict({"body": ["e f"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [d.text for d in load_corpus(tmp_path / "dd", text_field="body", hf_split="validation").documents] == ["e f"]
    with pytest.raises(UniversalityError, match="no column 'text'"):
        load_corpus(tmp_path / "dd")
    with pytest.raises(UniversalityError, match="no split 'test'"):
        load_corpus(tmp_path / "dd", text_field="body", hf_split="test")


# ----- token streams ---------------------------------------------------------------------

def test_stream_is_eos_joined_documents_in_seeded_order(small, bpe_a):
    small = corpus_from_texts([d.text[:150 + 7 * i] for i, d in enumerate(small.documents)])
    cfg = StreamConfig(seq_len=64, n_sequences=30, seed=3)
    s = make_stream(small, bpe_a, cfg)
    assert s.tokens.shape == (30, 64) and s.tokens.dtype == torch.long
    eos = bpe_a.eos_token_id
    assert torch.equal(s.mask, s.tokens != eos)
    # reference: every complete EOS-delimited piece decodes to exactly one corpus document
    flat = s.tokens.view(-1).tolist()
    cuts = [i for i, t in enumerate(flat) if t == eos]
    assert len(cuts) >= 2
    texts = {d.text for d in small.documents}
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        assert bpe_a.decode(flat[lo + 1:hi]) in texts
    head = bpe_a.decode(flat[:cuts[0]])
    assert any(t.startswith(head) for t in texts)
    again = make_stream(small, bpe_a, cfg)
    assert torch.equal(again.tokens, s.tokens) and again.fingerprint == s.fingerprint
    other = make_stream(small, bpe_a, StreamConfig(seq_len=64, n_sequences=30, seed=4))
    assert not torch.equal(other.tokens, s.tokens) and other.fingerprint != s.fingerprint


def test_stream_save_load_roundtrip(tmp_path, small, bpe_a):
    s = make_stream(small, bpe_a, StreamConfig(seq_len=16, n_sequences=4))
    s.save(tmp_path / "s.safetensors")
    r = type(s).load(tmp_path / "s.safetensors")
    assert torch.equal(r.tokens, s.tokens) and torch.equal(r.mask, s.mask) and r.fingerprint == s.fingerprint


def test_bos_follows_the_tokenizer_template(small, bpe_a):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = bpe_a.backend_tokenizer.__class__.from_str(bpe_a.backend_tokenizer.to_str())
    backend.add_special_tokens(["<s>"])
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    llama_like = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="<|endoftext|>")
    s = make_stream(small, llama_like, StreamConfig(seq_len=32, n_sequences=5))
    assert (s.tokens[:, 0] == bos_id).all() and not s.mask[:, 0].any()
    assert (s.tokens[:, 1:] != bos_id).all()
    plain = make_stream(small, bpe_a, StreamConfig(seq_len=32, n_sequences=5))
    assert torch.equal(s.tokens[:, 1:], plain.tokens.view(-1)[:5 * 31].view(5, 31))
    never = make_stream(small, llama_like, StreamConfig(seq_len=32, n_sequences=5, bos="never"))
    assert torch.equal(never.tokens, plain.tokens)


def test_stream_errors(small, bpe_a):
    with pytest.raises(UniversalityError, match="exceeds the model's context"):
        make_stream(small, bpe_a, StreamConfig(seq_len=64, n_sequences=2), max_len=32)
    with pytest.raises(UniversalityError, match="ask for at most"):
        make_stream(corpus_from_texts(["tiny text"]), bpe_a, StreamConfig(seq_len=64, n_sequences=2))
    with pytest.raises(UniversalityError, match="seq_len"):
        StreamConfig(seq_len=1)
    with pytest.raises(UniversalityError, match="split"):
        StreamConfig(split="test")


def test_tokenizer_fingerprint_is_content_not_name(tmp_path, bpe_a, bpe_b):
    from transformers import AutoTokenizer

    bpe_a.save_pretrained(tmp_path / "copy")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(bpe_a)
    assert tokenizer_fingerprint(bpe_b) != tokenizer_fingerprint(bpe_a)


def test_streams_for_hosts_share_or_refuse(tmp_path, small, bpe_a, bpe_b):
    from transformers import AutoTokenizer

    bpe_a.save_pretrained(tmp_path / "copy")
    h1 = SimpleNamespace(tokenizer=bpe_a, arch="transformer", config=SimpleNamespace(max_position_embeddings=64))
    h2 = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(tmp_path / "copy"), arch="mamba", config=SimpleNamespace())
    h3 = SimpleNamespace(tokenizer=bpe_b, arch="mamba", config=SimpleNamespace())
    out = streams_for_hosts([h1, h2], small, StreamConfig(seq_len=32, n_sequences=4))
    assert out.alignment is None and torch.equal(out.streams[0].tokens, out.streams[1].tokens)
    with pytest.raises(UniversalityError, match="different tokenizers"):
        streams_for_hosts([h1, h3], small, StreamConfig(seq_len=32, n_sequences=4))
    with pytest.raises(UniversalityError, match="context of 64"):
        streams_for_hosts([h1, h2], small, StreamConfig(seq_len=128, n_sequences=4))
    pair = streams_for_hosts([h1, h3], small, StreamConfig(seq_len=32, n_sequences=4), align=True)
    assert pair.alignment is not None and pair.alignment.n_units > 0


# ----- cross-tokenizer alignment ----------------------------------------------------------

def _prefix_lengths(tok, ids):
    """Reference: decoded character length after each token (None where a UTF-8 char is split)."""
    out = []
    for j in range(len(ids)):
        text = tok.decode(ids[:j + 1])
        out.append(None if text.endswith("\ufffd") else len(text))
    return out


def test_alignment_pairs_exactly_the_shared_token_ends(small, bpe_a, bpe_b):
    pair = aligned_streams(small, bpe_a, bpe_b, AlignConfig(seq_len=48, n_sequences=12, seed=1))
    a, b, al = pair
    assert a.tokens.shape == b.tokens.shape == (12, 48)
    t = a.seq_len
    for i in range(a.n_sequences):
        ids_a = a.tokens[i][a.tokens[i] != bpe_a.pad_token_id].tolist()  # padding only at the end
        ids_b = b.tokens[i][b.tokens[i] != bpe_b.pad_token_id].tolist()
        # both sequences hold the same text
        assert bpe_a.decode(ids_a) == bpe_b.decode(ids_b)
        la = _prefix_lengths(bpe_a, ids_a)
        lb = _prefix_lengths(bpe_b, ids_b)
        # reference set: char lengths where both end a (non-special) token, keeping each side's last token there
        end_a = {L: j for j, L in enumerate(la) if L is not None and a.mask[i, j]}
        end_b = {L: j for j, L in enumerate(lb) if L is not None and b.mask[i, j]}
        expect = sorted((i * t + end_a[L], i * t + end_b[L]) for L in set(end_a) & set(end_b))
        sel = (al.rows_a // t) == i
        got = sorted(zip(al.rows_a[sel].tolist(), al.rows_b[sel].tolist()))
        assert got == expect
    # the two tokenizations really differ, and most tokens still find a partner
    assert not torch.equal(a.tokens, b.tokens)
    assert al.n_units > 0.3 * min(int(a.mask.sum()), int(b.mask.sum()))


def test_alignment_with_a_sentencepiece_style_unigram(small, bpe_a, unigram):
    a, b, al = aligned_streams(small, bpe_a, unigram, AlignConfig(seq_len=40, n_sequences=8))
    t = a.seq_len
    strip = lambda s: "".join(s.split())  # noqa: E731  (Metaspace decoding normalises spaces)
    for ra, rb in zip(al.rows_a.tolist(), al.rows_b.tolist()):
        i = ra // t
        assert rb // t == i
        assert strip(bpe_a.decode(a.tokens[i, :ra % t + 1].tolist())) == strip(unigram.decode(b.tokens[i, :rb % t + 1].tolist()))
    assert al.n_units > 0.2 * int(a.mask.sum())


def test_word_pooling_averages_the_tokens_of_each_word(small, bpe_a, unigram):
    a, b, al = aligned_streams(small, bpe_a, unigram, AlignConfig(seq_len=40, n_sequences=6, pool="word"))
    strip = lambda s: "".join(s.split())  # noqa: E731
    for k in range(al.n_units):
        wa = al.members_a[al.group_a == k].tolist()
        wb = al.members_b[al.group_b == k].tolist()
        assert wa == list(range(wa[0], wa[-1] + 1)) and wb == list(range(wb[0], wb[-1] + 1))
        word_a = strip(bpe_a.decode(a.tokens.view(-1)[wa].tolist()))
        word_b = strip(unigram.decode(b.tokens.view(-1)[wb].tolist()))
        assert word_a == word_b and word_a
    acts_a = torch.randn(a.tokens.numel(), 5, dtype=torch.float64)
    acts_b = torch.randn(b.tokens.numel(), 3, dtype=torch.float64)
    xa, xb = al.take(acts_a, acts_b)
    assert xa.shape == (al.n_units, 5) and xb.shape == (al.n_units, 3)
    k = al.n_units // 2
    ref = acts_a[al.members_a[al.group_a == k]].numpy().mean(axis=0)
    assert torch.allclose(xa[k], torch.from_numpy(ref))
