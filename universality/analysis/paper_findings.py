"""The reference paper's Mamba circuit findings, tested on any host: one record per model.

The paper localises Mamba's induction circuit to one mid-late layer's SSM state, finds that
layer's causal convolution acting as the previous-token mixer, and shows the *Off-by-One*
write: corrupting only the state write at ``s + 1`` moves the induction metric, at ``s`` it
barely does. :func:`paper_findings` measures the same three things on one host, given its
:class:`~universality.analysis.InductionSummary`:

1. **Localisation** — the induction layer (largest per-layer score: in-context gain lost when the
   layer's mixer output is mean-ablated) and its share of the positive scores.
2. **Previous-token mixer** — in the induction layer, remove the one-position shift (Mamba: zero
   the conv taps at lags ≥ 1; RWKV: time-mix coefficients set to 1, i.e. no token shift) and
   measure the in-context gain lost, next to the first-half loss change as a damage control.
   Transformers mix previous tokens through attention heads (see the per-head scores): not tested.
3. **Behavioural Off-by-One** — :func:`~universality.analysis.write_lag` on the induction layer:
   the signed metric change when only the write at ``s + δ`` is corrupted, ``δ = 0..3``, with
   95 % intervals over (prompt, source) samples.

Then one sentence per model says whether each finding holds and how sure the intervals make us.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch

from .._records import require_keys
from ._points import check_arch, finite_or_none
from .induction import InductionSummary, _half_losses
from .tasks import repeated_halves
from .write_lag import write_lag

MIN_ICL = 1.0
"""In-context gain (nats) below which a model is said to have no induction to analyse."""
MAX_DAMAGE_SHARE = 0.5
"""The mixer test is confounded when removing the shift raises the first-half loss by at least this share of the
in-context gain it removes: the edit then breaks the model, not only its copying."""


@dataclass
class OffByOne:
    """Behavioural write lag of the induction layer (metric units, signed; index = lag δ)."""

    change: list[float]
    """Mean metric change when only the write at ``s + δ`` is corrupted."""
    low: list[float]
    """Lower end of the 95 % interval per δ."""
    high: list[float]
    """Upper end of the 95 % interval per δ."""
    full_change: float
    """Mean change when the layer's whole input at ``s`` is corrupted."""
    samples: int
    """(prompt, source) samples."""

    @property
    def peak(self) -> int:
        """Lag with the largest |mean change|."""
        return max(range(len(self.change)), key=lambda d: abs(self.change[d]))

    def excludes_zero(self, lag: int) -> bool:
        """Whether the 95 % interval at ``lag`` lies on one side of 0."""
        return self.low[lag] > 0 or self.high[lag] < 0


@dataclass
class PaperFindings:
    """One model's record of the paper's three findings (results.json ``paper_findings``)."""

    model: str
    """Label of the host in the run."""
    arch: str
    """``transformer``, ``mamba`` or ``rwkv``."""
    icl_score: float
    """In-context gain on repeated halves (nats) from the induction summary."""
    induction_layer: int | None
    """Layer with the largest per-layer score (``None`` without layer scores)."""
    layer_share: float | None
    """That layer's share of the positive layer scores."""
    mixer: str
    """What is tested as the previous-token mixer: ``"conv"``, ``"token shift"`` or ``"attention heads"``."""
    mixer_gain_lost: float | None
    """In-context gain lost (nats) when the induction layer's shift is removed (``None``: not tested)."""
    mixer_first_half_change: float | None
    """Change of the first-half loss under the same edit (damage that is not about copying)."""
    off_by_one: OffByOne | None
    """Behavioural write lag of the induction layer (``None``: not measured)."""
    verdict: str = ""
    """One sentence: do the paper's findings hold here, and how sure are we."""
    top_components: list[dict] = field(default_factory=list)
    """The three largest patching effects ``{component, position, normalised_effect}``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        for k in ("icl_score", "layer_share", "mixer_gain_lost", "mixer_first_half_change"):
            d[k] = None if d[k] is None else finite_or_none(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PaperFindings":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("model", "arch", "icl_score", "induction_layer", "mixer", "off_by_one"), "paper findings")
        obo = d.get("off_by_one")
        return cls(d["model"], d["arch"], d["icl_score"], d["induction_layer"], d.get("layer_share"), d["mixer"],
                   d.get("mixer_gain_lost"), d.get("mixer_first_half_change"), OffByOne(**obo) if obo else None,
                   d.get("verdict", ""), list(d.get("top_components") or []))


@contextlib.contextmanager
def without_shift(host, layer: int) -> Iterator[str]:
    """Inside the block, ``layer`` of ``host`` mixes no previous token through its conv / token shift.

    Mamba-1/2: the conv taps at lags ≥ 1 are zeroed (lag 0 and the bias stay). RWKV-4: the
    time-mix coefficients of the time-mix and channel-mix blocks are set to 1 (the shifted
    input gets weight 0). Weights are restored on exit. Yields the mixer's name.
    """
    arch = check_arch(host, "without_shift")
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    if arch == "mamba":
        conv = host.model.backbone.layers[layer].mixer.conv1d.weight  # [channels, 1, K]; index K-1 is lag 0
        targets, name = [(conv, lambda w: w[..., :-1].zero_())], "conv"
    elif arch == "rwkv":
        blk = host.model.rwkv.blocks[layer]
        mixes = [blk.attention.time_mix_key, blk.attention.time_mix_value, blk.attention.time_mix_receptance,
                 blk.feed_forward.time_mix_key, blk.feed_forward.time_mix_receptance]
        targets, name = [(m, lambda w: w.fill_(1.0)) for m in mixes], "token shift"
    else:
        yield "attention heads"
        return
    try:
        with torch.no_grad():
            for w, edit in targets:
                saved.append((w, w.detach().clone()))
                edit(w.data)
        yield name
    finally:
        with torch.no_grad():
            for w, old in saved:
                w.data.copy_(old)


@torch.no_grad()
def _halves_losses(host, tokens: torch.Tensor, half: int) -> tuple[float, float]:
    logits = host.run_with_hooks(tokens, {})
    f, s = _half_losses(logits, tokens, half)
    return f.mean().item(), s.mean().item()


def paper_findings(host, summary: InductionSummary, n_prompts: int = 16, half: int = 16, seq_len: int = 32,
                   n_sources: int = 4, seed: int = 0) -> PaperFindings:
    """Test the paper's three Mamba findings on ``host`` (see the module docstring).

    Args:
        host: a Transformer, Mamba or RWKV host.
        summary: its induction summary (per-layer scores and patching table).
        n_prompts: repeated-half sequences for the shift test, and prompts per source for the Off-by-One.
        half: length of each repeated half.
        seq_len: prompt length of the Off-by-One task.
        n_sources: source positions of the Off-by-One task.
        seed: seed of the random sequences.

    Returns:
        :class:`PaperFindings` with the verdict sentence filled in.
    """
    arch = check_arch(host, "paper_findings")
    scores = list(summary.layer_scores)
    layer = max(range(len(scores)), key=lambda i: scores[i]) if scores else None
    pos = sum(x for x in scores if x > 0)
    share = (scores[layer] / pos) if layer is not None and pos > 0 else None
    comps = sorted(summary.components, key=lambda c: -abs(c.get("normalised_effect", 0.0)))[:3]
    out = PaperFindings(summary.model, arch, float(summary.icl_score), layer, share,
                        {"mamba": "conv", "rwkv": "token shift"}.get(arch, "attention heads"), None, None, None,
                        top_components=[{k: c.get(k) for k in ("component", "position", "normalised_effect")} for c in comps])
    if layer is not None and arch != "transformer":
        tokens = repeated_halves(n_prompts, half, host.vocab_size, torch.Generator().manual_seed(seed))
        f0, s0 = _halves_losses(host, tokens, half)
        with without_shift(host, layer):
            f1, s1 = _halves_losses(host, tokens, half)
        out.mixer_gain_lost = (f0 - s0) - (f1 - s1)
        out.mixer_first_half_change = f1 - f0
    if layer is not None:
        prof = write_lag(host, layer, n_seqs=2, seq_len=seq_len, n_sources=1, n_prompts=n_prompts,
                         n_behavioural_sources=n_sources, seed=seed)
        iv = prof.behavioural_interval
        out.off_by_one = OffByOne([float(x) for x in prof.behavioural_change], [float(x) for x in iv[:, 0]],
                                  [float(x) for x in iv[:, 1]], float(prof.behavioural_full_change), prof.behavioural_samples)
    out.verdict = verdict(out)
    return out


def _fmt_interval(o: OffByOne, d: int) -> str:
    return f"{o.change[d]:+.2f} [{o.low[d]:+.2f}, {o.high[d]:+.2f}]"


def verdict(f: PaperFindings) -> str:
    """One sentence: whether the paper's localisation, mixer and Off-by-One findings hold for this model."""
    name = f"{f.model} ({f.arch})"
    if f.icl_score < MIN_ICL or f.induction_layer is None:
        return (f"{name}: no induction to analyse (in-context gain {f.icl_score:.2f} nats < {MIN_ICL}), "
                "so the paper's findings cannot be tested on it.")
    parts = [f"induction sits in layer {f.induction_layer}"
             + (f" ({100 * f.layer_share:.0f} % of the positive layer scores)" if f.layer_share is not None else "")]
    held = []
    local = f.layer_share is not None and f.layer_share >= 0.5
    held.append(local)
    if f.mixer_gain_lost is not None:
        frac = f.mixer_gain_lost / f.icl_score
        damage = f.mixer_first_half_change or 0.0
        confounded = frac >= 0.5 and damage >= MAX_DAMAGE_SHARE * f.mixer_gain_lost
        held.append(frac >= 0.5 and not confounded)
        if confounded:
            parts.append(f"removing its {f.mixer} removes {100 * frac:.0f} % of the in-context gain but also raises "
                         f"the first-half loss by {damage:.2f} nats, so that test cannot tell the mixer from general damage")
        else:
            parts.append(f"removing its {f.mixer} removes {100 * frac:.0f} % of the in-context gain "
                         f"(first-half loss {damage:+.2f} nats)")
    o = f.off_by_one
    if o is not None and len(o.change) > 1:
        obo = o.peak == 1 and o.excludes_zero(1) and abs(o.change[1]) > 2 * abs(o.change[0])
        if f.arch != "transformer":
            held.append(obo)
        parts.append(f"corrupting only the write at s+1 moves the metric by {_fmt_interval(o, 1)}, at s by "
                     f"{_fmt_interval(o, 0)} ({o.samples} samples, 95 % intervals)")
    if f.arch == "transformer":
        head = "the paper's findings are about Mamba; for comparison, "
    elif all(held):
        head = "the paper's findings hold: "
    elif any(held):
        head = "the paper's findings hold in part: "
    else:
        head = "the paper's findings do not hold: "
    sure = ""
    if o is not None and f.arch != "transformer":
        sure = ("; the Off-by-One intervals separate s+1 from 0" if o.excludes_zero(1)
                else "; the Off-by-One intervals include 0, so this is not settled")
    return f"{name}: {head}{'; '.join(parts)}{sure}."
