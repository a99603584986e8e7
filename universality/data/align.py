"""Cross-tokenizer alignment: compare two models at the character offsets where both tokenizations end a token.

Two tokenizers cut the same text differently, so activation row *i* of one model
is not row *i* of the other. This module builds a pair of token streams over
exactly the same text (documents joined by EOS in both, windows cut only where
both tokenizations have a clean boundary) and the index maps that pair rows up:
``rows_a[k]`` and ``rows_b[k]`` are the flat positions (``sequence * seq_len +
position``) of the tokens of A and B that end at the same character, so both
models have read exactly the same prefix there. With ``pool="word"`` the unit
is a whitespace-delimited word instead: tokens are grouped by the word holding
their last non-space character and :meth:`Alignment.take` averages each group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import UniversalityError
from .corpus import SPLITS, Corpus
from .stream import TokenStream, shuffled_documents, special_mask
from .tokenizing import BOS_POLICIES, OffsetEncoder, adds_bos, special_ids, tokenizer_fingerprint

POOLS = ("token", "word")
_DOC_BATCH = 8


@dataclass(frozen=True)
class AlignConfig:
    """How to build an aligned pair of streams."""

    seq_len: int = 128
    """Tokens per sequence in both streams, BOS included (windows are padded up to it)."""
    n_sequences: int = 64
    """Number of sequences in each stream."""
    seed: int = 0
    """Seed of the document order."""
    split: str = "all"
    """Corpus split: ``"train"``, ``"heldout"`` or ``"all"``."""
    bos: str = "auto"
    """BOS policy applied to each tokenizer: ``"auto"``, ``"always"``, ``"never"``."""
    pool: str = "token"
    """Unit of comparison: ``"token"`` (shared token ends) or ``"word"`` (whitespace-delimited words, averaged)."""

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 4:
            raise UniversalityError(f"seq_len {self.seq_len!r} is not valid for an aligned stream; use an integer of at least 4")
        if not isinstance(self.n_sequences, int) or self.n_sequences < 1:
            raise UniversalityError(f"n_sequences {self.n_sequences!r} is not valid; use a positive integer")
        if self.split not in SPLITS:
            raise UniversalityError(f"split '{self.split}' is not valid; use one of {', '.join(SPLITS)}")
        if self.bos not in BOS_POLICIES:
            raise UniversalityError(f"bos '{self.bos}' is not valid; use one of {', '.join(BOS_POLICIES)}")
        if self.pool not in POOLS:
            raise UniversalityError(f"pool '{self.pool}' is not valid; use one of {', '.join(POOLS)}")


@dataclass
class Alignment:
    """Index maps pairing rows of stream A with rows of stream B.

    Rows are flat positions ``sequence * seq_len + position`` into each stream's
    ``tokens.view(-1)`` (the row order of an activation store).
    """

    rows_a: torch.Tensor
    """LongTensor [m]: row of A for each aligned unit (for words: the word's last token)."""
    rows_b: torch.Tensor
    """LongTensor [m]: row of B for each aligned unit."""
    text_end: torch.Tensor
    """LongTensor [m]: offset, in the joined text of the window's documents, where both have read up to."""
    pool: str = "token"
    """``"token"`` or ``"word"``."""
    members_a: torch.Tensor | None = None
    """For ``pool="word"``: LongTensor [k_a] rows of A that belong to some word."""
    group_a: torch.Tensor | None = None
    """For ``pool="word"``: LongTensor [k_a] word index (0..m-1) of each row in ``members_a``."""
    members_b: torch.Tensor | None = None
    """For ``pool="word"``: LongTensor [k_b] rows of B that belong to some word."""
    group_b: torch.Tensor | None = None
    """For ``pool="word"``: LongTensor [k_b] word index of each row in ``members_b``."""

    @property
    def n_units(self) -> int:
        return int(self.rows_a.numel())

    def take(self, acts_a: torch.Tensor, acts_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Paired activations: ``acts_a`` [n_a*t_a, d_a], ``acts_b`` [n_b*t_b, d_b] → ([m, d_a], [m, d_b]).

        For ``pool="token"`` the rows are picked; for ``"word"`` each word's tokens are averaged.
        """
        if self.pool == "token":
            return acts_a[self.rows_a], acts_b[self.rows_b]
        return _group_mean(acts_a, self.members_a, self.group_a, self.n_units), _group_mean(acts_b, self.members_b, self.group_b, self.n_units)


def _group_mean(acts: torch.Tensor, members: torch.Tensor, group: torch.Tensor, m: int) -> torch.Tensor:
    x = acts[members]
    out = torch.zeros((m,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    out.index_add_(0, group.to(x.device), x)
    counts = torch.bincount(group, minlength=m).clamp_min(1).to(x.dtype).to(x.device)
    return out / counts.view(-1, *([1] * (x.dim() - 1)))


class AlignedPair(NamedTuple):
    """Two streams over the same text and the alignment between them."""

    a: TokenStream
    b: TokenStream
    alignment: Alignment


class _Tokenized:
    """One tokenizer's view of the joined documents: ids and global character spans."""

    def __init__(self, tokenizer: Any, policy: str):
        self.encoder = OffsetEncoder(tokenizer)
        self.ids = special_ids(tokenizer)
        self.bos = adds_bos(tokenizer, policy)
        self.tok: list[int] = []
        self.start: list[int] = []
        self.end: list[int] = []

    def add(self, texts: list[str], bases: list[int]) -> None:
        for (ids, spans), base, text in zip(self.encoder.encode_batch(texts), bases, texts):
            self.tok.extend(ids)
            self.start.extend(base + s for s, _ in spans)
            self.end.extend(base + e for _, e in spans)
            # EOS stands for one virtual character after the document
            self.tok.append(self.ids.eos if self.ids.eos is not None else -1)
            self.start.append(base + len(text))
            self.end.append(base + len(text) + 1)

    def boundaries(self) -> tuple[np.ndarray, np.ndarray]:
        """Clean boundaries: sorted text offsets c and the number of tokens that exactly cover text[:c]."""
        end = np.maximum.accumulate(np.asarray(self.end, dtype=np.int64))
        start = np.asarray(self.start, dtype=np.int64)
        suffix_min = np.minimum.accumulate(start[::-1])[::-1]
        nxt = np.append(suffix_min[1:], np.iinfo(np.int64).max)
        j = np.nonzero(nxt >= end)[0]
        c = end[j]
        last = np.append(c[1:] != c[:-1], True)  # several tokens may end at c: keep the last
        return c[last], j[last] + 1


def _shared(A: "_Tokenized", B: "_Tokenized") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets where both have a clean boundary, with A's and B's token counts there."""
    c, (na, nb) = _shared_all([A, B])
    return c, na, nb


def _shared_all(sides: list["_Tokenized"]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Offsets where every tokenization has a clean boundary, with each one's token count there."""
    bounds = [t.boundaries() for t in sides]
    c = bounds[0][0]
    for cm, _ in bounds[1:]:
        c = np.intersect1d(c, cm, assume_unique=True)
    return c, [n[np.searchsorted(cm, c)] for cm, n in bounds]


def aligned_streams(corpus: Corpus, tokenizer_a: Any, tokenizer_b: Any, config: AlignConfig | None = None) -> AlignedPair:
    """Build streams for two tokenizers over identical text, plus the :class:`Alignment` of their rows.

    Returns an :class:`AlignedPair` ``(a, b, alignment)``; ``a.tokens`` and
    ``b.tokens`` are [n_sequences, seq_len] (padded, pad masked out).
    """
    config = config or AlignConfig()
    A, B = _Tokenized(tokenizer_a, config.bos), _Tokenized(tokenizer_b, config.bos)
    if A.ids.eos is None or B.ids.eos is None:
        raise UniversalityError("cross-tokenizer alignment needs both tokenizers to have an EOS token to separate documents")
    body_a, body_b = config.seq_len - int(A.bos), config.seq_len - int(B.bos)
    texts, windows = _tokenize_until([A, B], corpus, config, lambda: _cut_windows(A, B, body_a, body_b, config.n_sequences))
    if len(windows) < config.n_sequences:
        raise UniversalityError(
            f"the {config.split} split of corpus '{corpus.source}' yields only {len(windows)} aligned sequences of {config.seq_len}; "
            f"ask for at most {len(windows)}"
        )
    joined = "\n".join(texts) + "\n"  # one separator char per EOS keeps offsets = bases
    return _assemble(A, B, windows, joined, tokenizer_a, tokenizer_b, corpus, config)


def _tokenize_until(sides: list[_Tokenized], corpus: Corpus, config: AlignConfig, cut) -> tuple[list[str], list]:
    """Feed the shuffled documents to every side, a batch at a time, until ``cut()`` yields ``n_sequences`` windows."""
    docs = shuffled_documents(corpus, config.split, config.seed)
    texts: list[str] = []
    pos = 0
    windows: list = []
    for start in range(0, len(docs), _DOC_BATCH):
        batch = [d.text for d in docs[start:start + _DOC_BATCH]]
        bases = []
        for t in batch:
            bases.append(pos)
            pos += len(t) + 1
        texts += batch
        for side in sides:
            side.add(batch, bases)
        windows = cut()
        if len(windows) >= config.n_sequences:
            break
    return texts, windows


def _cut_windows(A: _Tokenized, B: _Tokenized, body_a: int, body_b: int, want: int):
    """Greedy windows between shared boundaries: (c_start, c_end, a_from, a_to, b_from, b_to)."""
    return [(c0, c1, *spans[0], *spans[1]) for c0, c1, spans in _cut_windows_all([A, B], [body_a, body_b], want)]


def _cut_windows_all(sides: list[_Tokenized], bodies: list[int], want: int):
    """Greedy windows between boundaries shared by every tokenization: (c_start, c_end, [(from_m, to_m) per side])."""
    shared, counts = _shared_all(sides)
    out = []
    cur_c, cur, q = 0, [0] * len(sides), 0
    while len(out) < want and q < len(shared):
        # furthest shared boundary whose window fits every budget (counts are non-decreasing)
        last = min(int(np.searchsorted(n, c + body, side="right")) - 1 for n, c, body in zip(counts, cur, bodies))
        if last < q:
            # no shared boundary within budget: drop the text up to the next shared boundary
            cur_c, cur, q = int(shared[q]), [int(n[q]) for n in counts], q + 1
            continue
        out.append((cur_c, int(shared[last]), [(c, int(n[last])) for c, n in zip(cur, counts)]))
        cur_c, cur, q = int(shared[last]), [int(n[last]) for n in counts], last + 1
    return out


def _assemble(A, B, windows, joined, tok_a, tok_b, corpus, config) -> AlignedPair:
    windows = windows[:config.n_sequences]
    spans = [[(w[2], w[3]), (w[4], w[5])] for w in windows]
    sa, sb = _make_streams([A, B], [tok_a, tok_b], spans, corpus, config, ["a", "b"])
    if config.pool == "token":
        alignment = _token_alignment(A, B, windows, sa, sb, config.seq_len)
    else:
        alignment = _word_alignment(A, B, windows, sa, sb, config.seq_len, joined)
    return AlignedPair(sa, sb, alignment)


def _make_streams(sides, tokenizers, spans, corpus, config, tags) -> list[TokenStream]:
    """One padded, masked stream per side; ``spans[i][m]`` is side m's token range of window i."""
    n, t = config.n_sequences, config.seq_len
    streams = []
    for m, (side, tokenizer) in enumerate(zip(sides, tokenizers)):
        pad = side.ids.pad if side.ids.pad is not None else side.ids.eos
        tokens = torch.full((n, t), pad, dtype=torch.long)
        off = int(side.bos)
        for i, sp in enumerate(spans):
            lo, hi = sp[m]
            if side.bos:
                tokens[i, 0] = side.ids.bos
            tokens[i, off:off + hi - lo] = torch.tensor(side.tok[lo:hi], dtype=torch.long)
        mask = special_mask(tokens, tokenizer)
        for i, sp in enumerate(spans):  # padding is masked even when pad == a real id
            lo, hi = sp[m]
            mask[i, off + hi - lo:] = False
        cfg = {"kind": "aligned", "side": tags[m], **asdict(config)}
        streams.append(TokenStream(tokens, mask, tokenizer_fingerprint(tokenizer), corpus.fingerprint, cfg))
    return streams


def _token_alignment(A, B, windows, sa, sb, t) -> Alignment:
    shared, na, nb = _shared(A, B)
    rows_a, rows_b, ends = [], [], []
    mask_a, mask_b = sa.mask.view(-1), sb.mask.view(-1)
    for i, (c0, c1, a0, _, b0, _) in enumerate(windows):
        lo, hi = np.searchsorted(shared, c0, side="right"), np.searchsorted(shared, c1, side="right")
        for c, ka, kb in zip(shared[lo:hi], na[lo:hi], nb[lo:hi]):
            ra = i * t + int(A.bos) + int(ka) - 1 - a0
            rb = i * t + int(B.bos) + int(kb) - 1 - b0
            if mask_a[ra] and mask_b[rb]:
                rows_a.append(ra)
                rows_b.append(rb)
                ends.append(int(c))
    return Alignment(torch.tensor(rows_a, dtype=torch.long), torch.tensor(rows_b, dtype=torch.long),
                     torch.tensor(ends, dtype=torch.long), "token")


def _word_ids(joined: str) -> np.ndarray:
    """Word index of every character of ``joined`` (-1 on whitespace)."""
    is_word = np.array([not ch.isspace() for ch in joined], dtype=bool)
    starts = is_word & ~np.concatenate([[False], is_word[:-1]])
    ids = np.cumsum(starts) - 1
    return np.where(is_word, ids, -1)


def _word_alignment(A, B, windows, sa, sb, t, joined) -> Alignment:
    wid = _word_ids(joined)
    chars = np.nonzero(wid >= 0)[0]
    word_end = np.zeros(int(wid.max()) + 1 if chars.size else 0, dtype=np.int64)
    np.maximum.at(word_end, wid[chars], chars + 1)

    def groups(side, stream, lo, hi, i):
        out: dict[int, list[int]] = {}
        flat_mask = stream.mask.view(-1)
        for j in range(lo, hi):
            s, e = side.start[j], min(side.end[j], len(wid))
            row = i * t + int(side.bos) + j - lo
            if not flat_mask[row] or e <= s:
                continue
            w = wid[s:e]
            w = w[w >= 0]
            if w.size:
                out.setdefault(int(w[-1]), []).append(row)
        return out

    rows_a, rows_b, ends, mem_a, grp_a, mem_b, grp_b = [], [], [], [], [], [], []
    for i, (c0, c1, a0, a1, b0, b1) in enumerate(windows):
        ga, gb = groups(A, sa, a0, a1, i), groups(B, sb, b0, b1, i)
        for w in sorted(set(ga) & set(gb)):
            # a word cut by the window edge is not comparable
            if (c0 > 0 and wid[c0 - 1] == w) or (c1 < len(wid) and wid[c1] == w):
                continue
            k = len(rows_a)
            rows_a.append(ga[w][-1])
            rows_b.append(gb[w][-1])
            ends.append(int(word_end[w]))
            mem_a += ga[w]
            grp_a += [k] * len(ga[w])
            mem_b += gb[w]
            grp_b += [k] * len(gb[w])
    L = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return Alignment(L(rows_a), L(rows_b), L(ends), "word", L(mem_a), L(grp_a), L(mem_b), L(grp_b))


@dataclass
class MultiAlignment:
    """Rows of M streams at the token ends that every tokenization shares (the intersection of their clean boundaries).

    ``rows[m][k]`` is the flat row of stream m whose token ends at character ``text_end[k]``: every model has read
    exactly the same text there. Any two of them form an :class:`Alignment` (:meth:`pair`, :meth:`rows_for`).
    """

    rows: list[torch.Tensor]
    """One LongTensor [n] per stream, in the order the tokenizers were given."""
    text_end: torch.Tensor
    """LongTensor [n]: offset in the joined text where every stream has read up to."""
    streams: list[TokenStream]
    """The aligned streams (``rows[m]`` indexes ``streams[m]``)."""

    @property
    def n_units(self) -> int:
        """Number of aligned rows (the same in every stream)."""
        return int(self.text_end.numel())

    def rows_for(self, stream: TokenStream) -> torch.Tensor:
        """The aligned rows of ``stream`` (one of :attr:`streams`, found by identity)."""
        for s, r in zip(self.streams, self.rows):
            if s is stream:
                return r
        raise UniversalityError("this stream is not one of the aligned streams; build them together with aligned_streams_all")

    def pair(self, i: int, j: int) -> Alignment:
        """The two-stream :class:`Alignment` of streams ``i`` and ``j`` on the rows every stream shares."""
        return Alignment(self.rows[i], self.rows[j], self.text_end, "token")


def aligned_streams_all(corpus: Corpus, tokenizers: list[Any], config: AlignConfig | None = None) -> MultiAlignment:
    """Streams for M ≥ 2 tokenizers over identical text, aligned at the token ends all of them share.

    Windows are cut only at boundaries clean in every tokenization, so each sequence of every stream covers the
    same text; ``pool="token"`` only. Returns a :class:`MultiAlignment` holding the streams and their rows.
    """
    config = config or AlignConfig()
    if config.pool != "token":
        raise UniversalityError(f"pool '{config.pool}' is not available across more than two tokenizers; use pool='token'")
    if not isinstance(tokenizers, (list, tuple)) or len(tokenizers) < 2:
        raise UniversalityError("give at least two tokenizers to align")
    sides = [_Tokenized(t, config.bos) for t in tokenizers]
    if any(s.ids.eos is None for s in sides):
        raise UniversalityError("cross-tokenizer alignment needs every tokenizer to have an EOS token to separate documents")
    bodies = [config.seq_len - int(s.bos) for s in sides]
    _, windows = _tokenize_until(sides, corpus, config, lambda: _cut_windows_all(sides, bodies, config.n_sequences))
    if len(windows) < config.n_sequences:
        raise UniversalityError(
            f"the {config.split} split of corpus '{corpus.source}' yields only {len(windows)} sequences of {config.seq_len} aligned "
            f"across {len(sides)} tokenizers; ask for at most {len(windows)}"
        )
    windows = windows[:config.n_sequences]
    streams = _make_streams(sides, tokenizers, [w[2] for w in windows], corpus, config, [str(m) for m in range(len(sides))])
    shared, counts = _shared_all(sides)
    t = config.seq_len
    masks = [s.mask.view(-1) for s in streams]
    rows: list[list[int]] = [[] for _ in sides]
    ends = []
    for i, (c0, c1, spans) in enumerate(windows):
        lo, hi = np.searchsorted(shared, c0, side="right"), np.searchsorted(shared, c1, side="right")
        for q in range(lo, hi):
            r = [i * t + int(s.bos) + int(n[q]) - 1 - sp[0] for s, n, sp in zip(sides, counts, spans)]
            if all(bool(mk[x]) for mk, x in zip(masks, r)):
                for m, x in enumerate(r):
                    rows[m].append(x)
                ends.append(int(shared[q]))
    return MultiAlignment([torch.tensor(r, dtype=torch.long) for r in rows], torch.tensor(ends, dtype=torch.long), streams)
