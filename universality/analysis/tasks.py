"""Synthetic token tasks for the circuit analyses: induction prompts and repeated halves.

All tasks draw token ids uniformly from ``[low, vocab_size)`` without repeats
inside one sequence, so "the next token after the earlier copy" is unambiguous.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._errors import UniversalityError


def distinct_tokens(n: int, length: int, vocab_size: int, generator: torch.Generator, low: int = 0) -> torch.Tensor:
    """``n`` rows of ``length`` distinct token ids drawn uniformly from ``[low, vocab_size)``.

    Returns:
        LongTensor ``[n, length]``.
    """
    span = vocab_size - low
    if length > span:
        raise UniversalityError(
            f"sequences of {length} distinct tokens need a vocabulary of at least {length + low} ids; this host has {vocab_size}"
        )
    rows = []
    for _ in range(n):  # randperm per row keeps memory at O(vocab), not O(n * vocab)
        rows.append(torch.randperm(span, generator=generator)[:length] + low)
    return torch.stack(rows).long()


class InductionPrompts(NamedTuple):
    """The reference induction task: ``A B ... A`` → predict ``B``.

    ``clean[:, -1] == clean[:, source]``; the target is ``clean[:, source + 1]``.
    ``corrupted`` equals ``clean`` except at ``source + 1``, where a token absent
    from the row stands, so the induction target is no longer in context.
    """

    clean: torch.Tensor
    """LongTensor ``[n, seq_len]``."""
    corrupted: torch.Tensor
    """LongTensor ``[n, seq_len]``."""
    targets: torch.Tensor
    """LongTensor ``[n]``: the token that followed the earlier copy (``clean[:, source + 1]``)."""
    source: int
    """Position ``s`` of the earlier copy of the last token."""


def induction_prompts(n: int, seq_len: int, source: int, vocab_size: int, generator: torch.Generator,
                      low: int = 0) -> InductionPrompts:
    """Build ``n`` reference-task prompts of ``seq_len`` tokens with the repeated token at ``source``.

    Tokens before the last position are distinct; the last one repeats position
    ``source``; the corrupted copy replaces position ``source + 1`` by an unused token.
    """
    if seq_len < 4:
        raise UniversalityError(f"seq_len must be at least 4 for the induction task (A B ... A); got {seq_len}")
    if not 0 <= source <= seq_len - 3:
        raise UniversalityError(
            f"source position {source} is not valid for seq_len {seq_len}; use 0..{seq_len - 3} so that s+1 comes before the last token"
        )
    draws = distinct_tokens(n, seq_len, vocab_size, generator, low)  # seq_len-1 for the prompt + 1 spare
    clean = draws.clone()
    clean[:, -1] = clean[:, source]
    corrupted = clean.clone()
    corrupted[:, source + 1] = draws[:, -1]
    return InductionPrompts(clean, corrupted, clean[:, source + 1].clone(), source)


def repeated_halves(n: int, half: int, vocab_size: int, generator: torch.Generator, low: int = 0) -> torch.Tensor:
    """``n`` sequences made of ``half`` distinct random tokens followed by the same ``half`` tokens again.

    Returns:
        LongTensor ``[n, 2 * half]``.
    """
    if half < 2:
        raise UniversalityError(f"the repeated half must hold at least 2 tokens; got {half}")
    first = distinct_tokens(n, half, vocab_size, generator, low)
    return torch.cat([first, first], dim=1)
