"""Contrasts the default (stdlib source) corpus supports, and a token-class metric steering is not trained on.

* :func:`docstring_code_prompts`: docstring prose and code lines from Python sources (parsed with ``ast``).
* :func:`code_symbol_tokens`: the ids of tokens made only of code punctuation (``()[]{}=:,.`` ...); the
  probability mass on them is the behaviour measured when steering prose toward code.
"""

from __future__ import annotations

import ast
import random
from typing import Any

from .._errors import UniversalityError

CODE_SYMBOLS = set("()[]{}=:,.+-*/<>!%&|^~@;")
"""Characters a code-symbol token is made of (spaces aside)."""


def _docstrings(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                para = " ".join(doc.split("\n\n")[0].split())
                if len(para) >= 40 and not any(c in para for c in "(){}[]=>"):
                    out.append(para)
    return out


def _code_lines(text: str, tree: ast.AST, max_chars: int) -> list[str]:
    lines = text.splitlines()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if not body:
                continue
            chunk = [ln.strip() for ln in lines[body[0].lineno - 1:node.end_lineno]
                     if ln.strip() and not ln.strip().startswith("#") and '"' not in ln and "'" not in ln]
            joined = " ".join(chunk)[:max_chars]
            if len(joined) >= 40:
                out.append(joined)
    return out


def docstring_code_prompts(corpus: Any, n: int, max_chars: int = 160, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(prose, code)``: ``n`` docstring paragraphs and ``n`` function-body code snippets (each up to ``max_chars``),
    drawn from the corpus's Python documents in a seeded order. One sentence when the corpus has too few."""
    docs = list(corpus.documents)
    random.Random(seed).shuffle(docs)
    prose: list[str] = []
    code: list[str] = []
    for doc in docs:
        if len(prose) >= n and len(code) >= n:
            break
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        prose += [p[:max_chars] for p in _docstrings(tree)][:3]
        code += _code_lines(doc.text, tree, max_chars)[:3]
    if len(prose) < n or len(code) < n:
        raise UniversalityError(f"corpus '{corpus.source}' yields {len(prose)} docstrings and {len(code)} code snippets, fewer "
                                f"than the {n} each the docstring-vs-code contrast needs; use the default corpus or give prompt files")
    return prose[:n], code[:n]


def code_symbol_tokens(tokenizer: Any, vocab_size: int) -> list[int]:
    """Ids ``< vocab_size`` whose decoded text, spaces removed, is non-empty and only :data:`CODE_SYMBOLS`."""
    out = []
    for i in range(vocab_size):
        s = "".join(tokenizer.decode([i]).split())
        if s and set(s) <= CODE_SYMBOLS:
            out.append(i)
    if not out:
        raise UniversalityError("this tokenizer has no code-symbol tokens; give --metric-tokens with a text of the tokens to count")
    return out
