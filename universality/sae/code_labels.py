"""Exact per-token labels for Python source: is a token inside a docstring, a comment, a string literal, or code?

The standard library's ``tokenize`` gives every comment and string literal
with its exact span; ``ast`` says which string literals are docstrings (the
first statement of a module, class or function body). Each character of the
source gets one class; each model token takes the class of its first
non-whitespace character (tokens that are only whitespace stay unlabelled, -1).
These labels feed the sparse-probing evaluation (:mod:`universality.sae.probing`).
"""

from __future__ import annotations

import ast
import io
import tokenize
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import UniversalityError

CLASSES = ("docstring", "comment", "string", "code")
"""Class names; a label is the index into this tuple (-1: unlabelled)."""
DOCSTRING, COMMENT, STRING, CODE = range(4)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def char_classes(text: str) -> np.ndarray | None:
    """Class index per character of Python source ``text`` (int8 [len(text)]; -1 for whitespace); ``None`` when it does not tokenize."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
        tree = ast.parse(text)
    except (tokenize.TokenError, SyntaxError, IndentationError, ValueError):
        return None
    starts = _line_starts(text)

    def offset(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1]

    doc_starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc_starts.add((first.value.lineno, first.value.col_offset))
    out = np.full(len(text), CODE, dtype=np.int8)
    fstring = {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n)}  # 3.12+
    for tok in toks:
        if tok.type in fstring:
            out[offset(tok.start):offset(tok.end)] = STRING
            continue
        if tok.type == tokenize.COMMENT:
            out[offset(tok.start):offset(tok.end)] = COMMENT
        elif tok.type == tokenize.STRING:
            out[offset(tok.start):offset(tok.end)] = DOCSTRING if tok.start in doc_starts else STRING
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) if text else np.zeros(0, dtype=np.uint32)
    space = np.isin(chars, [32, 9, 10, 13, 12, 11])
    out[space] = -1
    return out


class LabelledTokens(NamedTuple):
    """Token windows with a class label per position."""

    tokens: torch.Tensor
    """LongTensor [n, seq_len] (BOS first when the tokenizer's policy adds one)."""
    labels: torch.Tensor
    """LongTensor [n, seq_len]: index into :data:`CLASSES`, -1 where unlabelled (BOS, whitespace-only tokens)."""
    classes: tuple[str, ...]
    """The class names (:data:`CLASSES`)."""


def labelled_windows(texts: list[str], tokenizer: Any, seq_len: int, n_windows: int) -> LabelledTokens:
    """Cut Python sources ``texts`` into ``n_windows`` windows of ``seq_len`` tokens with exact class labels.

    Files that do not tokenize are skipped; windows never cross a file. A clear
    error says how many windows the texts gave when they are too few.
    """
    from ..data.tokenizing import OffsetEncoder, adds_bos, special_ids

    if not isinstance(seq_len, int) or seq_len < 2 or not isinstance(n_windows, int) or n_windows < 1:
        raise UniversalityError(f"seq_len={seq_len!r} and n_windows={n_windows!r} are not valid; give seq_len >= 2 and n_windows >= 1")
    bos = special_ids(tokenizer).bos if adds_bos(tokenizer) else None
    body = seq_len - (1 if bos is not None else 0)
    encoder = OffsetEncoder(tokenizer)
    toks: list[list[int]] = []
    labs: list[list[int]] = []
    for start in range(0, len(texts), 32):
        chunk = texts[start:start + 32]
        classes = [char_classes(t) for t in chunk]
        keep = [(t, c) for t, c in zip(chunk, classes) if c is not None]
        for (ids, spans), (text, cls) in zip(encoder.encode_batch([t for t, _ in keep]), keep):
            lab = []
            for a, b in spans:
                seg = cls[a:b]
                hit = seg[seg >= 0]
                lab.append(int(hit[0]) if hit.size else -1)
            for w in range(0, len(ids) - body + 1, body):
                toks.append(([bos] if bos is not None else []) + ids[w:w + body])
                labs.append(([-1] if bos is not None else []) + lab[w:w + body])
                if len(toks) == n_windows:
                    return LabelledTokens(torch.tensor(toks), torch.tensor(labs), CLASSES)
    raise UniversalityError(f"the texts give only {len(toks)} windows of {seq_len} tokens; ask for at most {len(toks)} windows or a shorter seq_len")


__all__ = ["CLASSES", "char_classes", "LabelledTokens", "labelled_windows"]
