"""How many key-value pairs a model recalls from context: copy accuracy on tiled rows, by period.

A row of ``seq_len`` tokens that repeats its first ``period`` random tokens holds ``period`` distinct
(previous token → next token) pairs once the first period is over; every later target is predictable
by recall alone. Measuring loss and top-1 on those targets for several periods shows the number of
pairs at which a model's in-context memory runs out (docs/zoo.md, "Third round").
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .train import tile_segments


class PeriodRecall(NamedTuple):
    """Recall of rows with one period."""

    period: int
    """Distinct pairs in each row (the tiled segment's length)."""
    loss: float
    """Mean cross-entropy (nats) on the predictable targets (positions ``period`` … ``seq_len - 1``)."""
    top1: float
    """Share of those targets predicted exactly (argmax)."""


@torch.no_grad()
def recall_by_period(host: Any, n_special: int, n_ids: int, periods: tuple[int, ...] = (4, 8, 16), *,
                     rows: int = 64, seq_len: int = 32, seed: int = 5) -> list[PeriodRecall]:
    """Copy loss and top-1 of ``host`` on tiled random rows, one :class:`PeriodRecall` per entry of ``periods``.

    Rows ``[rows, seq_len]`` draw their tokens uniformly from ids ``n_special … n_special + n_ids - 1`` (one
    generator seeded ``seed``, periods in order), then tile their first ``period`` tokens; ``host.run_with_hooks``
    gives the logits ``[rows, seq_len, vocab]``. Only targets at positions ``>= period`` count.
    """
    for name, value, least in (("rows", rows, 1), ("seq_len", seq_len, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UniversalityError(f"{name} {value!r} is not valid; use an integer of at least {least}")
    for p in periods:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p < seq_len:
            raise UniversalityError(f"recall period {p!r} is not valid; use an integer from 1 to seq_len - 1 ({seq_len - 1})")
    if n_ids < 1:
        raise UniversalityError(f"n_ids {n_ids!r} is not valid; use a positive number of token ids")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for period in periods:
        drawn = torch.randint(n_special, n_special + n_ids, (rows, seq_len), generator=gen)
        tokens = tile_segments(drawn, torch.full((rows,), period))
        logits = host.run_with_hooks(tokens.to(host.device), {}).float().cpu()[:, period - 1:-1]
        targets = tokens[:, period:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
        top1 = (logits.argmax(-1) == targets).float().mean().item()
        out.append(PeriodRecall(period, loss, top1))
    return out
