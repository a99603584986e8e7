"""Which of our hook points each entry of a Hugging Face model's ``hidden_states`` output is.

Releases of transformers disagree on that layout: most list the embeddings first and end with the
final norm's output, but Mamba listed every block's *output* and replaced the last one with the
final norm until Mamba-2 switched to the embeddings-first layout in transformers 5.25. Code that
compares against ``hidden_states`` (tests, hook-name aliases for imported dictionaries) therefore
derives the layout from the model at hand instead of assuming it: :func:`hidden_states_layout`
runs the model once with forward hooks on its blocks and names each entry by the block input or
output it equals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._errors import UniversalityError


@dataclass(frozen=True)
class HiddenStatesLayout:
    """Our hook name for every entry of ``output_hidden_states``."""

    names: tuple[str, ...]
    """``names[j]`` is the point ``hidden_states[j]`` holds: ``"embed"``, ``"blocks.{i}.resid_post"`` or ``"final_norm"``."""

    @property
    def embeddings_first(self) -> bool:
        """Whether entry 0 is the embedding output (``False``: entry 0 is block 0's output)."""
        return self.names[0] == "embed"

    def index_of(self, name: str) -> int | None:
        """Index of the entry holding ``name``, ``None`` when this model does not list it."""
        return self.names.index(name) if name in self.names else None


def block_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks: the first ``nn.ModuleList`` with ``config.num_hidden_layers`` entries."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and n is not None and len(module) == n:
            return module
    import transformers

    raise UniversalityError(f"no list of {n} blocks found in {type(model).__name__} under transformers "
                            f"{transformers.__version__}; this model's layout is not one the hosts know")


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return getattr(value, "hidden_states", None) if not isinstance(value, (tuple, list)) else None


@torch.no_grad()
def hidden_states_layout(model: nn.Module, tokens: torch.Tensor) -> HiddenStatesLayout:
    """Name every entry of ``model(tokens, output_hidden_states=True).hidden_states`` ``[b, t, d]``.

    Each entry is compared with the input and the output of every block (captured by forward hooks):
    block 0's input is ``"embed"``, block ``i``'s output (or half of it: RWKV's eval-mode rescaling) or
    block ``i + 1``'s input is ``"blocks.{i}.resid_post"``, and a last entry equal to neither is ``"final_norm"``. Anything else
    raises :class:`UniversalityError` naming the transformers version and the entry.
    """
    import transformers

    blocks = block_list(model)
    inputs: list[torch.Tensor | None] = [None] * len(blocks)
    outputs: list[torch.Tensor | None] = [None] * len(blocks)
    handles = []
    for i, block in enumerate(blocks):
        def hook(module, args, kwargs, output, i=i):
            x = args[0] if args else kwargs.get("hidden_states")
            inputs[i] = x.detach().clone() if isinstance(x, torch.Tensor) else None
            y = _first_tensor(output)
            outputs[i] = y.detach().clone() if y is not None else None
        handles.append(block.register_forward_hook(hook, with_kwargs=True))
    try:
        hidden = model(tokens, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        for h in handles:
            h.remove()

    def same(a: torch.Tensor | None, b: torch.Tensor) -> bool:
        if a is None or a.shape != b.shape:
            return False
        return bool(torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6 * (1 + float(b.abs().max()))))

    def halved(a: torch.Tensor | None, b: torch.Tensor) -> bool:  # RWKV halves the stream after some blocks
        return a is not None and same(a / 2, b)

    names = []
    for j, h in enumerate(hidden):
        if same(inputs[0], h):
            names.append("embed")
        elif (i := next((i for i in range(len(blocks)) if same(outputs[i], h) or halved(outputs[i], h)), None)) is not None:
            names.append(f"blocks.{i}.resid_post")
        elif (i := next((i for i in range(1, len(blocks)) if same(inputs[i], h)), None)) is not None:
            names.append(f"blocks.{i - 1}.resid_post")
        elif j == len(hidden) - 1:
            names.append("final_norm")
        else:
            raise UniversalityError(f"hidden_states[{j}] of {type(model).__name__} under transformers "
                                    f"{transformers.__version__} matches no block input or output; "
                                    "its hidden_states layout is not one the hosts know")
    return HiddenStatesLayout(tuple(names))
