"""Explainer and judges that ask a language model through :class:`~.client.ChatClient`.

Prompts show windows as plain text with the activating (or highlighted) tokens between ``<<`` and ``>>``, as
delphi does. The explainer's reply must contain a line ``[EXPLANATION]: ...``; a judge's reply must contain a JSON
list with one 0/1 per example shown. Replies that do not are retried, then recorded as failed (``None``).
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any, Sequence

import numpy as np

from .client import ChatClient
from .contexts import Examples
from .scoring import HIGHLIGHT_THRESHOLD, Samples
from .tokens import TokenTable

L, R = "<<", ">>"
_EXPL = re.compile(r"\[EXPLANATION\]:\s*(.+)", re.S)
_LIST = re.compile(r"\[[\s0-9,.]*\]")

EXPLAIN_SYSTEM = ("You are studying one feature of a neural network's sparse dictionary. You see text examples in which "
                  "the feature fires; the tokens it fires on are between << and >>. Say in one short sentence what the "
                  "feature detects. End your reply with a line of the form [EXPLANATION]: <your explanation>.")
DETECT_SYSTEM = ("You judge whether a feature of a neural network fires on text examples, given an explanation of the "
                 "feature. For each numbered example answer 1 if the feature fires on some token of it, else 0. "
                 "Reply with a JSON list of 0s and 1s, one per example, in order, and nothing else.")
FUZZ_SYSTEM = ("You judge whether highlighted tokens are the ones a feature of a neural network fires on, given an "
               "explanation of the feature. Highlighted tokens are between << and >>. For each numbered example answer 1 "
               "if the highlighted tokens are ones the feature fires on, else 0. Reply with a JSON list of 0s and 1s, one "
               "per example, in order, and nothing else.")


def marked_text(texts: Sequence[str], mark: Any) -> str:
    """The window's text with the tokens where ``mark`` is true between ``<<`` and ``>>`` (runs merged)."""
    out, inside = [], False
    for t, m in zip(texts, mark):
        if m and not inside:
            out.append(L)
        if not m and inside:
            out.append(R)
        inside = bool(m)
        out.append(t)
    if inside:
        out.append(R)
    return "".join(out)


def parse_explanation(reply: str) -> str:
    """The explanation in a reply (the text after ``[EXPLANATION]:``, first line); ``ValueError`` when absent or empty."""
    m = _EXPL.search(reply)
    if not m or not m.group(1).strip():
        raise ValueError("no [EXPLANATION]: line")
    return m.group(1).strip().splitlines()[0].strip()


def parse_votes(reply: str, n: int) -> list[int]:
    """The 0/1 list of ``n`` answers in a reply; ``ValueError`` when there is none of that length."""
    for m in _LIST.finditer(reply):
        try:
            vals = json.loads(m.group(0))
        except ValueError:
            continue
        if len(vals) == n and all(v in (0, 1) for v in vals):
            return [int(v) for v in vals]
    raise ValueError(f"no JSON list of {n} zeros and ones")


class LLMExplainer:
    """Explanations written by a language model from the train windows."""

    def __init__(self, client: ChatClient, table: TokenTable, max_examples: int = 20):
        self.client, self.table, self.max_examples = client, table, max_examples

    def chat(self, train: Examples) -> list[dict]:
        """The chat asking for one latent's explanation (strongest ``max_examples`` windows)."""
        order = np.argsort(-train.acts.max(axis=1), kind="stable")[: self.max_examples]
        lines = []
        for n, r in enumerate(order.tolist(), 1):
            a = train.acts[r]
            mark = (a >= HIGHLIGHT_THRESHOLD * a.max()) & (a > 0)
            lines.append(f"Example {n}: {marked_text(self.table.text(train.ids[r]), mark)}")
        return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]

    def explain_many(self, trains: Sequence[Examples]) -> list[str | None]:
        """One explanation per latent (``None`` where every reply was unreadable)."""
        return self.client.complete_many([self.chat(t) for t in trains], parse_explanation)


class LLMJudge:
    """Detection and fuzzing answers from a language model, ``n_shown`` examples per request."""

    def __init__(self, client: ChatClient, table: TokenTable, n_shown: int = 5):
        self.client, self.table, self.n_shown = client, table, max(1, int(n_shown))

    def _chat(self, scorer: str, explanation: str, s: Samples, rows: Sequence[int]) -> list[dict]:
        lines = []
        for n, r in enumerate(rows, 1):
            texts = self.table.text(s.ids[r])
            text = marked_text(texts, s.highlight[r]) if s.highlight is not None else "".join(texts)
            lines.append(f"Example {n}: {text}")
        user = f"Explanation: {explanation}\n\n" + "\n".join(lines)
        return [{"role": "system", "content": DETECT_SYSTEM if scorer == "detection" else FUZZ_SYSTEM},
                {"role": "user", "content": user}]

    def judge_many(self, items: Sequence[tuple[str, str, Samples]]) -> list[list[float | None]]:
        """Probabilities (0 or 1, ``None`` when unreadable) per sample of each ``(scorer, explanation, samples)``.

        Samples are shown in a seeded shuffled order so positives and negatives mix within a request.
        """
        chats, where = [], []
        for k, (scorer, expl, s) in enumerate(items):
            # the order depends only on what is judged, so a rerun asks the same questions (and hits the cache)
            order = np.random.default_rng([zlib.crc32(f"{scorer}\n{expl}".encode("utf-8")), len(s.ids)]).permutation(len(s.ids)).tolist()
            for lo in range(0, len(order), self.n_shown):
                rows = order[lo:lo + self.n_shown]
                chats.append(self._chat(scorer, expl, s, rows))
                where.append((k, rows))
        parsers = [lambda text, n=len(rows): parse_votes(text, n) for _, rows in where]
        replies = self.client.complete_many(chats, parse=parsers)
        out: list[list[float | None]] = [[None] * len(s.ids) for _, _, s in items]
        for (k, rows), votes in zip(where, replies):
            if votes is None:  # unreadable after every try: failed samples
                continue
            for r, v in zip(rows, votes):
                out[k][r] = float(v)
        return out
