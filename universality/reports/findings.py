"""The plain-language summary: a few sentences saying what the numbers show and how sure they are.

Every sentence is derived from results.json by a rule stated next to it (in the section that owns the
numbers, :mod:`universality.reports.sections`), so the summary never claims more than the confidence
intervals support.
"""

from __future__ import annotations

from typing import Mapping

from .sections import registered
from .sections.pairs import pair_sentence

__all__ = ["findings", "pair_sentence"]


def findings(res: Mapping) -> list[str]:
    """The summary as a list of sentences: every section's, in page order, then how sure they are and what did not run."""
    out: list[str] = []
    for section in registered():
        out += section.findings(res)
    corpus = res.get("corpus") or {}
    if corpus.get("n_tokens"):
        out.append(f"How sure: all statistics come from {corpus['n_tokens']:,} tokens of {corpus.get('name', 'the corpus')}; "
                   "intervals are 95% bootstrap intervals; small zoo models and short corpora give wide intervals, "
                   "so read differences smaller than the intervals as no difference.")
    for m in res.get("missing") or []:
        out.append(f"Not run: {m}.")
    return out
