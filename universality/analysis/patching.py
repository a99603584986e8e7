"""Batched activation patching (clean → corrupted) through the hook vocabulary.

A *site* is one hook point at one position, optionally one head (axis 2 of
``attn.z``). For every site the corrupted prompts are run with that site's
activation replaced by its value from the clean run, and the metric at the last
position is recorded. Many sites share one forward pass: the corrupted batch is
stacked once per site and each copy's hook patches only its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .._progress import progress
from ._points import chunks, grab, row_groups, target_metric


@dataclass(frozen=True)
class PatchSite:
    """One place to patch: a hook point, a position and optionally a head."""

    hook: str
    """Full hook name, e.g. ``blocks.3.attn.z``."""
    position: int
    """Absolute position index (axis 1 of the hook's tensor)."""
    head: int | None
    """Index on axis 2 (a head of ``attn.z``), or ``None`` to patch the whole position."""
    component: str
    """Human label of the component, e.g. ``L3.H2`` or ``L5.ssm.state``."""
    position_label: str
    """Position relative to the task: ``last``, ``s``, ``s+1``, ``s+2``."""
    layer: int
    """Block index the hook belongs to."""


class PatchRun(NamedTuple):
    """Metrics of one patching sweep (means over the prompts)."""

    clean: float
    """Metric on the clean prompts."""
    corrupted: float
    """Metric on the corrupted prompts."""
    patched: torch.Tensor
    """``[n_sites]`` float64: metric on the corrupted prompts with each site restored from the clean run."""


def _patch_hook(entries: list[tuple[slice, int, int | None, torch.Tensor]]):
    """A hook writing clean values into its row groups: entries of (rows, position, head, clean[:, position])."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for rows, pos, head, value in entries:
            if head is None:
                x[rows, pos] = value
            else:
                x[rows, pos, head] = value[:, head]
        return x

    return fn


@torch.no_grad()
def patch_sites(host, clean: torch.Tensor, corrupted: torch.Tensor, targets: torch.Tensor,
                sites: Sequence[PatchSite], metric: str = "logit", max_rows: int = 256,
                desc: str = "patching") -> PatchRun:
    """Patch each site's clean activation into the corrupted run and measure the metric.

    Args:
        host: any host of the hook vocabulary.
        clean, corrupted: LongTensor ``[n, t]`` prompts differing in a few positions.
        targets: LongTensor ``[n]`` token whose logit (or log-prob) at the last position is the metric.
        sites: where to patch.
        metric: ``"logit"`` or ``"logprob"``.
        max_rows: most sequences in one forward pass (sites are stacked up to this).

    Returns:
        :class:`PatchRun` with the clean, corrupted and per-site patched metrics.
    """
    n = clean.shape[0]
    store: dict = {}
    readers: dict[str, list] = {}
    for key in sorted({(s.hook, s.position) for s in sites}):
        readers.setdefault(key[0], []).append(grab(store, key, key[1]))
    clean_metric = target_metric(host.run_with_hooks(clean, readers), targets, metric).mean().item()
    corrupted_metric = target_metric(host.run_with_hooks(corrupted, {}), targets, metric).mean().item()

    patched = torch.empty(len(sites), dtype=torch.float64)
    groups = chunks(list(enumerate(sites)), max(1, max_rows // n))
    for group in progress(groups, desc=desc, unit="pass"):
        entries: dict[str, list] = {}
        for rows, (_, site) in zip(row_groups(len(group), n), group):
            value = store[(site.hook, site.position)]
            entries.setdefault(site.hook, []).append((rows, site.position, site.head, value))
        hooks = {name: _patch_hook(e) for name, e in entries.items()}
        logits = host.run_with_hooks(corrupted.repeat(len(group), 1), hooks)
        per_row = target_metric(logits, targets.repeat(len(group)), metric).view(len(group), n).mean(dim=1)
        for (idx, _), value in zip(group, per_row.tolist()):
            patched[idx] = value
    return PatchRun(clean_metric, corrupted_metric, patched)
