"""Language-model loss with a joint dictionary spliced into each host, next to an independent dictionary.

A crosscoder reads every model at once, so its reconstruction of model m at a row
needs all M models' activations of that row. On aligned rows of the same text that
is available before any splicing: upstream of the hook each host runs clean, so the
activation it would see at the hook is exactly the cached one. The splice therefore
replaces host m's activation at the aligned rows by the joint dictionary's
reconstruction computed from the cached activations of all models (a universal SAE:
from model m's own encoder), and leaves every other position untouched.

Phases of :func:`joint_lm_losses`, per host m:

1. the reconstructions of model m's aligned rows: the joint dictionary's, the independent
   dictionary's (same width, same k), and zeros (the ablation);
2. one clean forward and one forward per replacement over the sequences holding those rows
   (:func:`splice_lm_loss`), each the mean next-token cross-entropy over counted targets.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..._errors import UniversalityError
from .dictionary import JointDictionary
from .kinds import USAECoder


def _loss_sum(logits: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy over the targets ``targets[:, 1:]`` marks (bool ``[b, t]``), and their count."""
    keep = targets[:, 1:].reshape(-1)
    lp = logits[:, :-1].reshape(-1, logits.shape[-1]).float()[keep]
    return float(F.cross_entropy(lp, tokens[:, 1:].reshape(-1)[keep], reduction="sum")), int(keep.sum())


@torch.no_grad()
def splice_lm_loss(host: Any, hook: str, tokens: torch.Tensor, rows: torch.Tensor, replacements: dict[str, torch.Tensor],
                   targets: torch.Tensor | None = None, batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss of ``host`` on ``tokens`` ``[S, T]``, clean and with each replacement spliced in at ``hook``.

    ``rows`` (LongTensor ``[n]``) are flat positions ``sequence * T + position``; ``replacements[name]`` is
    ``[n, d_model]``, the activation written at those rows (every other position keeps the clean activation).
    ``targets`` (bool ``[S, T]``, default all) marks the tokens whose prediction counts. Only the sequences
    holding some row are run. Returns ``{"clean": ..., name: ...}``.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 2:
        raise UniversalityError(f"tokens have shape {tuple(getattr(tokens, 'shape', ()))}; give a LongTensor [sequences, positions >= 2]")
    S, T = tokens.shape
    rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
    if rows.numel() == 0 or int(rows.min()) < 0 or int(rows.max()) >= S * T:
        raise UniversalityError(f"rows must be a non-empty set of flat positions in 0..{S * T - 1} of the token grid [{S}, {T}]")
    for name, r in replacements.items():
        if r.dim() != 2 or r.shape[0] != rows.numel():
            raise UniversalityError(f"replacement '{name}' has shape {tuple(r.shape)}; give one [{rows.numel()}, d_model] row per spliced position")
    host.validate_names([hook])
    targets = torch.ones(S, T, dtype=torch.bool) if targets is None else targets.bool()
    seqs = torch.unique(rows // T)
    totals = {"clean": 0.0, **{name: 0.0 for name in replacements}}
    count = 0
    dev = host.device
    for lo in range(0, seqs.numel(), batch_size):
        sb = seqs[lo:lo + batch_size]
        tb = tokens[sb].to(dev)
        tgt = targets[sb].to(dev)
        local = torch.full((S,), -1, dtype=torch.long)
        local[sb] = torch.arange(sb.numel())
        inside = local[rows // T] >= 0
        bi, pos = local[rows[inside] // T].to(dev), (rows[inside] % T).to(dev)
        loss, n = _loss_sum(host.run_with_hooks(tb, {}), tb, tgt)
        totals["clean"] += loss
        count += n
        for name, rep in replacements.items():
            vals = rep[inside]

            def put(t: torch.Tensor, vals=vals) -> torch.Tensor:
                t = t.clone()
                t[bi, pos] = vals.to(t.device, t.dtype)
                return t

            totals[name] += _loss_sum(host.run_with_hooks(tb, {hook: put}), tb, tgt)[0]
    return {name: v / max(count, 1) for name, v in totals.items()}


class JointLMLoss(NamedTuple):
    """Per host: the LM loss clean, with the joint dictionary spliced in, with an independent dictionary, and zero-ablated."""

    clean: float
    """Mean next-token loss of the unmodified host on the evaluated sequences."""
    joint: float
    """With the joint dictionary's reconstruction of this model at the aligned rows."""
    independent: float
    """With the host's own dictionary (same width and k) at the same rows."""
    zero_ablation: float
    """With zeros at the same rows."""

    def recovered(self, which: str) -> float:
        """``(zero - spliced) / (zero - clean)`` of ``"joint"`` or ``"independent"`` (1: lossless, 0: as bad as ablation)."""
        denom = self.zero_ablation - self.clean
        return (self.zero_ablation - getattr(self, which)) / denom if abs(denom) > 1e-12 else float("nan")

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict with the two fractions recovered."""
        return {**self._asdict(), "joint_recovered": self.recovered("joint"), "independent_recovered": self.recovered("independent")}


@torch.no_grad()
def joint_reconstruction(jd: JointDictionary, xs: Sequence[torch.Tensor], m: int) -> torch.Tensor:
    """Model ``m``'s raw reconstruction ``[n, d_m]`` from aligned rows ``xs``: a crosscoder reads every model, a universal SAE model m alone."""
    source = m if isinstance(jd.coder, USAECoder) else None
    out = []
    for lo in range(0, xs[0].shape[0], 8192):
        part = [x[lo:lo + 8192] for x in xs]
        out.append(jd.decode(jd.encode(part, source=source))[m].cpu())
    return torch.cat(out)


def joint_lm_losses(jd: JointDictionary, hosts: Sequence[Any], hooks: Sequence[str], tokens: Sequence[torch.Tensor],
                    rows: Sequence[torch.Tensor], xs: Sequence[torch.Tensor], coders: Sequence[Any],
                    targets: Sequence[torch.Tensor | None] | None = None, max_sequences: int | None = None,
                    batch_size: int = 8) -> list[JointLMLoss]:
    """:class:`JointLMLoss` of every host m: ``hosts[m]`` run on ``tokens[m]`` ``[S_m, T_m]`` with ``hooks[m]`` spliced at ``rows[m]``.

    ``xs[m]`` ``[n, d_m]`` are the cached activations of the aligned rows (``rows[m]``, the same n for every model),
    ``coders[m]`` the host's independent dictionary. ``max_sequences`` keeps the aligned rows of the first sequences
    of model 0's stream (and their partners in every model) to bound the cost.
    """
    m_count = jd.n_models
    if not (len(hosts) == len(hooks) == len(tokens) == len(rows) == len(xs) == len(coders) == m_count):
        raise UniversalityError(f"give one host, hook, token grid, row set, activation tensor and dictionary per model ({m_count})")
    keep = torch.ones(rows[0].numel(), dtype=torch.bool)
    if max_sequences is not None:
        keep = rows[0] // tokens[0].shape[1] < max_sequences
    xs = [x[keep] for x in xs]
    out = []
    for m in range(m_count):
        r = rows[m][keep]
        x = xs[m]
        coder = coders[m]
        with torch.no_grad():
            indep = torch.cat([coder(x[lo:lo + 8192].to(next(coder.parameters()).device)).cpu() for lo in range(0, x.shape[0], 8192)])
        reps = {"joint": joint_reconstruction(jd, xs, m), "independent": indep, "zero": torch.zeros_like(x)}
        tg = None if targets is None else targets[m]
        losses = splice_lm_loss(hosts[m], hooks[m], tokens[m], r, reps, targets=tg, batch_size=batch_size)
        out.append(JointLMLoss(losses["clean"], losses["joint"], losses["independent"], losses["zero"]))
    return out


__all__ = ["splice_lm_loss", "joint_lm_losses", "joint_reconstruction", "JointLMLoss"]
