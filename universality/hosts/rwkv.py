"""The RWKV-4 host (``model_type = "rwkv"``): Hugging Face ``RwkvForCausalLM`` weights, our forward.

The forward mirrors ``transformers``' RWKV-4 block for block, reading every
weight from the Hugging Face modules at call time (so analyses may edit, say,
``time_mix_key`` in place), and calls the hook runner at each point below. The
time mixing runs through our WKV kernel (:mod:`universality.hosts.wkv`): a
stable in-place scan with a hand-written backward instead of transformers'
autograd-traced Python loop.

Points per block ``blocks.{i}.`` in forward order, shapes ``[b, t, ·]``:

``resid_pre``  stream entering the block (block 0: *after* Hugging Face's ``pre_ln``)
``mixer_in``   ``ln1(resid_pre)``
``att.shift``  ``mixer_in`` of the previous position (zeros at t = 0)
``att.r``      receptance *after* the sigmoid (the gate, in (0, 1)) ``[b, t, A]``
``att.k``      key ``[b, t, A]`` (after the time-mix interpolation and projection)
``att.v``      value ``[b, t, A]``
``att.state``  WKV state after each position ``[b, t, A, 3]`` = (num, den, log_scale); on demand only
``att.wkv``    WKV output before the receptance gate ``[b, t, A]``
``mixer_out``  ``output(att.r * att.wkv)``, added to the stream
``mlp_in``     ``ln2(resid_pre + mixer_out)``
``ffn.shift``  ``mlp_in`` of the previous position (zeros at t = 0)
``ffn.k``      ``relu(key(mix))**2`` ``[b, t, intermediate]``
``ffn.v``      ``value(ffn.k)`` before the gate
``ffn.r``      channel-mix receptance after the sigmoid
``mlp_out``    ``ffn.r * ffn.v``, added to the stream
``resid_post`` stream leaving the block (after the halving, see below)

Global points: ``embed`` is the raw token embedding (before block 0's
``pre_ln``) and ``final_norm`` is ``ln_out`` of the last ``resid_post``.

Rescaling: in eval mode Hugging Face divides ``attention.output`` and
``feed_forward.value`` of block ``i`` by ``2**(i // rescale_every)`` (in place,
on the first forward) and halves the stream after every block with
``(i + 1) % rescale_every == 0``. This host does exactly the same, so there
``2 * resid_post - resid_pre == mixer_out + mlp_out`` while every other block is
plainly additive. In training mode neither happens (as in transformers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .base import Host
from .compat import require_attributes
from .hookrun import HookRun
from .registry import register_host
from .wkv import output_from_states, scan_states, shift_states, wkv

_BLOCK_POINTS = (
    "resid_pre", "mixer_in", "att.shift", "att.r", "att.k", "att.v", "att.state", "att.wkv", "mixer_out",
    "mlp_in", "ffn.shift", "ffn.k", "ffn.v", "ffn.r", "mlp_out", "resid_post",
)


def token_shift(x: torch.Tensor) -> torch.Tensor:
    """``x`` [b, t, d] moved one position later in time, zeros at t = 0."""
    return F.pad(x, (0, 0, 1, -1))


def time_mix(x: torch.Tensor, shifted: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """RWKV's token-shift interpolation ``x * mix + shifted * (1 - mix)`` [b, t, d]."""
    return x * mix + shifted * (1 - mix)


@register_host("rwkv")
class RwkvHost(Host):
    """RWKV-4 as transformers has it; hook vocabulary in the module docstring."""

    arch = "rwkv"
    block_points = _BLOCK_POINTS
    on_demand_points = ("att.state",)

    model_attrs = ("rwkv.blocks", "rwkv.embeddings", "rwkv.ln_out", "rwkv.layers_are_rescaled", "head")
    """What the host reads on ``RwkvForCausalLM`` (checked when a host is built)."""
    block_attrs = ("pre_ln", "ln1", "ln2", "attention.time_decay", "attention.time_first", "attention.time_mix_key",
                   "attention.time_mix_value", "attention.time_mix_receptance", "attention.key", "attention.value",
                   "attention.receptance", "attention.output", "feed_forward.time_mix_key",
                   "feed_forward.time_mix_receptance", "feed_forward.key", "feed_forward.value", "feed_forward.receptance")
    """What it reads on every block (``pre_ln`` on block 0 only)."""

    def __init__(self, model, tokenizer=None, name_or_path: str = ""):
        require_attributes(model, self.model_attrs, "RWKV")
        for i, block in enumerate(model.rwkv.blocks):
            require_attributes(block, self.block_attrs if i == 0 else self.block_attrs[1:], "RWKV")
        super().__init__(model, tokenizer, name_or_path)

    def halves_after(self, layer: int) -> bool:
        """Whether the stream is divided by 2 after block ``layer`` in the model's current mode."""
        every = int(self.config.rescale_every or 0)
        return bool(self.model.rwkv.layers_are_rescaled) and every > 0 and (layer + 1) % every == 0

    def _sync_rescaling(self) -> None:
        """Rescale (eval) or un-rescale (train) the output weights exactly when transformers would.

        transformers keeps the weights of ``attention.output`` and ``feed_forward.value`` of block ``i``
        divided by ``2**(i // rescale_every)`` while in eval mode, with the public flag
        ``layers_are_rescaled`` saying which state they are in; its own forward switches them. The host
        does the same switch itself (powers of two: exact in any float format) and sets the flag, so
        the two forwards can alternate on one model. Quantized weights are refused.
        """
        core = self.model.rwkv
        rescale = not core.training
        if bool(core.layers_are_rescaled) == rescale:
            return
        every = int(self.config.rescale_every or 0)
        if every > 0:
            with torch.no_grad():
                for i, block in enumerate(core.blocks):
                    factor = float(2 ** (i // every))
                    for weight in (block.attention.output.weight, block.feed_forward.value.weight):
                        if hasattr(weight, "SCB") or hasattr(weight, "quant_state") or not weight.is_floating_point():
                            raise UniversalityError("the RWKV host cannot rescale quantized weights; load the "
                                                    "checkpoint in a float dtype (float32, bfloat16 or float16)")
                        weight.div_(factor) if rescale else weight.mul_(factor)
        core.layers_are_rescaled = rescale

    def _forward(self, tokens: torch.Tensor, run: HookRun) -> torch.Tensor | None:
        self._sync_rescaling()
        core = self.model.rwkv
        x = run("embed", core.embeddings(tokens))
        for i, block in enumerate(core.blocks):
            if i == 0:
                x = block.pre_ln(x)
            x = self._block(block, i, x, run)
            if self._stop_after(run, i):
                return None
        x = run("final_norm", core.ln_out(x))
        return self.model.head(x)

    def _unembed(self, stream: torch.Tensor) -> torch.Tensor:
        self._sync_rescaling()
        return self.model.head(self.model.rwkv.ln_out(stream))

    def _block(self, block, i: int, x: torch.Tensor, run: HookRun) -> torch.Tensor:
        p = f"blocks.{i}."
        x = run(p + "resid_pre", x)
        att = block.attention
        h = run(p + "mixer_in", block.ln1(x))
        shifted = run(p + "att.shift", token_shift(h))
        r = run(p + "att.r", torch.sigmoid(att.receptance(time_mix(h, shifted, att.time_mix_receptance))))
        k = run(p + "att.k", att.key(time_mix(h, shifted, att.time_mix_key)))
        v = run(p + "att.v", att.value(time_mix(h, shifted, att.time_mix_value)))
        if run.wants(p + "att.state"):
            states = run(p + "att.state", scan_states(k, v, att.time_decay))
            y = output_from_states(shift_states(states), k, v, att.time_first).to(k.dtype)
        else:
            y = wkv(k, v, att.time_decay, att.time_first)
        y = run(p + "att.wkv", y)
        mixer_out = run(p + "mixer_out", att.output(r * y))
        x = x + mixer_out

        ffn = block.feed_forward
        h = run(p + "mlp_in", block.ln2(x))
        shifted = run(p + "ffn.shift", token_shift(h))
        fk = run(p + "ffn.k", torch.square(torch.relu(ffn.key(time_mix(h, shifted, ffn.time_mix_key)))))
        fv = run(p + "ffn.v", ffn.value(fk))
        fr = run(p + "ffn.r", torch.sigmoid(ffn.receptance(time_mix(h, shifted, ffn.time_mix_receptance))))
        x = x + run(p + "mlp_out", fr * fv)
        if self.halves_after(i):
            x = x / 2
        return run(p + "resid_post", x)
