"""The part Mamba-1 and Mamba-2 hosts share: the backbone pass around their blocks.

``MambaBackboneHost._forward`` runs ``embed`` → each block (``_block``, per
architecture) → the final RMS norm (``final_norm``) → the language-model head;
subclasses supply ``_block`` and may switch the fused norm kernel on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import Host
from ..compat import require_attributes
from ..hookrun import HookRun
from .ops import lm_head, rms_norm

_LOW_PRECISION = (torch.float16, torch.bfloat16)
SSM_BLOCK_POINTS = ("resid_pre", "mixer_in", "ssm.in_x", "ssm.gate", "ssm.conv_out", "ssm.dt", "ssm.B", "ssm.C",
                    "ssm.state", "ssm.y", "mixer_out", "resid_post")


class MambaBackboneHost(Host):
    """Base of the Mamba hosts: ``MambaForCausalLM``-style ``backbone.{embeddings, layers, norm_f}`` + ``lm_head``."""

    arch = "mamba"
    block_points = SSM_BLOCK_POINTS
    on_demand_points = ("ssm.state",)
    model_attrs: tuple[str, ...] = ("backbone.embeddings", "backbone.layers", "backbone.norm_f.weight",
                                    "backbone.norm_f.variance_epsilon", "lm_head")
    """Attribute paths read on the ``*ForCausalLM`` module (checked when a host is built)."""
    block_attrs: tuple[str, ...] = ()
    """Attribute paths read on every block (``layers[i]``), per subclass."""

    def __init__(self, model, tokenizer=None, name_or_path: str = ""):
        name = f"Mamba ({model.config.model_type})"
        require_attributes(model, self.model_attrs, name)
        for layer in model.backbone.layers:
            require_attributes(layer, self.block_attrs, name)
        super().__init__(model, tokenizer, name_or_path)

    def _norm_kernel(self) -> bool:
        """Whether the fused C RMS-norm kernel may be used for the final norm (it falls back by itself)."""
        return True

    def _block(self, i: int, layer: torch.nn.Module, h: torch.Tensor, run: HookRun) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, tokens: torch.Tensor, run: HookRun) -> torch.Tensor | None:
        backbone = self.model.backbone
        h = run("embed", F.embedding(tokens, backbone.embeddings.weight))
        for i, layer in enumerate(backbone.layers):
            h = self._block(i, layer, h, run)
            if self._stop_after(run, i):
                return None
        return self._head(run("final_norm", self._final_norm(h)))

    def _final_norm(self, h: torch.Tensor) -> torch.Tensor:
        """``norm_f`` of the stream ``h`` [..., d_model]."""
        norm = self.model.backbone.norm_f
        return rms_norm(h.to(norm.weight.dtype), norm.weight, norm.variance_epsilon, use_kernel=self._norm_kernel())

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [..., vocab] of the normed stream ``h`` (float32 for half-precision weights)."""
        head = self.model.lm_head
        logits = lm_head(h.to(head.weight.dtype), head.weight, head.bias)
        return logits.float() if logits.dtype in _LOW_PRECISION else logits

    def _unembed(self, stream: torch.Tensor) -> torch.Tensor:
        return self._head(self._final_norm(stream))
