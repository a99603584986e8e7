"""Mamba-2 scan (scalar decay per head) in pure torch: chunked "state-space duality" form plus per-position states.

Shapes: ``x`` [b, t, h, p] (heads x head_dim), ``dt`` [b, t, h], ``A`` [h] (negative),
``B``, ``C`` [b, t, g, n] (``g`` groups; head ``k`` uses group ``k // (h // g)``),
``D`` [h] or ``None``. Recurrence per head::

    S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T        (S: [p, n], S_{-1} = 0)
    y_t = S_t C_t + D x_t

The chunked form computes the same ``y`` with matmuls: inside a chunk of ``L``
positions ``y_l = sum_{s<=l} (C_l . B_s) exp(cum_l - cum_s) dt_s x_s``, and a short
loop over chunks carries the state between them. Autograd provides the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def heads_of_groups(v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Expand ``[b, t, g, n]`` to ``[b, t, h, n]`` (each group shared by ``h // g`` consecutive heads)."""
    g = v.shape[2]
    return v if g == n_heads else v.repeat_interleave(n_heads // g, dim=2)


def ssd_scan(x, dt, A, B, C, D=None, chunk: int = 64):
    """Scan output ``y`` [b, t, h, p] (including the ``D`` skip), chunked; differentiable."""
    b, t, h, p = x.shape
    Bh, Ch = heads_of_groups(B, h), heads_of_groups(C, h)
    L = max(1, min(chunk, t))
    pad = (-t) % L
    a = dt * A  # [b, t, h] log-decay per step
    xdt = x * dt.unsqueeze(-1)
    if pad:  # padded steps decay by 1 and add nothing; they come after every real position
        a, xdt = F.pad(a, (0, 0, 0, pad)), F.pad(xdt, (0, 0, 0, 0, 0, pad))
        Bh, Ch = F.pad(Bh, (0, 0, 0, 0, 0, pad)), F.pad(Ch, (0, 0, 0, 0, 0, pad))
    c = (t + pad) // L
    a = a.view(b, c, L, h)
    xdt = xdt.view(b, c, L, h, p)
    Bh, Ch = Bh.reshape(b, c, L, h, -1), Ch.reshape(b, c, L, h, -1)
    cum = torch.cumsum(a, dim=2)  # [b, c, L, h]

    # within a chunk: decay from s to l is exp(cum_l - cum_s) for s <= l
    diff = cum.unsqueeze(3) - cum.unsqueeze(2)  # [b, c, l, s, h]
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(diff.masked_fill(~causal[:, :, None], float("-inf")))
    scores = torch.einsum("bclhn,bcshn->bclsh", Ch, Bh) * decay
    y = torch.einsum("bclsh,bcshp->bclhp", scores, xdt)

    # what each chunk adds to the state at its end, then carry states across chunks
    to_end = torch.exp(cum[:, :, -1:] - cum)  # [b, c, L, h]
    chunk_states = torch.einsum("bclhn,bclh,bclhp->bchpn", Bh, to_end, xdt)
    chunk_decay = torch.exp(cum[:, :, -1])  # [b, c, h]
    state = x.new_zeros(b, h, p, Bh.shape[-1])
    starts = []
    for k in range(c):
        starts.append(state)
        state = chunk_decay[:, k, :, None, None] * state + chunk_states[:, k]
    start = torch.stack(starts, dim=1)  # [b, c, h, p, n]: state entering each chunk
    y = y + torch.einsum("bclhn,bchpn->bclhp", Ch, start) * torch.exp(cum).unsqueeze(-1)

    y = y.reshape(b, c * L, h, p)[:, :t]
    return y if D is None else y + x * D[:, None]


def ssd_states(x, dt, A, B):
    """Per-position states ``[b, t, h, p, n]`` by a plain loop over time (differentiable)."""
    b, t, h, p = x.shape
    Bh = heads_of_groups(B, h)
    decay = torch.exp(dt * A)  # [b, t, h]
    xdt = x * dt.unsqueeze(-1)
    state = x.new_zeros(b, h, p, Bh.shape[-1])
    out = []
    for i in range(t):
        state = decay[:, i, :, None, None] * state + xdt[:, i, :, :, None] * Bh[:, i, :, None, :]
        out.append(state)
    return torch.stack(out, dim=1)


def ssd_patched_states(old, new, x, dt, A, B):
    """States after a hook replaced some of them; a replaced entry is used and carried forward.

    With ``m = new != old`` (elementwise): ``S'_t = new_t`` where ``m_t``, else
    ``exp(dt_t A) S'_{t-1} + dt_t x_t B_t^T``. Returns ``new`` itself when nothing changed.
    """
    changed = new != old
    if not bool(changed.any()):
        return new
    first = int(changed.flatten(2).any(-1).any(0).nonzero()[0])
    b, t, h, p = x.shape
    Bh = heads_of_groups(B, h)
    decay = torch.exp(dt * A)
    xdt = x * dt.unsqueeze(-1)
    out = [new[:, i] for i in range(first)]
    state = new[:, first - 1] if first > 0 else x.new_zeros(old.shape[0], *old.shape[2:])
    for i in range(first, t):
        step = decay[:, i, :, None, None] * state + xdt[:, i, :, :, None] * Bh[:, i, :, None, :]
        state = torch.where(changed[:, i], new[:, i], step)
        out.append(state)
    return torch.stack(out, dim=1)


def ssd_readout(states, C, x, D=None):
    """``y_t = S_t C_t + D x_t`` from states ``[b, t, h, p, n]``; returns ``[b, t, h, p]``."""
    Ch = heads_of_groups(C, states.shape[2])
    y = torch.einsum("bthpn,bthn->bthp", states, Ch)
    return y if D is None else y + x * D[:, None]
