"""Sparse forward/backward pieces for dictionaries whose codes have few active latents.

TopK and BatchTopK keep ``k`` latents per token out of ``n_latents``. Autograd
through a dense ``[batch, n_latents]`` pre-activation would make the encoder's
backward a second dense matmul as costly as the forward; here the gradient only
touches the selected latents:

* :class:`SelectedPreacts` returns the pre-activations at chosen ``(row, latent)``
  pairs (already computed in the forward) and back-propagates into ``W_enc``,
  ``b_enc`` and the input through those pairs only (a sparse ``[n_latents, batch]``
  by dense ``[batch, d_in]`` product).
* :func:`sparse_decode` sums the selected decoder rows weighted by their
  activations with ``embedding_bag`` instead of a dense ``codes @ W_dec``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SelectedPreacts(torch.autograd.Function):
    """Pre-activations at selected ``(rows, cols)`` with a gradient that touches only them.

    forward(x [b, d_in], W_enc [n, d_in], b_enc [n], rows [m], cols [m], values [m]) -> values [m]
    where ``values[j] == x[rows[j]] @ W_enc[cols[j]] + b_enc[cols[j]]`` was computed
    by the caller (no grad); ``rows`` must be sorted ascending.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, rows, cols, values):  # noqa: D102
        ctx.save_for_backward(x, W_enc, rows, cols)
        ctx.n_latents = W_enc.shape[0]
        ctx.k = row_width(rows, x.shape[0])
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, W_enc, rows, cols = ctx.saved_tensors
        b, n = x.shape[0], ctx.n_latents
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[1]:
            g = torch.sparse_coo_tensor(torch.stack([cols, rows]), grad, (n, b), is_coalesced=False, check_invariants=False)
            grad_W = torch.sparse.mm(g, x)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        if ctx.needs_input_grad[0]:
            grad_x = bag_sum(cols, rows, grad, W_enc, b, ctx.k)
        return grad_x, grad_W, grad_b, None, None, None


def bag_offsets(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Start offset of each row's run in the ascending ``rows`` [m] → LongTensor [n_rows]."""
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cumsum(counts, 0) - counts


def bag_sum(cols: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, table: torch.Tensor, n_rows: int, k: int | None = None) -> torch.Tensor:
    """``out[r] = sum_j weights[j] * table[cols[j]]`` over ``j`` with ``rows[j] == r`` → [n_rows, table.shape[1]].

    ``k`` (or a ``rows`` tensor made by :func:`uniform_rows`) says every row has
    exactly ``k`` consecutive entries, so the bags need no offsets.
    """
    k = k or row_width(rows, n_rows)
    w = weights.to(table.dtype)
    if k:
        return F.embedding_bag(cols.view(n_rows, k), table, mode="sum", per_sample_weights=w.view(n_rows, k))
    return F.embedding_bag(cols, table, bag_offsets(rows, n_rows), mode="sum", per_sample_weights=w)


def uniform_rows(n_rows: int, k: int, device) -> torch.Tensor:
    """``arange(n_rows).repeat_interleave(k)`` [n_rows*k], tagged so that bags over it need no offsets."""
    rows = torch.arange(n_rows, device=device).repeat_interleave(k)
    rows._uniform_k = k  # type: ignore[attr-defined]
    return rows


def row_width(rows: torch.Tensor, n_rows: int) -> int | None:
    """The ``k`` of a :func:`uniform_rows` tensor with ``n_rows`` rows, else ``None``."""
    k = getattr(rows, "_uniform_k", None)
    return k if k is not None and rows.numel() == n_rows * k else None


def sparse_decode(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Reconstruction without bias: ``sum_j values[j] * W_dec[cols[j]]`` per row → [n_rows, d_out].

    ``rows`` [m] ascending, ``cols`` [m] latent ids, ``values`` [m] activations.
    Gradients flow into ``values`` and ``W_dec`` (only the used rows are non-zero).
    """
    return bag_sum(cols, rows, values, W_dec, n_rows, row_width(rows, n_rows))


def topk_pairs(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` latents of each row of ``pre`` [b, n] as flat ``(rows, cols, values)``, each [b*k].

    Values are the raw pre-activations (the caller applies the ReLU).
    """
    vals, idx = pre.topk(k, dim=1, sorted=False)
    rows = uniform_rows(pre.shape[0], k, pre.device)
    return rows, idx.reshape(-1), vals.reshape(-1)
