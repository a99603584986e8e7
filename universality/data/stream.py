"""Token streams: fixed-length, seeded sequences of token ids with a mask of the positions that count.

Documents of the chosen split are shuffled with the seed, tokenized, joined
with the EOS token (the way GPT-2/NeoX/Mamba models were trained), and cut into
windows of ``seq_len`` tokens (``seq_len - 1`` plus a BOS when the model expects
one). ``mask`` is False at BOS, EOS and pad positions so they stay out of every
statistic. Same corpus + same tokenizer fingerprint + same config → the same
stream, byte for byte.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import UniversalityError
from .._io import atomic_save_tensors, fingerprint, load_tensors
from .corpus import SPLITS, Corpus, Document
from .tokenizing import BOS_POLICIES, OffsetEncoder, adds_bos, special_ids, tokenizer_fingerprint

_DOC_BATCH = 64


@dataclass(frozen=True)
class StreamConfig:
    """How to cut a corpus into sequences."""

    seq_len: int = 128
    """Tokens per sequence, BOS included (must fit the model's context)."""
    n_sequences: int = 64
    """Number of sequences; ``n_sequences * seq_len`` tokens in all."""
    seed: int = 0
    """Seed of the document order (same seed → same stream)."""
    split: str = "all"
    """Corpus split to read: ``"train"``, ``"heldout"`` or ``"all"``."""
    bos: str = "auto"
    """``"auto"`` (as the model was trained, read off the tokenizer), ``"always"`` or ``"never"``."""

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise UniversalityError(f"seq_len {self.seq_len!r} is not valid; use an integer of at least 2")
        if not isinstance(self.n_sequences, int) or self.n_sequences < 1:
            raise UniversalityError(f"n_sequences {self.n_sequences!r} is not valid; use a positive integer")
        if not isinstance(self.seed, int):
            raise UniversalityError(f"seed {self.seed!r} is not valid; use an integer")
        if self.split not in SPLITS:
            raise UniversalityError(f"split '{self.split}' is not valid; use one of {', '.join(SPLITS)}")
        if self.bos not in BOS_POLICIES:
            raise UniversalityError(f"bos '{self.bos}' is not valid; use one of {', '.join(BOS_POLICIES)}")

    @classmethod
    def for_tokens(cls, n_tokens: int, seq_len: int = 128, **kw) -> "StreamConfig":
        """The config with enough sequences of ``seq_len`` to hold at least ``n_tokens`` tokens."""
        if not isinstance(n_tokens, int) or n_tokens < 1:
            raise UniversalityError(f"n_tokens {n_tokens!r} is not valid; use a positive integer")
        return cls(seq_len=seq_len, n_sequences=-(-n_tokens // seq_len), **kw)


@dataclass
class TokenStream:
    """Fixed-length token sequences with their mask and provenance."""

    tokens: torch.Tensor
    """Token ids, LongTensor [n_sequences, seq_len]."""
    mask: torch.Tensor
    """BoolTensor [n_sequences, seq_len]: True where a position counts (not BOS/EOS/pad)."""
    tokenizer_fingerprint: str
    """Fingerprint of the tokenizer that produced the ids."""
    corpus_fingerprint: str
    """Fingerprint of the corpus the text came from."""
    config: dict
    """The :class:`StreamConfig` (or aligned-stream config) as a dict."""

    @property
    def fingerprint(self) -> str:
        """16-hex hash of the ids and mask plus provenance: equal fingerprints mean identical streams."""
        import hashlib

        h = hashlib.sha256(self.tokens.numpy().tobytes())
        h.update(self.mask.numpy().tobytes())
        return fingerprint({"ids": h.hexdigest(), "tok": self.tokenizer_fingerprint, "corpus": self.corpus_fingerprint})

    @property
    def n_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def describe(self) -> dict:
        """JSON-able provenance: fingerprints, shape, counted positions, config."""
        return {"fingerprint": self.fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "corpus_fingerprint": self.corpus_fingerprint, "n_sequences": self.n_sequences,
                "seq_len": self.seq_len, "n_counted": int(self.mask.sum()), "config": self.config}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ids and mask to a safetensors file (provenance in its metadata), atomically."""
        import json

        # a single metadata key: safetensors orders several keys at random, and these files must be byte-stable
        meta = json.dumps({"tokenizer_fingerprint": self.tokenizer_fingerprint, "corpus_fingerprint": self.corpus_fingerprint,
                           "config": self.config}, sort_keys=True)
        return atomic_save_tensors(path, {"tokens": self.tokens, "mask": self.mask.to(torch.uint8)}, {"universality": meta})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenStream":
        """Read a stream written by :meth:`save`."""
        import json

        from safetensors import safe_open

        t = load_tensors(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "tokens" not in t or "mask" not in t:
            raise UniversalityError(f"'{path}' is not a token-stream file (needs 'tokens' and 'mask' tensors)")
        info = json.loads(meta.get("universality", "{}"))
        return cls(t["tokens"].long(), t["mask"].bool(), info.get("tokenizer_fingerprint", ""),
                   info.get("corpus_fingerprint", ""), info.get("config", {}))


def shuffled_documents(corpus: Corpus, split: str, seed: int) -> list[Document]:
    """The documents of ``split`` in a seeded random order (Python's Mersenne Twister, stable across versions)."""
    docs = corpus.split(split)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order]


def make_stream(corpus: Corpus, tokenizer: Any, config: StreamConfig | None = None, *, max_len: int | None = None) -> TokenStream:
    """Cut ``corpus`` into ``config.n_sequences`` sequences of ``config.seq_len`` ids for ``tokenizer``.

    Returns a :class:`TokenStream` with ``tokens`` [n, seq_len] and ``mask`` [n, seq_len].
    ``max_len`` (the model's context) turns a too-long ``seq_len`` into a clear error.
    """
    config = config or StreamConfig()
    if max_len is not None and config.seq_len > max_len:
        raise UniversalityError(f"seq_len {config.seq_len} exceeds the model's context of {max_len} positions; use seq_len <= {max_len}")
    ids = special_ids(tokenizer)
    bos = adds_bos(tokenizer, config.bos)
    body = config.seq_len - (1 if bos else 0)
    need = config.n_sequences * body
    encoder = OffsetEncoder(tokenizer)
    docs = shuffled_documents(corpus, config.split, config.seed)
    flat: list[int] = []
    for start in range(0, len(docs), _DOC_BATCH):
        batch = docs[start:start + _DOC_BATCH]
        for (doc_ids, _), _doc in zip(encoder.encode_batch([d.text for d in batch]), batch):
            flat.extend(doc_ids)
            if ids.eos is not None:
                flat.append(ids.eos)
        if len(flat) >= need:
            break
    if len(flat) < need:
        raise UniversalityError(
            f"the {config.split} split of corpus '{corpus.source}' has only {len(flat)} tokens but {config.n_sequences} "
            f"sequences of {config.seq_len} need {need}; ask for at most {len(flat) // body} sequences"
        )
    body_ids = torch.tensor(flat[:need], dtype=torch.long).view(config.n_sequences, body)
    if bos:
        tokens = torch.cat([torch.full((config.n_sequences, 1), ids.bos, dtype=torch.long), body_ids], dim=1)
    else:
        tokens = body_ids
    return TokenStream(tokens, special_mask(tokens, tokenizer), tokenizer_fingerprint(tokenizer), corpus.fingerprint,
                       {"kind": "stream", **asdict(config)})


def special_mask(tokens: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """BoolTensor like ``tokens``: False where the id is the tokenizer's BOS, EOS or pad."""
    ids = special_ids(tokenizer)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for s in {ids.bos, ids.eos, ids.pad} - {None}:
        mask &= tokens != s
    return mask


def context_length(host: Any) -> int | None:
    """The longest sequence ``host`` accepts (``None`` when unbounded, e.g. Mamba).

    Reads the host's public ``max_positions``; an object without one (a stand-in
    host) falls back to its config's ``max_position_embeddings``/``n_positions``
    when it is a transformer.
    """
    if hasattr(host, "max_positions"):
        n = host.max_positions
        return None if n is None else int(n)
    cfg = getattr(host, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0 and getattr(host, "arch", "transformer") == "transformer":
            return n
    return None
