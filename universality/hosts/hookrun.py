"""One forward pass's hook bookkeeping: which points to cache, which to replace.

A host's forward calls ``run(name, tensor)`` at every hook point. The call
applies the user's hook functions for that name (each may return a replacement
of the same shape, or ``None`` to keep the tensor), records the resulting tensor
in the cache when asked, and returns it so the forward continues with it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch

from .._errors import UniversalityError

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


class HookRun:
    """State of one forward pass: requested cache names and hook functions.

    Attributes:
        cache: name → tensor, filled during the pass (after any replacement).
        last_block: the highest block index any requested point lives in, or
            ``None`` when a point after the blocks (``final_norm``) or the logits are needed.
    """

    def __init__(self, cache_names: Iterable[str] = (), hooks: Mapping[str, HookFn | list[HookFn]] | None = None):
        self.cache_names = frozenset(cache_names)
        self.hooks: dict[str, list[HookFn]] = {}
        for name, fns in (hooks or {}).items():
            fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
            for fn in fns:
                if not callable(fn):
                    raise UniversalityError(f"the hook for '{name}' is {type(fn).__name__}, not a function tensor -> tensor | None")
            self.hooks[name] = fns
        self.cache: dict[str, torch.Tensor] = {}

    def wants(self, name: str) -> bool:
        """Whether ``name`` is read or written in this pass (lets hosts skip optional work)."""
        return name in self.cache_names or name in self.hooks

    def wants_any(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` is read or written in this pass."""
        return any(self.wants(n) for n in names)

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Apply the hooks registered for ``name`` to ``x``, cache the result, return it."""
        for fn in self.hooks.get(name, ()):
            out = fn(x)
            if out is None:
                continue
            if not isinstance(out, torch.Tensor):
                raise UniversalityError(f"the hook on '{name}' returned {type(out).__name__}; return a tensor of shape {tuple(x.shape)} or None")
            if out.shape != x.shape:
                raise UniversalityError(
                    f"the hook on '{name}' returned shape {tuple(out.shape)}; it must keep the shape {tuple(x.shape)}"
                )
            x = out.to(dtype=x.dtype, device=x.device)
        if name in self.cache_names:
            self.cache[name] = x
        return x
