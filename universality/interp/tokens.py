"""Token texts of a tokenizer, decoded once, and the lookup from a written token back to its ids."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def normalize(text: str) -> str:
    """The form two token texts are compared in: surrounding whitespace dropped (``" cat"`` matches ``"cat"``)."""
    return text.strip()


class TokenTable:
    """Every token id's text, decoded once; ``ids_of(text)`` gives the ids whose normalized text equals ``text``'s.

    Attributes:
        texts: token text per id (``"<id>"`` without a tokenizer).
    """

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)
        self._index: dict[str, np.ndarray] | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, vocab_size: int) -> "TokenTable":
        """Decode ids ``0..vocab_size-1`` with ``tokenizer`` (``None``: ids shown as ``<id>``)."""
        if tokenizer is None:
            return cls([f"<{i}>" for i in range(vocab_size)])
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], clean_up_tokenization_spaces=False)
        return cls(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, ids: Any) -> list[str]:
        """Token texts of ``ids`` (1-D)."""
        n = len(self.texts)
        return [self.texts[i] if 0 <= i < n else f"<{i}>" for i in np.asarray(ids).reshape(-1).tolist()]

    def ids_of(self, text: str) -> np.ndarray:
        """Ids whose normalized text equals ``normalize(text)`` (int64, possibly empty)."""
        if self._index is None:
            groups: dict[str, list[int]] = {}
            for i, t in enumerate(self.texts):
                groups.setdefault(normalize(t), []).append(i)
            self._index = {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}
        return self._index.get(normalize(text), np.zeros(0, dtype=np.int64))
