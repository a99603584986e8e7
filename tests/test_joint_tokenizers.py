"""Joint dictionaries across three different tokenizers: streams aligned at the token ends all of them share."""

from __future__ import annotations

import pytest
import torch

from universality import UniversalityError, reports
from universality.cli import main
from universality.data import AlignConfig, aligned_streams_all, corpus_from_texts
from universality.data.bpe import train_byte_bpe
from test_compare_tokenizers import _model

TEXT = "\n\n".join(
    f"def function_{i}(value, other):\n    \"\"\"Return the sum of value and other, times {i}.\"\"\"\n"
    f"    result = (value + other) * {i}\n    return result\n" for i in range(300))
VOCABS = (270, 300, 420)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizers():
    toks = [train_byte_bpe([TEXT], vocab_size=v) for v in VOCABS]
    ids = [tuple(t(TEXT[:2000])["input_ids"]) for t in toks]
    assert len(set(ids)) == 3 and len({len(i) for i in ids}) == 3  # three genuinely different tokenizations
    return toks


def test_rows_aligned_across_three_tokenizers_have_read_the_same_text(tokenizers):
    corpus = corpus_from_texts(TEXT.split("\n\n"))
    multi = aligned_streams_all(corpus, tokenizers, AlignConfig(seq_len=32, n_sequences=6, seed=0))
    n = multi.n_units
    assert n > 20 and all(r.numel() == n for r in multi.rows)
    # the tokenizers' own decode of each stream's tokens, from its window start through the aligned row, is the same text
    checked = 0
    for k in range(0, n, max(1, n // 25)):
        texts = []
        for tok, stream, rows in zip(tokenizers, multi.streams, multi.rows):
            seq, pos = divmod(int(rows[k]), stream.seq_len)
            first = int(stream.mask[seq].nonzero()[0])
            texts.append(tok.decode(stream.tokens[seq, first:pos + 1].tolist()))
        assert texts[0] == texts[1] == texts[2], texts
        checked += 1
    lengths = {len(t) for t in texts}
    print(f"\n{n} rows aligned across three tokenizers (vocab {VOCABS}); {checked} checked by decoding, e.g. {texts[0][-30:]!r}")
    assert checked > 10 and lengths
    with pytest.raises(UniversalityError, match="pool 'word' is not available"):
        aligned_streams_all(corpus, tokenizers, AlignConfig(seq_len=32, n_sequences=2, pool="word"))
    with pytest.raises(UniversalityError, match="at least two tokenizers"):
        aligned_streams_all(corpus, tokenizers[:1], AlignConfig(seq_len=32, n_sequences=2))


def test_compare_joint_across_three_tokenizers(tokenizers, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    paths = [_model(tmp_path, n, t, s) for n, t, s in zip("abc", tokenizers, (0, 1, 2))]
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, paths), "--names", "a,b,c", "--corpus", str(corpus), "--n-tokens", "1024",
                 "--n-latents", "32", "--k", "4", "--n-boot", "0", "--sae-epochs", "1", "--layers", "1", "--no-floor",
                 "--no-sae-seed-skyline", "--joint", "crosscoder", "--out", str(out), "--quiet"]) == 0
    res = reports.load_results(out)
    j = res["joint"]
    assert j["models"] == ["a", "b", "c"] and j["n_rows"] > 0
    assert len(j["cross_r2"]) == 3 and set(j["lm_loss"]) == {"a", "b", "c"}
    assert len(res["pairs"]) == 3 and all(p["a_to_b"]["n"] > 0 for p in res["pairs"])
    print(f"\njoint crosscoder over three tokenizers: {j['n_rows']} aligned rows, classes "
          f"{ {k: v['count'] for k, v in j['classes'].items()} }, cross-R² {j['cross_r2_mean']:.3f}")
