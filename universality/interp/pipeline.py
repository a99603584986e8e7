"""Explain and score every latent of one dictionary, in numbered phases, writing delphi's layout as it goes.

1. **Contexts**: draw each latent's windows (:mod:`.contexts`), decoder neighbours giving the hard negatives;
   cached in ``contexts.safetensors`` by a fingerprint of the codes and the settings.
2. **Explain**: the offline token-statistics explainer, or a language model through a client. Each explanation is
   written to ``explanations/`` as soon as it exists; explanations already there are kept and not asked again.
3. **Score**: detection and fuzzing on the held-out windows, by the offline simulator or the client's model;
   the per-sample records go to ``scores/<scorer>/`` and the metrics into the returned result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .._errors import UniversalityError
from .._io import atomic_write_json, fingerprint
from .contexts import ContextConfig, ContextSet, LatentActivations, decoder_neighbours, sample_contexts
from .delphi_format import read_explanations, write_explanation, write_firing_counts, write_scores
from .scoring import SCORERS, OfflineJudge, classification_metrics, make_samples, sample_records
from .tokens import TokenTable
from .tokenstats import Background, Simulator, TokenStatsConfig, TokenStatsExplainer


@dataclass
class LatentResult:
    """One explained latent."""

    latent: int
    explanation: str
    scores: dict = field(default_factory=dict)
    """Scorer → :func:`~.scoring.classification_metrics`."""
    frequency: float = 0.0
    """Fraction of counted tokens where the latent fires."""

    def to_dict(self) -> dict:
        return {"latent": self.latent, "explanation": self.explanation, "frequency": self.frequency,
                "scores": {k: dict(v) for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "LatentResult":
        return cls(int(d["latent"]), str(d["explanation"]), dict(d.get("scores") or {}), float(d.get("frequency", 0.0)))


@dataclass
class DictionaryExplanations:
    """Explanations and scores of one dictionary."""

    module: str
    """delphi module name of the dictionary (file names under ``explanations/`` and ``scores/``)."""
    explainer: str
    """``"token-statistics"`` or ``"llm:<model>"``."""
    latents: dict[int, LatentResult] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    """Latents too rare to explain."""
    contexts: ContextSet | None = None
    """The drawn windows (not serialised by :meth:`to_dict`)."""

    def summary(self, scorer: str, metric: str = "balanced_accuracy") -> list[float]:
        """``metric`` of ``scorer`` over the explained latents (failed ones left out)."""
        return [r.scores[scorer][metric] for r in self.latents.values()
                if scorer in r.scores and r.scores[scorer].get(metric) is not None]

    def to_dict(self) -> dict:
        return {"module": self.module, "explainer": self.explainer, "skipped": list(self.skipped),
                "latents": [self.latents[j].to_dict() for j in sorted(self.latents)]}


def make_explainer(client: Any, table: TokenTable, bg: Background, stats_cfg: TokenStatsConfig | None = None):
    """The offline token-statistics explainer (``client`` None) or a language model's."""
    if client is None:
        return TokenStatsExplainer(bg, table, stats_cfg), "token-statistics"
    from .llm import LLMExplainer

    return LLMExplainer(client, table), f"llm:{client.cfg.model}"


def make_judge(client: Any, table: TokenTable):
    """The offline simulator (``client`` None) or a language model as the scorers' judge."""
    if client is None:
        return OfflineJudge(Simulator(table))
    from .llm import LLMJudge

    return LLMJudge(client, table)


def load_or_sample_contexts(acts: LatentActivations, latents: Sequence[int], cfg: ContextConfig, w_dec: Any,
                            cache: str | os.PathLike | None, codes_id: str) -> ContextSet:
    """Phase 1: the contexts of ``latents``, from ``cache`` when it holds the same codes and settings."""
    from dataclasses import asdict

    key = fingerprint({"codes": codes_id, "cfg": asdict(cfg), "latents": fingerprint(list(map(int, latents))),
                       "neighbours": w_dec is not None})
    if cache is not None and Path(cache).is_file():
        try:
            cs, meta = ContextSet.load(cache)
            if meta.get("key") == key:
                return cs
        except Exception:  # noqa: BLE001  (an unreadable cache is drawn again)
            pass
    nb = decoder_neighbours(w_dec, cfg.n_neighbours) if w_dec is not None and cfg.n_neighbours else None
    cs = sample_contexts(acts, latents, cfg, nb)
    if cache is not None:
        cs.save(cache, {"key": key})
    return cs


def explain_dictionary(acts: LatentActivations, table: TokenTable, *, module: str, out: str | os.PathLike | None = None,
                       latents: Iterable[int] | None = None, w_dec: Any = None, client: Any = None,
                       context_cfg: ContextConfig | None = None, stats_cfg: TokenStatsConfig | None = None,
                       scorers: Sequence[str] = SCORERS, codes_id: str = "", log: Any = None) -> DictionaryExplanations:
    """Explain and score the latents of one dictionary (all of them by default).

    Args:
        acts: the dictionary's activations over the token stream (:class:`~.contexts.LatentActivations`).
        table: token texts of the stream's tokenizer.
        module: the dictionary's delphi module name.
        out: folder for delphi's ``explanations/`` and ``scores/`` and the contexts cache (``None``: nothing written).
        latents: which latents (default: every one).
        w_dec: decoder ``[n_latents, d]`` for the neighbour negatives (``None``: random negatives only).
        client: a :class:`~.client.ChatClient`, or ``None`` for the offline explainer and simulator.
        codes_id: fingerprint of the codes (keys the contexts cache).

    Returns:
        :class:`DictionaryExplanations`.
    """
    from .._progress import progress

    log = log or (lambda msg: None)
    bad = [s for s in scorers if s not in SCORERS]
    if bad:
        raise UniversalityError(f"scorer(s) {', '.join(bad)} are not valid; use {' and/or '.join(SCORERS)}")
    ccfg = context_cfg or ContextConfig()
    latents = list(range(acts.n_latents)) if latents is None else [int(j) for j in latents]
    if latents and (min(latents) < 0 or max(latents) >= acts.n_latents):
        raise UniversalityError(f"latent indices must lie in 0..{acts.n_latents - 1} for this dictionary")
    outp = Path(out) if out is not None else None
    # 1. contexts
    cs = load_or_sample_contexts(acts, latents, ccfg, w_dec, None if outp is None else outp / f"contexts-{module}.safetensors",
                                 codes_id or fingerprint([acts.codes.nnz, acts.codes.shape, float(acts.codes.data.sum())]))
    if outp is not None:  # delphi's result analysis weights F1 by these
        write_firing_counts(outp, module, np.diff(acts.codes.indptr))
    bg = Background.of(acts.tokens, acts.mask, len(table))
    explainer, name = make_explainer(client, table, bg, stats_cfg)
    judge = make_judge(client, table)
    res = DictionaryExplanations(module, name, skipped=list(cs.skipped), contexts=cs)
    # 2. explain (explanations already on disk are kept when the same explainer wrote them)
    have = {}
    if outp is not None and client is not None:
        mark = outp / f"explainer-{module}.json"
        same = mark.is_file() and json.loads(mark.read_text(encoding="utf-8")).get("explainer") == name
        have = read_explanations(outp, module) if same else {}
        atomic_write_json(mark, {"explainer": name})
    todo = [j for j in sorted(cs.latents) if j not in have]
    log(f"{module}: explaining {len(todo)} latents ({len(have)} kept from an earlier run, {len(cs.skipped)} too rare)")
    texts = dict(have)
    batch = 256 if client is None else max(1, 4 * client.cfg.concurrency)
    for lo in progress(range(0, len(todo), batch), desc=f"explaining {module}", unit="batch"):
        part = todo[lo:lo + batch]
        for j, t in zip(part, explainer.explain_many([cs.latents[j].train for j in part])):
            if t is None:
                continue
            texts[j] = t
            if outp is not None:
                write_explanation(outp, module, j, t)
    # 3. score
    freq = acts.frequencies()
    ready = [j for j in sorted(cs.latents) if j in texts]
    for lo in progress(range(0, len(ready), batch), desc=f"scoring {module}", unit="batch"):
        part = ready[lo:lo + batch]
        items = [(sc, texts[j], make_samples(sc, cs.latents[j], ccfg.seed)) for j in part for sc in scorers]
        probs = judge.judge_many(items)
        k = 0
        for j in part:
            r = LatentResult(j, texts[j], frequency=float(freq[j]))
            for sc in scorers:
                s, p = items[k][2], probs[k]
                k += 1
                r.scores[sc] = classification_metrics(s.activating, p)
                if outp is not None:
                    write_scores(outp, module, sc, j, sample_records(s, p, table))
            res.latents[j] = r
    return res
