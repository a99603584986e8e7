"""The architecture-independent part of every host: validation and the public calls.

A concrete host (Transformer, Mamba, RWKV) implements :meth:`Host._forward`,
which runs the model over ``tokens`` calling ``run(name, tensor)`` at each hook
point of the vocabulary in ``docs/design.md``; everything else lives here,
including the host facts other modules read: :attr:`Host.max_positions`,
:attr:`Host.fingerprint`, :meth:`Host.hook_name` and :meth:`Host.layer_at`.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping

import torch

from .._errors import UniversalityError
from . import names
from .fingerprint import compute_fingerprint, weights_state_key
from .hookrun import HookFn, HookRun

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


class Host:
    """A causal language model with one hook vocabulary over its internals.

    Attributes:
        arch: ``"transformer" | "mamba" | "rwkv"``.
        model_type: the Hugging Face ``config.model_type`` it was loaded from.
        model: the underlying Hugging Face ``*ForCausalLM`` module (weights live there).
        config: the Hugging Face config.
        tokenizer: the checkpoint's tokenizer, or ``None`` when the folder has none.
        n_layers: number of blocks.
        d_model: width of the residual stream.
        vocab_size: number of token ids the embedding accepts.
        hook_points: every valid hook name, in forward order.
        name_or_path: what :func:`load_host` was given.
    """

    arch: str = ""
    #: per-block hook suffixes, in forward order
    block_points: tuple[str, ...] = ()
    #: per-block suffixes computed only when read or written (costly: per-position states)
    on_demand_points: tuple[str, ...] = ()

    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, name_or_path: str = ""):
        self.model = model.eval()
        self.config = model.config
        self.model_type = self.config.model_type
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.n_layers = int(self._n_layers())
        self.d_model = int(self._d_model())
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        points = ["embed"]
        for i in range(self.n_layers):
            points += [f"blocks.{i}.{p}" for p in self.block_points]
        points.append("final_norm")
        self.hook_points: tuple[str, ...] = tuple(points)
        self._point_set = frozenset(points)
        self._fingerprint: tuple[tuple, str] | None = None
        self._released: dict[str, Any] | None = None

    # ----- to implement per architecture -------------------------------------------
    def _n_layers(self) -> int:
        """Number of blocks; HF's standard config name, overridden where a layout counts otherwise."""
        return int(self.config.num_hidden_layers)

    def _d_model(self) -> int:
        """Residual width; HF's standard config name, overridden where a layout differs."""
        return int(self.config.hidden_size)

    def _forward(self, tokens: torch.Tensor, run: HookRun) -> torch.Tensor | None:
        """Run the model on ``tokens`` [b, t], calling ``run`` at every hook point.

        Returns logits [b, t, vocab], or ``None`` when ``run.last_block`` says the
        pass may stop after that block.
        """
        raise NotImplementedError

    def _unembed(self, stream: torch.Tensor) -> torch.Tensor:
        """The final norm and the unembedding of this architecture (see :meth:`unembed`)."""
        raise NotImplementedError

    # ----- public ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device the weights live on (where they lived, after :meth:`release_weights`)."""
        if self._released is not None:
            return self._released["device"]
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        """Longest sequence this host accepts (``None`` when unbounded, e.g. Mamba and RWKV)."""
        n = self._max_positions()
        return None if n is None else int(n)

    @property
    def fingerprint(self) -> str:
        """16-hex hash of architecture, config and every weight's bytes (equal fingerprints: the same function of the tokens).

        Computed once and cached; the weights are hashed again only when one was
        replaced, moved or modified in place since (their version counters say so;
        a write through ``param.data``, which bypasses the counter, is not seen).
        """
        if self._released is not None:
            return self._released["fingerprint"]
        key = weights_state_key(self.model)
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, compute_fingerprint(self))
        return self._fingerprint[1]

    def release_weights(self) -> None:
        """Free the weights' memory once only this host's facts are still needed (a pipeline past its forward passes).

        The parameters move to PyTorch's ``meta`` device (shapes and dtypes kept, no storage); the fingerprint,
        parameter count and every attribute stay readable, and a later forward pass is one clear error.
        """
        if self._released is None:
            self._released = {"fingerprint": self.fingerprint, "n_params": int(sum(p.numel() for p in self.model.parameters())),
                              "device": self.device}
            self.model.to("meta")

    @property
    def released(self) -> bool:
        """Whether :meth:`release_weights` dropped the weights."""
        return self._released is not None

    def hook_name(self, layer: int, point: str) -> str:
        """Full name of per-block hook ``point`` at block ``layer`` (``"blocks.<layer>.<point>"``), checked against this host."""
        name = names.hook_name(layer, point)
        self.validate_names([name])
        return name

    def layer_at(self, depth: float) -> int:
        """Block index at relative depth ``depth`` in [0, 1] (0: first block, 1: last; rounded half up)."""
        return names.layer_at(self.n_layers, depth)

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: Iterable[str] | None = None,
        hooks: Mapping[str, HookFn | list[HookFn]] | None = None,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Run ``tokens`` [b, t] and return ``(logits [b, t, vocab], cache)``.

        ``names`` lists the hook points to record (default: every point except the
        on-demand per-position states). ``hooks`` may patch points in the same
        pass; cached values are taken after patching. With ``return_logits=False``
        the pass stops after the last block any requested point needs and the
        logits are ``None``. Gradients flow unless the caller disables them.
        """
        if names is None:
            names = [n for n in self.hook_points if not self._is_on_demand(n)]
        names = list(names)
        self.validate_names(names)
        if hooks:
            self.validate_names(hooks.keys())
        tokens = self._check_tokens(tokens)
        run = HookRun(names, hooks)
        run.last_block = None if return_logits else self._last_block(list(names) + list(hooks or {}))
        logits = self._forward(tokens, run)
        return (logits if return_logits else None), run.cache

    def run_with_hooks(self, tokens: torch.Tensor, hooks: Mapping[str, HookFn | list[HookFn]]) -> torch.Tensor:
        """Run ``tokens`` [b, t] with ``hooks`` (name → fn(tensor) → tensor | None); return logits [b, t, vocab]."""
        self.validate_names(hooks.keys())
        tokens = self._check_tokens(tokens)
        run = HookRun((), hooks)
        run.last_block = None
        return self._forward(tokens, run)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Plain forward: logits [b, t, vocab]."""
        return self.run_with_hooks(tokens, {})

    def unembed(self, stream: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab]`` of a residual stream ``[..., d_model]``: the final norm, then the unembedding.

        This is the logit lens: ``unembed(cache[f"blocks.{n_layers - 1}.resid_post"])`` equals the
        forward's logits. Differentiable (the tuned lens trains through it); no hook runs.
        """
        if stream.shape[-1] != self.d_model:
            raise UniversalityError(f"unembed takes a stream whose last axis is d_model = {self.d_model}; got shape {tuple(stream.shape)}")
        return self._unembed(stream.to(device=self.device))

    def validate_names(self, names: Iterable[str]) -> None:
        """Raise a :class:`UniversalityError` naming the closest valid points for any unknown name."""
        for name in names:
            if name in self._point_set:
                continue
            m = _BLOCK_RE.match(str(name))
            if m and int(m.group(1)) >= self.n_layers and f"blocks.0.{m.group(2)}" in self._point_set:
                raise UniversalityError(
                    f"hook '{name}' names block {m.group(1)}, but this {self.arch} host has blocks 0..{self.n_layers - 1}"
                )
            close = difflib.get_close_matches(str(name), self.hook_points, n=3, cutoff=0.5)
            hint = f"closest valid names: {', '.join(close)}" if close else f"valid per-block points: {', '.join(self.block_points)}"
            raise UniversalityError(f"unknown hook point '{name}' for this {self.arch} host; {hint}")

    def layer_of(self, name: str) -> int | None:
        """Block index a hook point belongs to (``-1`` for ``embed``, ``None`` for ``final_norm``)."""
        if name == "embed":
            return -1
        m = _BLOCK_RE.match(name)
        return int(m.group(1)) if m else None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: architecture, sizes, parameter count, dtype, source."""
        return {
            "name_or_path": self.name_or_path,
            "arch": self.arch,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "vocab_size": self.vocab_size,
            "n_params": int(sum(p.numel() for p in self.model.parameters())),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_type} '{self.name_or_path}' layers={self.n_layers} d_model={self.d_model}>"

    # ----- helpers -----------------------------------------------------------------
    def _is_on_demand(self, name: str) -> bool:
        m = _BLOCK_RE.match(name)
        return bool(m) and m.group(2) in self.on_demand_points

    def _last_block(self, names: list[str]) -> int | None:
        last = -1
        for n in names:
            layer = self.layer_of(n)
            if layer is None:
                return None
            last = max(last, layer)
        return last

    def _check_tokens(self, tokens: Any) -> torch.Tensor:
        if self._released is not None:
            raise UniversalityError(f"the weights of model '{self.name_or_path}' were released after its activations were cached; "
                                    "load the model again to run it")
        if not isinstance(tokens, torch.Tensor):
            try:
                tokens = torch.as_tensor(tokens)
            except (TypeError, ValueError):
                raise UniversalityError("tokens must be a 2-D integer tensor [batch, seq]; got something that is not array-like") from None
        if tokens.dim() != 2:
            raise UniversalityError(f"tokens must be a 2-D integer tensor [batch, seq]; got shape {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
            raise UniversalityError(f"tokens must hold integer ids; got dtype {tokens.dtype}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise UniversalityError(f"tokens is empty (shape {tuple(tokens.shape)}); give at least one sequence of one token")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise UniversalityError(f"token id {bad} is outside this model's vocabulary 0..{self.vocab_size - 1}")
        max_len = self.max_positions
        if max_len is not None and tokens.shape[1] > max_len:
            raise UniversalityError(f"sequence length {tokens.shape[1]} exceeds this model's context of {max_len} positions")
        return tokens.to(device=self.device, dtype=torch.long)

    def _max_positions(self) -> int | None:
        """Longest accepted sequence, per architecture (``None``: unbounded); read it through :attr:`max_positions`."""
        return None

    @staticmethod
    def _stop_after(run: HookRun, layer: int) -> bool:
        """True when the pass may end after block ``layer`` (nothing later is needed)."""
        return run.last_block is not None and layer >= run.last_block
