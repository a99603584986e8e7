"""Cross-model steering: steer model A with latent ``i`` and model B with ``i``'s partner, compare the effects.

The partner comes from any matching (MPPC, a joint dictionary, an explanation match). Each model's
*effect* is the mean over the steered positions of ``log p_steered - log p_base`` over the shared
vocabulary ``[V]``. Two effects are compared by the KL between their softmaxes, the overlap of their
``top_k`` promoted tokens and their Pearson correlation. The controls steer B instead with a random
latent of about the partner's activation frequency, and with a random direction of the partner's
norm (:func:`control_directions`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .steer import PromptSet, SteeringVector, pad_prompts, steered_logits, steering_hooks

CONDITIONS = ("matched", "random_latent", "random_direction")
"""What B is steered with: the partner, a same-frequency random latent, a same-norm random direction."""


@torch.no_grad()
def steering_effect(host: Any, sv: SteeringVector, multiplier: float, prompts: PromptSet, start: float = 0.5) -> torch.Tensor:
    """Mean over steered positions of ``log p_steered - log p_base``: ``[vocab]`` float64 (two forwards per batch)."""
    tokens, lengths = pad_prompts(prompts.prompts)
    st = (lengths.double() * start).long().clamp(min=1)
    st = torch.minimum(st, lengths - 1).clamp(min=0)
    base = F.log_softmax(steered_logits(host, tokens, {}, 0.0, lengths).double(), -1)
    steer = F.log_softmax(steered_logits(host, tokens, steering_hooks(host, sv, multiplier, st), multiplier, lengths).double(), -1)
    rows = torch.cat([(steer - base)[b, s:n] for b, (s, n) in enumerate(zip(st.tolist(), lengths.tolist()))])
    return rows.mean(0).cpu()


def control_directions(W_dec: torch.Tensor, frequency: torch.Tensor, partner: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """B's steering directions: ``matched`` (row ``partner`` of ``W_dec`` [n, d]), ``random_latent`` (the row of the
    other latent whose activation ``frequency`` [n] is closest to the partner's; ties broken at random) and
    ``random_direction`` (Gaussian, rescaled to the partner row's norm)."""
    n = int(W_dec.shape[0])
    if not 0 <= partner < n or frequency.shape[0] != n:
        raise UniversalityError(f"partner latent {partner} or the frequency vector does not fit a dictionary of {n} latents")
    gen = torch.Generator().manual_seed(seed)
    gap = (frequency.double() - float(frequency[partner])).abs()
    gap[partner] = float("inf")
    near = torch.nonzero(gap == gap.min()).view(-1)
    other = int(near[torch.randint(0, near.numel(), (1,), generator=gen)])
    direction = torch.randn(W_dec.shape[1], generator=gen, dtype=torch.float64)
    row = W_dec[partner].detach().double()
    return {"matched": row, "random_latent": W_dec[other].detach().double(),
            "random_direction": direction * row.norm() / direction.norm(), "_random_latent_index": torch.tensor(other)}


def compare_effects(effect_a: torch.Tensor, effect_b: torch.Tensor, top_k: int = 20) -> dict:
    """``{"kl": KL(softmax(a) || softmax(b)), "top_overlap": |top_k(a) ∩ top_k(b)| / k, "r": Pearson r}`` of two
    effects over the same vocabulary ``[V]``."""
    if effect_a.shape != effect_b.shape:
        raise UniversalityError(f"the two models' vocabularies differ ({effect_a.shape[0]} vs {effect_b.shape[0]} tokens); "
                                "cross-model steering compares output distributions over a shared vocabulary")
    la, lb = F.log_softmax(effect_a.double(), -1), F.log_softmax(effect_b.double(), -1)
    k = min(top_k, effect_a.shape[0])
    ta, tb = set(effect_a.topk(k).indices.tolist()), set(effect_b.topk(k).indices.tolist())
    r = np.corrcoef(effect_a.numpy(), effect_b.numpy())[0, 1] if effect_a.std() > 0 and effect_b.std() > 0 else 0.0
    return {"kl": float((la.exp() * (la - lb)).sum()), "top_overlap": len(ta & tb) / k, "r": float(r)}


@dataclass
class CrossSteerResult:
    """Model A steered with latent ``latent_a``, model B with its partner and the controls."""

    model_a: str
    model_b: str
    hook_a: str
    hook_b: str
    latent_a: int
    latent_b: int
    random_latent_b: int
    multiplier: float
    top_k: int
    conditions: dict = field(default_factory=dict)
    """condition (:data:`CONDITIONS`) → ``{"kl", "top_overlap", "r"}`` of A's effect vs B's under it."""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CrossSteerResult":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def cross_model_steering(host_a: Any, coder_a: Any, latent_a: int, hook_a: str, host_b: Any, coder_b: Any, latent_b: int,
                         hook_b: str, prompts: PromptSet, frequency_b: torch.Tensor, multiplier: float = 8.0,
                         top_k: int = 20, seed: int = 0, names: tuple[str, str] = ("A", "B")) -> CrossSteerResult:
    """Steer A with ``coder_a``'s latent ``latent_a`` and B with ``coder_b``'s ``latent_b`` (its partner), plus B's
    controls; ``prompts`` are token ids both hosts read (shared tokenizer); ``frequency_b`` [n_latents_b] is each
    B latent's activation frequency. Phases: (1) A's effect; (2) B's directions; (3) B's effects and comparisons."""
    if host_a.vocab_size != host_b.vocab_size:
        raise UniversalityError(f"models A and B have different vocabularies ({host_a.vocab_size} vs {host_b.vocab_size}); "
                                "cross-model steering needs a shared tokenizer")
    prompts.check(host_a, "cross-model")
    sv_a = SteeringVector(hook_a, coder_a.W_dec[latent_a].detach().double().cpu(), "feature", f"latent {latent_a}")
    effect_a = steering_effect(host_a, sv_a, multiplier, prompts)
    dirs = control_directions(coder_b.W_dec, frequency_b, latent_b, seed)
    out = {}
    for cond in CONDITIONS:
        sv_b = SteeringVector(hook_b, dirs[cond], "feature", cond)
        out[cond] = compare_effects(effect_a, steering_effect(host_b, sv_b, multiplier, prompts), top_k)
    return CrossSteerResult(names[0], names[1], hook_a, hook_b, int(latent_a), int(latent_b),
                            int(dirs["_random_latent_index"]), float(multiplier), int(top_k), out)
