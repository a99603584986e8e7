"""Evaluation of a trained dictionary: reconstruction statistics and language-model loss with it spliced in."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .coder import SparseCoder
from .source import BatchStream


class Metrics(NamedTuple):
    """Reconstruction quality and sparsity of a dictionary on some activations."""

    fvu: float
    """Fraction of variance unexplained: sum ||y - ŷ||² / sum ||y - mean(y)||²."""
    explained_variance: float
    """Mean over target dimensions of 1 - Var(y_j - ŷ_j) / Var(y_j)."""
    l0: float
    """Mean number of active latents per token."""
    dead_fraction: float
    """Fraction of latents that never fired on these tokens."""
    dense_fraction: float
    """Fraction of latents firing on more than ``dense_threshold`` of the tokens."""
    n_tokens: int
    """Tokens evaluated."""

    def as_dict(self) -> dict[str, float]:
        """JSON-ready dict."""
        return dict(self._asdict())


def _pairs(x: Any, target: torch.Tensor | None, batch_size: int):
    if isinstance(x, torch.Tensor):
        if x.dim() != 2:
            raise UniversalityError(f"activations have shape {tuple(x.shape)}; give a 2-D tensor [n, d]")
        if target is not None and (target.dim() != 2 or target.shape[0] != x.shape[0]):
            raise UniversalityError(f"target has shape {tuple(target.shape)}; it must be 2-D with the same {x.shape[0]} rows as the input")
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], (target[i : i + batch_size] if target is not None else None)
    else:
        yield from BatchStream(x, batch_size, target=target)


@torch.no_grad()
def evaluate(coder: SparseCoder, x: Any, target: torch.Tensor | None = None, batch_size: int = 8192, dense_threshold: float = 0.1,
             *, tokens: torch.Tensor | None = None, **host_options: Any):
    """FVU, explained variance, L0, dead and dense fractions of ``coder`` on ``x`` [n, d_in] (or a stream).

    ``target`` [n, d_out] is the reconstruction target of a transcoder (default:
    ``x`` itself). Statistics are accumulated in float64 over batches.

    Given a host as ``x`` and ``tokens`` [n, t], runs SAEBench's evaluations
    instead (:func:`universality.sae.evaluation.evaluate_host`, options passed
    on) and returns an :class:`~universality.sae.evaluation.Evaluation`.
    """
    if hasattr(x, "run_with_hooks") and hasattr(x, "hook_points"):
        from .evaluation import evaluate_host

        if tokens is None:
            raise UniversalityError("evaluating on a host needs tokens=, a LongTensor [n, seq_len]")
        return evaluate_host(coder, x, tokens, batch_size=batch_size if batch_size != 8192 else 8, dense_threshold=dense_threshold, **host_options)
    dev = coder.W_enc.device
    d_out = coder.cfg.d_out
    s1 = torch.zeros(d_out, dtype=torch.float64, device=dev)
    s2 = torch.zeros(d_out, dtype=torch.float64, device=dev)
    e1 = torch.zeros(d_out, dtype=torch.float64, device=dev)
    e2 = torch.zeros(d_out, dtype=torch.float64, device=dev)
    counts = torch.zeros(coder.cfg.n_latents, dtype=torch.float64, device=dev)
    n = 0
    for xb, yb in _pairs(x, target, batch_size):
        xb = xb.to(dev)
        yb = xb if yb is None else yb.to(dev)
        if yb.shape[-1] != d_out:
            raise UniversalityError(f"target width {yb.shape[-1]} does not match the dictionary's d_out={d_out}")
        codes = coder.encode(xb)
        recon = coder.decode(codes)
        if coder.W_skip is not None:
            recon = recon + (xb.to(coder.W_skip.dtype) * coder.cfg.input_scale) @ coder.W_skip.t() / coder.cfg.output_scale
        y64 = yb.double()
        err = y64 - recon.double()
        s1 += y64.sum(0)
        s2 += y64.pow(2).sum(0)
        e1 += err.sum(0)
        e2 += err.pow(2).sum(0)
        counts += (codes > 0).sum(0).double()
        n += xb.shape[0]
    if n == 0:
        raise UniversalityError("no activations to evaluate; give at least one row")
    var_y = s2 / n - (s1 / n) ** 2
    var_e = e2 / n - (e1 / n) ** 2
    total = float(var_y.sum()) * n
    fvu = float(e2.sum()) / total if total > 0 else float("nan")
    ok = var_y > 1e-12 * var_y.max().clamp_min(1e-30)
    ev = float((1 - var_e[ok] / var_y[ok]).mean()) if ok.any() else float("nan")
    freq = counts / n
    return Metrics(
        fvu=fvu,
        explained_variance=ev,
        l0=float(counts.sum()) / n,
        dead_fraction=float((counts == 0).double().mean()),
        dense_fraction=float((freq > dense_threshold).double().mean()),
        n_tokens=n,
    )


class LMLoss(NamedTuple):
    """Next-token cross-entropy with the dictionary spliced in, next to clean and zero-ablated runs."""

    clean: float
    """Mean loss of the unmodified model."""
    spliced: float
    """Mean loss with the hook's activation replaced by the dictionary's reconstruction."""
    zero_ablation: float
    """Mean loss with the hook's activation replaced by zeros."""
    fraction_recovered: float
    """(zero_ablation - spliced) / (zero_ablation - clean): 1 is a perfect dictionary, 0 as bad as ablation."""


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[float, int]:
    lp = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    tgt = tokens[:, 1:].reshape(-1)
    return float(F.cross_entropy(lp, tgt, reduction="sum")), int(tgt.numel())


@torch.no_grad()
def evaluate_lm_loss(host, coder: SparseCoder, hook: str | None, tokens: torch.Tensor, batch_size: int = 8, target_hook: str | None = None) -> LMLoss:
    """Language-model loss with ``coder`` spliced in at ``hook``, next to the clean and zero-ablation losses.

    ``tokens`` is a LongTensor [b, t] (t >= 2), run in chunks of ``batch_size``
    sequences. An autoencoder replaces ``hook``'s activation [b, t, d] by
    ``coder(activation)``; a transcoder reads ``hook`` and replaces
    ``target_hook`` (default ``coder.cfg.target_hook``). Returns :class:`LMLoss`.
    """
    hook = hook or coder.cfg.hook
    if not hook:
        raise UniversalityError("hook is not given and the dictionary records none; name the hook point it was trained on")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise UniversalityError(f"tokens have shape {shape}; give a LongTensor [batch, seq] with seq >= 2")
    out_hook = hook
    if coder.cfg.transcoder:
        out_hook = target_hook or coder.cfg.target_hook
        if not out_hook:
            raise UniversalityError("this dictionary is a transcoder; give target_hook, the hook point whose activation it replaces")
    host.validate_names([hook, out_hook])
    dev = host.device
    coder = coder.to(dev)
    totals = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    count = 0
    for i in range(0, tokens.shape[0], batch_size):
        tb = tokens[i : i + batch_size].to(dev)
        loss, count_b = _next_token_loss(host.run_with_hooks(tb, {}), tb)
        totals["clean"] += loss
        if coder.cfg.transcoder:
            seen: dict[str, torch.Tensor] = {}

            def grab(t: torch.Tensor) -> None:
                seen["x"] = t

            def replace(t: torch.Tensor) -> torch.Tensor:
                return coder(seen["x"]).to(t.dtype)

            hooks = {hook: grab, out_hook: replace} if hook != out_hook else {hook: lambda t: coder(t).to(t.dtype)}
        else:
            hooks = {hook: lambda t: coder(t).to(t.dtype)}
        totals["spliced"] += _next_token_loss(host.run_with_hooks(tb, hooks), tb)[0]
        totals["zero"] += _next_token_loss(host.run_with_hooks(tb, {out_hook: torch.zeros_like}), tb)[0]
        count += count_b
    clean, spliced, zero = (totals[k] / count for k in ("clean", "spliced", "zero"))
    denom = zero - clean
    frac = (zero - spliced) / denom if abs(denom) > 1e-12 else float("nan")
    return LMLoss(clean=clean, spliced=spliced, zero_ablation=zero, fraction_recovered=frac)
