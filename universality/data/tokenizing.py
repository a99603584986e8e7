"""Tokenizer helpers: a content fingerprint, special ids, BOS policy, and exact character offsets.

Two hosts "share a tokenizer" when their fingerprints match: the hash covers the
vocabulary, merges, normalizer, pre-tokenizer, added tokens and special ids,
never the tokenizer's name or path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .._errors import UniversalityError
from .._io import fingerprint

BOS_POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class SpecialIds:
    """Special token ids of a tokenizer (``None`` where it has none)."""

    bos: int | None
    """Beginning-of-sequence id."""
    eos: int | None
    """End-of-sequence / document separator id."""
    pad: int | None
    """Padding id (falls back to ``eos`` when the tokenizer has no pad token)."""


def _backend(tokenizer: Any):
    """The ``tokenizers.Tokenizer`` behind an HF fast tokenizer (or the object itself)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    bt = getattr(tokenizer, "backend_tokenizer", None)
    if bt is None:
        raise UniversalityError(
            f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer; load it with use_fast=True or save a tokenizer.json"
        )
    return bt


def _canonical_json(tokenizer: Any) -> dict:
    spec = json.loads(_backend(tokenizer).to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return spec


def special_ids(tokenizer: Any) -> SpecialIds:
    """Bos/eos/pad ids of an HF tokenizer (pad falls back to eos)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    return SpecialIds(bos, eos, pad if pad is not None else eos)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """16-hex hash of what decides token ids: the backend spec (vocab, merges, normalizers, added tokens) and special ids."""
    if tokenizer is None:
        raise UniversalityError("this host has no tokenizer; save one next to the checkpoint (tokenizer.json)")
    ids = special_ids(tokenizer)
    body = hashlib.sha256(json.dumps(_canonical_json(tokenizer), sort_keys=True).encode()).hexdigest()
    return fingerprint({"backend": body, "bos": ids.bos, "eos": ids.eos, "pad": ids.pad})


def adds_bos(tokenizer: Any, policy: str = "auto") -> bool:
    """Whether sequences for this tokenizer start with BOS.

    ``"auto"`` follows how the model was trained, read off the tokenizer: BOS is
    prepended when encoding text with special tokens puts it first (Llama style);
    GPT-2/NeoX-style tokenizers, trained on EOS-separated text, get none.
    """
    if policy not in BOS_POLICIES:
        raise UniversalityError(f"bos policy '{policy}' is not valid; use one of {', '.join(BOS_POLICIES)}")
    bos = special_ids(tokenizer).bos
    if policy == "never":
        return False
    if bos is None:
        if policy == "always":
            raise UniversalityError("bos='always' was asked for but the tokenizer has no BOS token; use bos='auto' or 'never'")
        return False
    if policy == "always":
        return True
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except TypeError:
        return False
    return bool(ids) and ids[0] == bos


class OffsetEncoder:
    """Encodes text to ids with exact ``(start, end)`` character spans per token.

    Uses a copy of the backend tokenizer with offset trimming switched off, so a
    token's span covers every character it stands for (leading spaces and
    newlines included); the ids are those of the original tokenizer without
    special tokens.
    """

    def __init__(self, tokenizer: Any):
        from tokenizers import Tokenizer

        spec = _canonical_json(tokenizer)
        _untrim(spec)
        self._tok = Tokenizer.from_str(json.dumps(spec))

    def encode_batch(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids and character spans for each text (no special tokens)."""
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [(list(e.ids), list(e.offsets)) for e in encs]


def _untrim(node: Any) -> None:
    if isinstance(node, dict):
        if "trim_offsets" in node:
            node["trim_offsets"] = False
        for v in node.values():
            _untrim(v)
    elif isinstance(node, list):
        for v in node:
            _untrim(v)
