"""``attribution_graph``: the algorithm, as numbered phases.

1. Check the inputs (prompt, dictionaries, target) — one sentence per mistake.
2. Build the frozen replacement model on the prompt (:class:`~.replacement.ReplacementModel`):
   one clean run, frozen norms and mixers, the dictionaries' codes and errors.
3. Choose the logit targets: the given tokens, or the most probable ones until their probability
   adds up to ``logit_probability`` (at most ``max_logits``).
4. One forward of ``batch_size`` replicas with every source a leaf; the graph is kept.
5. Logit rows: one backward injecting the unembedding rows of the targets.
6. Feature rows, in batches of ``batch_size`` backwards injecting encoder rows: every active feature
   (or the ``max_feature_nodes`` most influential, ranked again after each batch, as circuit-tracer
   does), or with ``ha_threshold`` (Hierarchical Attribution) only features reached by an edge of at
   least that size, layer by layer from the top, with smaller edges dropped.
7. Assemble the :class:`~.graph.Graph`: the adjacency over [features, errors, tokens, logits], each
   target's value and its constant (bias) part.

Memory: the forward holds ``batch_size`` replicas (fixed), and the rows kept are
``n_targets × n_sources``: linear in the number of active features for a fixed ``max_feature_nodes``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..._errors import UniversalityError
from ..._progress import progress
from .graph import Graph
from .replacement import Pass, ReplacementModel

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_POSITIONS_PER_PASS = 8192
"""Replicas × prompt positions held by one forward: ``batch_size`` is lowered for long prompts so the
forward's memory stays bounded (8,192 positions of a 192-wide, 4-block model hold about 0.3 GB)."""


def prompt_tokens(host: Any, tokens: Any) -> torch.Tensor:
    """The prompt as a 1-D LongTensor ``[t]``: from a string (the host's tokenizer), a list of ids, or a tensor ``[t]`` / ``[1, t]``."""
    if isinstance(tokens, str):
        if not tokens:
            raise UniversalityError("the prompt is empty; give at least one token")
        if getattr(host, "tokenizer", None) is None:
            raise UniversalityError("the prompt is text but the host has no tokenizer; pass token ids instead")
        tokens = host.tokenizer(tokens)["input_ids"]
    t = torch.as_tensor(tokens) if not isinstance(tokens, torch.Tensor) else tokens
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise UniversalityError(f"the prompt has shape {tuple(t.shape)}; give one sequence of token ids [t] or [1, t]")
    if t.numel() == 0:
        raise UniversalityError("the prompt is empty; give at least one token")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise UniversalityError(f"the prompt's token ids have dtype {t.dtype}; use integer ids")
    t = t.long().cpu()
    bad = ((t < 0) | (t >= host.vocab_size)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise UniversalityError(f"prompt token {int(t[i])} at position {i} is outside the vocabulary 0..{host.vocab_size - 1}")
    if host.max_positions is not None and t.numel() > host.max_positions:
        raise UniversalityError(f"the prompt has {t.numel()} tokens; this host accepts at most {host.max_positions}")
    return t


def _targets(host: Any, model: ReplacementModel, target: Any, max_logits: int, logit_probability: float):
    probs = torch.softmax(model.clean_logits.double(), -1)
    if target is None:
        order = torch.argsort(probs, descending=True)
        cumulative = torch.cumsum(probs[order], 0)
        n = min(int(torch.searchsorted(cumulative, torch.tensor(logit_probability, dtype=cumulative.dtype))) + 1, max_logits)
        ids = order[:max(n, 1)]
    else:
        if isinstance(target, str):
            if getattr(host, "tokenizer", None) is None:
                raise UniversalityError("target is text but the host has no tokenizer; pass a token id")
            enc = host.tokenizer(target)["input_ids"]
            if len(enc) != 1:
                raise UniversalityError(f"target '{target}' is {len(enc)} tokens; give text that is exactly one token, or its id")
            target = enc
        ids_list = [target] if isinstance(target, int) else list(target) if isinstance(target, (Sequence, torch.Tensor)) else None
        if not ids_list or not all(isinstance(int(i) if isinstance(i, torch.Tensor) else i, int) for i in ids_list):
            raise UniversalityError(f"target {target!r} is not valid; give a token id, a list of token ids, one-token text or None")
        ids = torch.tensor([int(i) for i in ids_list], dtype=torch.long)
        bad = ((ids < 0) | (ids >= host.vocab_size)).nonzero()
        if len(bad):
            raise UniversalityError(f"target token {int(ids[bad[0, 0]])} is outside the vocabulary 0..{host.vocab_size - 1}")
    return ids, probs[ids].float()


def _check_settings(batch_size: int, max_logits: int, logit_probability: float, max_feature_nodes, ha_threshold,
                    dtype) -> torch.dtype:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UniversalityError(f"batch_size is {batch_size!r}; it must be a positive whole number")
    if not isinstance(max_logits, int) or max_logits < 1:
        raise UniversalityError(f"max_logits is {max_logits!r}; it must be a positive whole number")
    if not 0 < logit_probability <= 1:
        raise UniversalityError(f"logit_probability is {logit_probability}; it must be in (0, 1]")
    if max_feature_nodes is not None and (not isinstance(max_feature_nodes, int) or max_feature_nodes < 0):
        raise UniversalityError(f"max_feature_nodes is {max_feature_nodes!r}; use a whole number ≥ 0 or None for all")
    if ha_threshold is not None and not ha_threshold >= 0:
        raise UniversalityError(f"ha_threshold is {ha_threshold!r}; use a number ≥ 0 or None")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UniversalityError(f"dtype '{dtype}' is not valid; use float32 or float64")
        return _DTYPES[dtype]
    if dtype not in _DTYPES.values():
        raise UniversalityError(f"dtype {dtype} is not valid; use torch.float32 or torch.float64")
    return dtype


class _Rows:
    """Phase 5/6 worker: backward batches over one retained forward, collecting adjacency rows."""

    def __init__(self, model: ReplacementModel, batch: int):
        self.model = model
        self.batch = batch
        self.run: Pass = model.forward(model.sources(batch))
        self.leaves = self.run.sources.leaves()

    def _edges(self, grads: list[torch.Tensor | None], k: int) -> torch.Tensor:
        """Direct effects ``[k, n_features + n_errors + t]`` of every source on the first ``k`` rows' targets."""
        m = self.model
        L = m.n_layers
        emb_g, code_g, err_g = grads[0], grads[1:1 + L], grads[1 + L:]
        feats = [(g[:k] if g is not None else torch.zeros(k, s.stop - s.start, dtype=m.dtype)) * m.activations[s]
                 for g, s in zip(code_g, m.layer_slices())]
        errs = [((g[:k] * m.errors[i]).sum(-1) if g is not None else torch.zeros(k, m.n_pos, dtype=m.dtype))
                for i, g in enumerate(err_g)]
        toks = (emb_g[:k] * m.embed).sum(-1) if emb_g is not None else torch.zeros(k, m.n_pos, dtype=m.dtype)
        return torch.cat([*feats, *errs, toks], 1)

    def logit_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Rows for the logit targets (chunks of ``batch``)."""
        out = []
        for start in range(0, len(token_ids), self.batch):
            ids = token_ids[start:start + self.batch]
            k = len(ids)
            objective = (self.run.final[:k] * self.model.unembed(ids)).sum()
            out.append(self._edges(self._grad(objective), k))
        return torch.cat(out)

    def feature_rows(self, which: torch.Tensor) -> torch.Tensor:
        """Rows for active features ``which`` (at most ``batch`` indices into ``model.active``)."""
        k = len(which)
        layers, pos, dirs = self.model.encoder_rows(which)
        objective = 0.0
        for layer in layers.unique().tolist():
            rows = (layers == layer).nonzero().flatten()
            x = self.run.inputs[layer][rows, pos[rows]]
            objective = objective + (x * dirs[rows]).sum()
        return self._edges(self._grad(objective), k)

    def _grad(self, objective: torch.Tensor) -> list[torch.Tensor | None]:
        return list(torch.autograd.grad(objective, self.leaves, retain_graph=True, allow_unused=True))


def attribution_graph(host: Any, tokens: Any, transcoders: Any, target: Any = None, *, max_logits: int = 10,
                      logit_probability: float = 0.95, batch_size: int = 128, max_feature_nodes: int | None = None,
                      ha_threshold: float | None = None, dtype: Any = torch.float32, model_name: str = "") -> Graph:
    """The attribution graph of ``host`` on one prompt through its per-block dictionaries.

    Args:
        host: a loaded host (Transformer, Mamba-1/2 or RWKV-4).
        tokens: the prompt: text, a list of ids, or a LongTensor ``[t]`` / ``[1, t]``.
        transcoders: one dictionary per block (list) or ``{block: dictionary}``: skip transcoders
            ``mlp_in -> mlp_out`` for Transformers and RWKV, autoencoders on ``mixer_out`` for Mamba.
        target: ``None`` (the most probable next tokens, see ``logit_probability`` and ``max_logits``),
            a token id, a list of ids, or one-token text.
        batch_size: replicas per forward = targets per backward (memory ∝ batch_size × prompt; lowered so that
            batch_size × prompt ≤ ``MAX_POSITIONS_PER_PASS``).
        max_feature_nodes: keep only this many features (the most influential); ``None`` keeps every
            active feature, which makes every target's incoming edges plus its constant exact.
        ha_threshold: Hierarchical Attribution: drop edges with |effect| below it and expand only features
            reached by a kept edge.
        dtype: ``torch.float32`` / ``"float32"`` or ``torch.float64`` / ``"float64"``.
        model_name: label stored in the graph.

    Returns:
        a :class:`~.graph.Graph`.
    """
    # Phase 1: inputs
    dt = _check_settings(batch_size, max_logits, logit_probability, max_feature_nodes, ha_threshold, dtype)
    prompt = prompt_tokens(host, tokens)
    # Phase 2: the frozen replacement model
    model = ReplacementModel(host, prompt, transcoders, dtype=dt)
    # Phase 3: logit targets
    logit_ids, logit_probs = _targets(host, model, target, max_logits, logit_probability)
    # Phase 4: one retained forward of batch_size replicas (at most MAX_POSITIONS_PER_PASS positions in all)
    rows = _Rows(model, max(1, min(batch_size, MAX_POSITIONS_PER_PASS // model.n_pos)))
    # Phase 5: logit rows
    logit_rows = rows.logit_rows(logit_ids)
    logit_values = model.logits(rows.run.final[:1].detach(), logit_ids)[0]
    # Phase 6: feature rows (stored only for the features expanded: memory linear in active features)
    store = _RowStore(model.n_features, max_feature_nodes, logit_rows.shape[1], dt)
    _visit(model, rows, logit_rows, logit_probs, store, ha_threshold, rows.batch)
    # Phase 7: the graph
    return _assemble(host, model, prompt, logit_ids, logit_probs, logit_rows, logit_values, store, rows,
                     dict(batch_size=rows.batch, max_feature_nodes=max_feature_nodes, ha_threshold=ha_threshold,
                          dtype=str(dt).replace("torch.", "")), model_name)


class _RowStore:
    """Adjacency rows of the expanded features: ``[limit, n_sources]``, and which feature each slot holds."""

    def __init__(self, n_features: int, max_nodes: int | None, n_sources: int, dtype: torch.dtype):
        self.limit = n_features if max_nodes is None else min(max_nodes, n_features)
        self.rows = torch.zeros(self.limit, n_sources, dtype=dtype)
        self.feature = torch.full((self.limit,), -1, dtype=torch.long)
        self.visited = torch.zeros(n_features, dtype=torch.bool)
        self.count = 0

    def add(self, which: torch.Tensor, block: torch.Tensor) -> None:
        """Store ``block`` [k, n_sources] as the rows of features ``which`` [k]."""
        k = len(which)
        self.rows[self.count:self.count + k] = block
        self.feature[self.count:self.count + k] = which
        self.visited[which] = True
        self.count += k

    def room(self) -> int:
        """How many more features may be expanded."""
        return self.limit - self.count

    def kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature indices sorted [n], their rows [n, n_sources])."""
        order = torch.argsort(self.feature[:self.count])
        return self.feature[:self.count][order], self.rows[:self.count][order]


def _visit(model, rows: _Rows, logit_rows, logit_probs, store: _RowStore, ha, batch) -> None:
    """Expand features into ``store``: all, the most influential first, or by Hierarchical Attribution (``ha``)."""
    n = model.n_features
    bar = progress(total=store.limit, desc="attribution rows")
    try:
        if ha is not None:
            logit_rows[logit_rows.abs() < ha] = 0
            reached = (logit_rows[:, :n].abs() >= ha).any(0) if n else torch.zeros(0, dtype=torch.bool)
            for layer in reversed(range(model.n_layers)):
                todo = ((model.active[:, 0] == layer) & reached & ~store.visited).nonzero().flatten()[:max(store.room(), 0)]
                for start in range(0, len(todo), batch):
                    chunk = todo[start:start + batch]
                    block = rows.feature_rows(chunk)
                    block[block.abs() < ha] = 0
                    store.add(chunk, block)
                    reached |= (block[:, :n].abs() > 0).any(0)
                    bar.update(len(chunk))
            return
        ranked = store.limit < n
        while store.room() > 0:
            todo = (~store.visited).nonzero().flatten()
            if ranked:
                score = _feature_influence(logit_rows, logit_probs, store, n)[todo]
                todo = todo[torch.argsort(score, descending=True)]
            chunk = todo[:min(batch, store.room())]
            store.add(chunk, rows.feature_rows(chunk))
            bar.update(len(chunk))
    finally:
        bar.close()


def _feature_influence(logit_rows, logit_probs, store: _RowStore, n: int) -> torch.Tensor:
    """Influence ``[n_features]`` of every feature on the logits through the rows computed so far.

    Works on the rectangular rows (targets × sources) without a square matrix: a weight vector over
    the target rows is pushed to the sources, and the part landing on expanded features becomes the
    next weight vector on their rows (circuit-tracer's partial-influence iteration).
    """
    # rows normalised by their whole |sum| (errors and tokens included), as in the full graph
    feature_rows = store.rows[:store.count].abs().float()
    feature_rows = feature_rows[:, :n] / feature_rows.sum(1, keepdim=True).clamp_min(1e-10)
    logit_abs = logit_rows.abs().float()
    logit_abs = logit_abs[:, :n] / logit_abs.sum(1, keepdim=True).clamp_min(1e-10)
    slot = torch.full((n,), -1, dtype=torch.long)
    slot[store.feature[:store.count]] = torch.arange(store.count)
    step = logit_probs.float() @ logit_abs  # [n]
    total = step.clone()
    for _ in range(10_000):
        weights = torch.zeros(store.count)
        has = slot >= 0
        weights[slot[has]] = step[has]
        if not bool(weights.any()):
            break
        step = weights @ feature_rows
        total += step
    return total


def _assemble(host, model, prompt, logit_ids, logit_probs, logit_rows, logit_values, store: _RowStore,
              rows: _Rows, settings: dict, model_name: str) -> Graph:
    kept, kept_rows = store.kept()
    n_all, t, L = model.n_features, model.n_pos, model.n_layers
    nf, ne, nl = len(kept), L * t, len(logit_ids)
    size = nf + ne + t + nl
    source_cols = torch.cat([kept, torch.arange(n_all, n_all + ne + t)])  # kept features, errors, tokens
    A = torch.zeros(size, size, dtype=torch.float32)
    A[:nf, :nf + ne + t] = kept_rows[:, source_cols].float()
    A[nf + ne + t:, :nf + ne + t] = logit_rows[:, source_cols].float()
    values = torch.full((size,), float("nan"), dtype=torch.float64)
    consts = torch.full((size,), float("nan"), dtype=torch.float64)
    if nf:
        pre = model.preacts(rows.run, kept).detach().double()
        values[:nf] = pre
        consts[:nf] = pre - kept_rows[:, source_cols].double().sum(1)
    values[nf + ne + t:] = logit_values.detach().double()
    consts[nf + ne + t:] = logit_values.detach().double() - logit_rows[:, source_cols].double().sum(1)
    frozen_err = float((logit_values.detach().double() - model.clean_logits[logit_ids].double()).abs().max())
    tok = getattr(host, "tokenizer", None)
    decode = (lambda i: tok.decode([int(i)])) if tok is not None else (lambda i: "")
    settings = {**settings, "logit_strings": [decode(i) for i in logit_ids]}
    return Graph(model=model_name or getattr(host, "name_or_path", ""), arch=host.arch, host_fingerprint=host.fingerprint,
                 n_layers=L, prompt_tokens=prompt.tolist(), prompt_strings=[decode(i) for i in prompt],
                 features=model.active[kept].clone(), activations=model.activations[kept].float(),
                 error_norms=model.errors.norm(dim=-1).float(), logit_tokens=logit_ids.clone(),
                 logit_probabilities=logit_probs, adjacency=A, target_values=values, constants=consts,
                 frozen_logit_error=frozen_err, settings=settings)

