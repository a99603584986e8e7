"""Small helpers shared by the analyses: checking hook points, reading and writing one position.

Everything here talks to a host only through the hook vocabulary of ``docs/design.md``:
``host.arch``, ``host.n_layers``, ``host.hook_points`` and the hook functions
given to ``run_with_cache`` / ``run_with_hooks``. Every per-block point used by
the analyses has the position on axis 1 (``[b, t, ...]``); ``attn.pattern``
(``[b, h, t, t]``) is only read whole.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Callable, Iterable

import torch

from .._errors import UniversalityError

ARCHS = ("transformer", "mamba", "rwkv")


def check_arch(host: Any, purpose: str) -> str:
    """Return ``host.arch`` or raise when it is not one of the three known architectures."""
    arch = getattr(host, "arch", None)
    if arch not in ARCHS:
        raise UniversalityError(
            f"{purpose} needs a host whose arch is one of {', '.join(ARCHS)}; got arch {arch!r}"
        )
    return arch


def check_layer(host: Any, layer: Any) -> int:
    """Return ``layer`` as an int, or raise when it is not a block index of ``host``."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise UniversalityError(f"layer must be an integer block index 0..{host.n_layers - 1}; got {layer!r}")
    if not 0 <= layer < host.n_layers:
        raise UniversalityError(f"layer {layer} is out of range; this {host.arch} host has blocks 0..{host.n_layers - 1}")
    return int(layer)


def require_points(host: Any, names: Iterable[str], purpose: str) -> None:
    """Raise one clear error when any hook point in ``names`` is missing from ``host.hook_points``."""
    have = set(host.hook_points)
    missing = [n for n in names if n not in have]
    if missing:
        raise UniversalityError(
            f"{purpose} needs the hook point{'s' if len(missing) > 1 else ''} {', '.join(missing)}, "
            f"which this {host.arch} host does not provide"
        )


def block(layer: int, point: str) -> str:
    """The full hook name ``blocks.{layer}.{point}``."""
    return f"blocks.{layer}.{point}"


def row_groups(n_groups: int, rows_per_group: int) -> list[slice]:
    """Row slices of a batch made of ``n_groups`` stacked copies of ``rows_per_group`` sequences."""
    return [slice(g * rows_per_group, (g + 1) * rows_per_group) for g in range(n_groups)]


def chunks(items: list, size: int) -> list[list]:
    """Split ``items`` into consecutive lists of at most ``size`` (at least 1) elements."""
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]


def grab(store: dict, key: Any, position: int | None = None) -> Callable[[torch.Tensor], None]:
    """A read-only hook that keeps ``x[:, position]`` (or all of ``x`` when ``position`` is None) in ``store[key]``.

    Keeping only the needed position avoids holding whole per-position states
    (e.g. ``ssm.state`` ``[b, t, d_inner, d_state]``) for every layer.
    """

    def fn(x: torch.Tensor) -> None:
        store[key] = (x if position is None else x[:, position]).detach().clone()
        return None

    return fn


def target_metric(logits: torch.Tensor, targets: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-sequence metric at the last position: logit or log-probability of ``targets``.

    Args:
        logits: ``[b, t, vocab]``.
        targets: ``[b]`` token ids.
        metric: ``"logit"`` or ``"logprob"``.

    Returns:
        ``[b]`` float64.
    """
    last = logits[:, -1, :].double()
    if metric == "logprob":
        last = torch.log_softmax(last, dim=-1)
    return last.gather(1, targets.view(-1, 1).to(last.device)).squeeze(1)


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or ``None`` when it is NaN or infinite (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def tensor_to_list(t: torch.Tensor | None) -> Any:
    """A JSON-able nested list of floats (NaN/inf → None) for a tensor, or ``None``."""
    if t is None:
        return None
    if t.dim() == 0:
        return finite_or_none(t.item())
    return [tensor_to_list(row) for row in t] if t.dim() > 1 else [finite_or_none(v) for v in t.tolist()]


def list_to_tensor(x: Any) -> torch.Tensor | None:
    """Inverse of :func:`tensor_to_list`: nested lists of floats (``None`` → NaN) as a float64 tensor, or ``None``."""
    if x is None:
        return None

    def fill(v: Any) -> Any:
        if isinstance(v, list):
            return [fill(e) for e in v]
        return float("nan") if v is None else float(v)

    return torch.tensor(fill(x), dtype=torch.float64)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text (header from the first row's keys; ``None`` written as an empty cell) for tidy rows."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
