"""The offline explainer and simulator: token statistics, no language model.

**Explainer.** Where a latent fires in its train windows, count each token and each pair of consecutive tokens
(ending at the firing position) and compare with the whole stream by the log-odds ratio with an informative
Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"): for a term ``w`` with ``y`` firing counts of
``n`` and ``b`` background counts of ``N``, prior ``α_w = a0 · (b + 1) / (N + V)``,

    δ_w = log((y + α_w) / (n + a0 − y − α_w)) − log((b + α_w) / (N + a0 − b − α_w)),
    z_w = δ_w / sqrt(1 / (y + α_w) + 1 / (b + α_w)).

The terms with ``z ≥ z_min`` (at least ``min_count`` firings) are the explanation, strongest first; a pair is kept
only when it beats its last token alone. The text says plainly that it is a token-statistics explanation and
lists the terms as JSON strings, a pair as ``"a" + "b"``.

**Simulator.** Reads an explanation's text (any text with quoted terms; ours, or an LLM's that quotes tokens) and
predicts, per token of a window, an activation in [0, 1]: the weight of the strongest listed term ending there
(term ``i`` of ``n`` weighs ``1 − i / (2n)``), 0 where none matches. Terms are matched by token text, so an
explanation written under one tokenizer can be read under another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._errors import UniversalityError
from .tokens import TokenTable

PREFIX = "Token statistics (not a language-model explanation)."
"""How every offline explanation begins."""
_MARK = "Over-represented where the latent fires:"
_NONE = "No token or token pair stands out where the latent fires."
_TERM = re.compile(r'"(?:[^"\\]|\\.)*"|\+|;')


@dataclass
class TokenStatsConfig:
    """Settings of the token-statistics explainer."""

    max_terms: int = 8
    """Most terms an explanation lists."""
    z_min: float = 3.0
    """Smallest log-odds z-score a listed term needs."""
    prior: float = 10.0
    """Total mass ``a0`` of the Dirichlet prior (spread in proportion to background frequency)."""
    min_count: int = 2
    """Fewest firing positions a term needs."""
    pairs: bool = True
    """Also consider pairs of consecutive tokens (ending at the firing position)."""

    def __post_init__(self):
        if not isinstance(self.max_terms, int) or self.max_terms < 1:
            raise UniversalityError(f"max_terms {self.max_terms!r} is not valid; use an integer of at least 1")
        if not self.prior > 0:
            raise UniversalityError(f"prior {self.prior!r} is not valid; use a positive number")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise UniversalityError(f"min_count {self.min_count!r} is not valid; use an integer of at least 1")


class Background(NamedTuple):
    """Token and pair counts over every counted position of the stream."""

    unigram: np.ndarray
    """``[V]`` counts per token id."""
    pair_keys: np.ndarray
    """Sorted ``prev * V + cur`` keys of the pairs seen."""
    pair_counts: np.ndarray
    """Counts of those pairs."""
    vocab: int

    @classmethod
    def of(cls, tokens: np.ndarray, mask: np.ndarray, vocab: int) -> "Background":
        """Counts over ``tokens`` ``[n_seq, seq_len]`` where ``mask`` is True (pairs: both positions counted)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        mask = np.asarray(mask, dtype=bool)
        vocab = max(int(vocab), int(tokens.max()) + 1 if tokens.size else 1)
        uni = np.bincount(tokens[mask], minlength=vocab)
        both = mask[:, 1:] & mask[:, :-1]
        keys = tokens[:, :-1][both] * vocab + tokens[:, 1:][both]
        pk, pc = np.unique(keys, return_counts=True)
        return cls(uni, pk, pc, vocab)


class Term(NamedTuple):
    """One listed term: its token texts (one or two) and z-score."""

    texts: tuple[str, ...]
    z: float


class Explanation(NamedTuple):
    """An explanation of one latent: its text and, for token statistics, the terms behind it."""

    text: str
    terms: tuple[Term, ...] = ()


def _log_odds(y: np.ndarray, n: int, b: np.ndarray, big_n: int, vocab: int, a0: float) -> np.ndarray:
    alpha = a0 * (b + 1.0) / (big_n + vocab)
    y = y.astype(np.float64)
    b = b.astype(np.float64)
    delta = np.log((y + alpha) / (n + a0 - y - alpha)) - np.log((b + alpha) / (big_n + a0 - b - alpha))
    return delta / np.sqrt(1.0 / (y + alpha) + 1.0 / (b + alpha))


def explain_tokens(ids: np.ndarray, acts: np.ndarray, bg: Background, table: TokenTable,
                   cfg: TokenStatsConfig | None = None) -> Explanation:
    """Token-statistics explanation of a latent from its train windows ``ids``/``acts`` ``[m, window]``."""
    cfg = cfg or TokenStatsConfig()
    ids = np.asarray(ids, dtype=np.int64)
    fire = np.asarray(acts) > 0
    V = bg.vocab
    fg = ids[fire]
    terms: list[Term] = []
    if fg.size:
        n, big_n = int(fg.size), int(bg.unigram.sum())
        u_ids, u_y = np.unique(fg[fg < V], return_counts=True)
        z_u = _log_odds(u_y, n, bg.unigram[u_ids], big_n, V, cfg.prior)
        z_of = dict(zip(u_ids.tolist(), z_u.tolist()))
        cands = [Term((table.texts[i] if i < len(table) else f"<{i}>",), z) for i, y, z in zip(u_ids.tolist(), u_y.tolist(), z_u.tolist())
                 if y >= cfg.min_count and z >= cfg.z_min]
        if cfg.pairs and ids.shape[1] > 1:
            f2 = fire[:, 1:]
            keys = ids[:, :-1][f2] * V + ids[:, 1:][f2]
            keys = keys[(ids[:, :-1][f2] < V) & (ids[:, 1:][f2] < V)]
            p_keys, p_y = np.unique(keys, return_counts=True)
            p_b = np.zeros(p_keys.size, dtype=np.int64)
            if bg.pair_keys.size:
                pos = np.minimum(np.searchsorted(bg.pair_keys, p_keys), bg.pair_keys.size - 1)
                p_b = np.where(bg.pair_keys[pos] == p_keys, bg.pair_counts[pos], 0)
            z_p = _log_odds(p_y, int(keys.size), p_b, int(bg.pair_counts.sum()), V, cfg.prior)
            for k, y, z in zip(p_keys.tolist(), p_y.tolist(), z_p.tolist()):
                a, c = divmod(k, V)
                if y >= cfg.min_count and z >= cfg.z_min and z > z_of.get(c, -np.inf):
                    cands.append(Term((table.texts[a], table.texts[c]), z))
        terms = sorted(cands, key=lambda t: (-t.z, t.texts))[: cfg.max_terms]
    return Explanation(render(terms), tuple(terms))


def render(terms: list[Term] | tuple[Term, ...]) -> str:
    """The text of a token-statistics explanation listing ``terms``."""
    if not terms:
        return f"{PREFIX} {_NONE}"
    listed = "; ".join(" + ".join(json.dumps(t, ensure_ascii=False) for t in term.texts) for term in terms)
    return f"{PREFIX} {_MARK} {listed}."


def parse_terms(text: str) -> list[tuple[str, ...]]:
    """Terms an explanation's text lists: quoted strings, ``+`` joining consecutive tokens, ``;`` separating terms.

    Reads the part after our marker when present, else every quoted string of the text (one token each).
    """
    part = text.split(_MARK, 1)[1] if _MARK in text else text
    terms: list[tuple[str, ...]] = []
    cur: list[str] = []
    joined = False
    for m in _TERM.finditer(part):
        tok = m.group(0)
        if tok == "+":
            joined = True
            continue
        if tok == ";":
            if cur:
                terms.append(tuple(cur))
            cur, joined = [], False
            continue
        try:
            s = json.loads(tok)
        except ValueError:
            continue
        if cur and not joined and _MARK not in text:
            terms.append(tuple(cur))
            cur = []
        cur.append(s)
        joined = False
    if cur:
        terms.append(tuple(cur))
    return [t for t in terms if 1 <= len(t) <= 2]


class Simulator:
    """Predicts a latent's activation per token from an explanation's text (see the module docstring)."""

    def __init__(self, table: TokenTable):
        self.table = table

    def compile(self, text: str) -> list[tuple[float, tuple[np.ndarray, ...]]]:
        """``(weight, id sets)`` of each term the text lists, strongest first."""
        terms = parse_terms(text)
        n = len(terms)
        return [(1.0 - 0.5 * i / n, tuple(self.table.ids_of(t) for t in term)) for i, term in enumerate(terms)]

    def simulate(self, text: str, ids: np.ndarray, compiled: Any = None) -> np.ndarray:
        """Predicted activation ``[m, window]`` in [0, 1] for windows ``ids`` ``[m, window]``."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(ids.shape, dtype=np.float32)
        for weight, sets in (compiled if compiled is not None else self.compile(text)):
            if len(sets) == 1:
                hit = np.isin(ids, sets[0])
            else:
                hit = np.zeros(ids.shape, dtype=bool)
                if ids.shape[1] > 1:
                    hit[:, 1:] = np.isin(ids[:, :-1], sets[0]) & np.isin(ids[:, 1:], sets[1])
            np.maximum(out, np.where(hit, weight, 0.0).astype(np.float32), out=out)
        return out


class TokenStatsExplainer:
    """:func:`explain_tokens` with the batch interface of :class:`~.llm.LLMExplainer`."""

    def __init__(self, bg: Background, table: TokenTable, cfg: TokenStatsConfig | None = None):
        self.bg, self.table, self.cfg = bg, table, cfg or TokenStatsConfig()

    def explain_many(self, trains: list) -> list[str]:
        """One explanation text per latent's train windows (:class:`~.contexts.Examples`)."""
        return [explain_tokens(t.ids, t.acts, self.bg, self.table, self.cfg).text for t in trains]


def content(text: str) -> str:
    """An explanation without the token-statistics preamble (what is embedded and compared)."""
    return text.replace(PREFIX, "").replace(_MARK, "").strip()
