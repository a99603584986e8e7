"""Induction: per-layer and per-head scores, and localisation by activation patching.

Two tasks (see :mod:`universality.analysis.tasks`):

* repeated halves (``x x`` with ``x`` random): the in-context gain is the mean
  next-token loss on the first half minus that on the second half; a layer's
  score is how much of that gain disappears when the layer's token mixer output
  (``mixer_out``) is mean-ablated. For Transformers, each head's induction
  score (attention from ``t`` to ``t - half + 1``) and previous-token score
  (attention from ``t`` to ``t - 1``) are read from ``attn.pattern``.
* the reference task (``A B ... A`` → ``B``): the metric is the logit (or
  log-probability) of ``B`` at the last position. Clean and corrupted prompts
  differ only at ``s + 1`` (``B`` replaced); each component's clean activation
  is patched into the corrupted run and the restored fraction of the metric is
  its normalised effect.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json, atomic_write_text
from .._progress import progress
from .._records import require_keys
from ._points import (block, check_arch, chunks, finite_or_none, list_to_tensor, require_points, row_groups,
                      rows_to_csv, tensor_to_list)
from .patching import PatchSite, patch_sites
from .tasks import induction_prompts, repeated_halves

_POSITION_RE = re.compile(r"^(last|last-\d+|s|s\+\d+|s-\d+|\d+)$")


@dataclass
class InductionConfig:
    """Settings of :func:`induction`."""

    n_prompts: int = 32
    """Prompts of the reference task (and repeated-half sequences)."""
    seq_len: int = 24
    """Length of a reference-task prompt, last token included."""
    source: int | None = None
    """Position ``s`` of the earlier copy of the last token; ``None`` means ``(seq_len - 2) // 2``."""
    half: int = 16
    """Length of each half of the repeated-half sequences."""
    metric: str = "logit"
    """``"logit"`` or ``"logprob"`` of the induction target at the last position."""
    head_positions: tuple[str, ...] = ("last", "s+1")
    """Positions at which each Transformer head's ``attn.z`` is patched."""
    extra_sites: tuple[tuple[str, str], ...] = ()
    """Additional ``(hook name, position)`` sites to patch, position as ``last``, ``s``, ``s+k`` or an index."""
    residual_sweep: bool = True
    """Also patch every layer's ``resid_pre`` at ``s+1`` and at ``last`` (the same picture on every architecture)."""
    ablate_layers: bool = True
    """Compute per-layer scores by mean-ablating each layer's ``mixer_out`` on the repeated halves."""
    max_rows: int = 256
    """Most sequences in one forward pass (patching runs are stacked up to this)."""
    min_token_id: int = 0
    """Smallest token id drawn for the random prompts (raise it to skip special tokens)."""
    seed: int = 0
    """Seed of the random prompts."""

    def __post_init__(self) -> None:
        for name in ("n_prompts", "seq_len", "half", "max_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UniversalityError(f"InductionConfig.{name} must be a positive integer; got {v!r}")
        if self.seq_len < 4:
            raise UniversalityError(f"InductionConfig.seq_len must be at least 4 (A B ... A); got {self.seq_len}")
        if self.half < 2:
            raise UniversalityError(f"InductionConfig.half must be at least 2; got {self.half}")
        if self.source is not None and (isinstance(self.source, bool) or not isinstance(self.source, int)
                                        or not 0 <= self.source <= self.seq_len - 3):
            raise UniversalityError(
                f"InductionConfig.source must be an integer in 0..{self.seq_len - 3} for seq_len {self.seq_len}; got {self.source!r}"
            )
        if self.metric not in ("logit", "logprob"):
            raise UniversalityError(f"InductionConfig.metric must be 'logit' or 'logprob'; got {self.metric!r}")
        self.head_positions = tuple(self.head_positions)
        self.extra_sites = tuple(tuple(s) for s in self.extra_sites)
        for pos in self.head_positions + tuple(p for _, p in self.extra_sites):
            if not isinstance(pos, str) or not _POSITION_RE.match(pos):
                raise UniversalityError(f"position {pos!r} is not valid; use 'last', 'last-K', 's', 's+K', 's-K' or a position index")
        if not isinstance(self.min_token_id, int) or self.min_token_id < 0:
            raise UniversalityError(f"InductionConfig.min_token_id must be a non-negative integer; got {self.min_token_id!r}")

    @property
    def s(self) -> int:
        """The source position actually used (``source``, or ``(seq_len - 2) // 2`` when unset)."""
        return (self.seq_len - 2) // 2 if self.source is None else self.source

    def position_index(self, label: str) -> int:
        """Absolute position of a label (``last``, ``last-K``, ``s``, ``s+K``, ``s-K`` or an index) in a reference prompt."""
        if label.startswith("last"):
            idx = self.seq_len - 1 - (int(label[5:]) if len(label) > 4 else 0)
        elif label.startswith("s"):
            idx = self.s + (int(label[1:]) if len(label) > 1 else 0)
        else:
            idx = int(label)
        if not 0 <= idx < self.seq_len:
            raise UniversalityError(f"position {label!r} falls outside the prompt of {self.seq_len} tokens (s = {self.s})")
        return idx


@dataclass
class PatchEffect:
    """One row of the tidy patching table."""

    component: str
    """Component label, e.g. ``L3.H2`` or ``L5.ssm.state``."""
    hook: str
    """Hook point that was patched."""
    layer: int
    """Block index."""
    head: int | None
    """Head index for Transformer heads, else ``None``."""
    position: str
    """Position label: ``last``, ``s``, ``s+1``, ..."""
    position_index: int
    """Absolute position in the prompt."""
    effect: float
    """Metric with this site patched minus the corrupted metric (same units as the metric)."""
    normalised_effect: float | None
    """``effect / (clean - corrupted)``: 1 restores the clean metric fully; ``None`` when clean ≈ corrupted."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        d["effect"] = finite_or_none(self.effect)
        d["normalised_effect"] = None if self.normalised_effect is None else finite_or_none(self.normalised_effect)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PatchEffect":
        """Inverse of :meth:`to_dict` (a ``None`` effect, written for NaN, reads back as NaN)."""
        require_keys(d, ("component", "hook", "layer", "head", "position", "position_index", "effect", "normalised_effect"),
              "patching-table row")
        eff = d["effect"]
        return cls(d["component"], d["hook"], int(d["layer"]), d["head"], d["position"], int(d["position_index"]),
                   float("nan") if eff is None else float(eff), d["normalised_effect"])


@dataclass
class InductionResult:
    """Output of :func:`induction` (tensors on CPU, float64)."""

    arch: str
    """Architecture of the host."""
    n_layers: int
    """Number of blocks."""
    loss_first: float
    """Mean next-token loss (nats) on the first half of the repeated sequences."""
    loss_second: float
    """Mean next-token loss on the second half (the first repeated token excluded)."""
    layer_scores: torch.Tensor | None
    """``[n_layers]``: in-context gain lost when the layer's ``mixer_out`` is mean-ablated (None if not computed)."""
    head_induction: torch.Tensor | None
    """``[n_layers, n_heads]`` induction attention scores (Transformers only)."""
    head_prev_token: torch.Tensor | None
    """``[n_layers, n_heads]`` previous-token attention scores (Transformers only)."""
    clean_metric: float
    """Reference-task metric on clean prompts."""
    corrupted_metric: float
    """Reference-task metric with token ``s + 1`` replaced."""
    effects: list[PatchEffect]
    """Tidy patching table, one row per site, in sweep order."""
    config: InductionConfig = field(repr=False)
    """Settings used."""

    @property
    def icl_score(self) -> float:
        """In-context gain: ``loss_first - loss_second`` (nats; > 0 when the repeat is used)."""
        return self.loss_first - self.loss_second

    def ranking(self, k: int | None = None) -> list[PatchEffect]:
        """Rows sorted by decreasing |normalised effect| (|effect| when normalisation is undefined); top ``k``."""
        key = (lambda e: abs(e.normalised_effect)) if all(e.normalised_effect is not None for e in self.effects) \
            else (lambda e: abs(e.effect))
        rows = sorted(self.effects, key=key, reverse=True)
        return rows if k is None else rows[:k]

    def save_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically."""
        atomic_write_json(path, self.to_dict())

    def save_csv(self, path) -> None:
        """Write the tidy patching table (one row per site) to ``path`` atomically."""
        atomic_write_text(path, rows_to_csv([e.to_dict() for e in self.effects]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tables as lists of rows, tensors as nested lists)."""
        return {
            "kind": "induction",
            "arch": self.arch,
            "n_layers": self.n_layers,
            "loss_first": finite_or_none(self.loss_first),
            "loss_second": finite_or_none(self.loss_second),
            "icl_score": finite_or_none(self.icl_score),
            "layer_scores": tensor_to_list(self.layer_scores),
            "head_induction": tensor_to_list(self.head_induction),
            "head_prev_token": tensor_to_list(self.head_prev_token),
            "metric": self.config.metric,
            "clean_metric": finite_or_none(self.clean_metric),
            "corrupted_metric": finite_or_none(self.corrupted_metric),
            "effects": [e.to_dict() for e in self.effects],
            "ranking": [f"{e.component}@{e.position}" for e in self.ranking()],
            "config": asdict(self.config),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InductionResult":
        """Inverse of :meth:`to_dict`: tensors come back as float64 (``None`` entries as NaN)."""
        require_keys(d, ("arch", "n_layers", "loss_first", "loss_second", "layer_scores", "head_induction", "head_prev_token",
                  "clean_metric", "corrupted_metric", "effects", "config"), "induction result")

        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(d["arch"], int(d["n_layers"]), num(d["loss_first"]), num(d["loss_second"]), list_to_tensor(d["layer_scores"]),
                   list_to_tensor(d["head_induction"]), list_to_tensor(d["head_prev_token"]), num(d["clean_metric"]),
                   num(d["corrupted_metric"]), [PatchEffect.from_dict(e) for e in d["effects"]], InductionConfig(**d["config"]))

    def summary(self, model: str) -> "InductionSummary":
        """This result as the results.json ``induction`` entry of host ``model`` (rows whose normalised effect
        is undefined, clean ≈ corrupted, are left out)."""
        scores = self.layer_scores.tolist() if self.layer_scores is not None else []
        comps = [{"component": e.component, "position": e.position, "effect": float(e.effect),
                  "normalised_effect": float(e.normalised_effect) if e.normalised_effect is not None else float("nan")}
                 for e in self.effects]
        comps = [c for c in comps if c["normalised_effect"] == c["normalised_effect"]]  # drop NaN
        return InductionSummary(model, self.arch, [float(x) for x in scores], comps, float(self.icl_score),
                                float(self.clean_metric), float(self.corrupted_metric))


@dataclass
class InductionSummary:
    """One host's entry of results.json ``induction``: per-layer scores and the patching table, for the report."""

    model: str
    """Label of the host in the run."""
    arch: str
    """Architecture of the host."""
    layer_scores: list[float]
    """Per layer: in-context gain lost when the layer's ``mixer_out`` is mean-ablated (empty when not computed)."""
    components: list[dict]
    """Patching table rows ``{component, position, effect, normalised_effect}`` with a defined normalised effect."""
    icl_score: float
    """In-context gain, loss on the first half minus loss on the second (nats)."""
    clean_metric: float
    """Reference-task metric on clean prompts."""
    corrupted_metric: float
    """Reference-task metric with token ``s + 1`` replaced."""
    score_name: str = "in-context gain lost on mean-ablating mixer_out"
    """What ``layer_scores`` measure (the report's colour-bar label)."""

    def to_dict(self) -> dict[str, Any]:
        """The results.json entry (keys in the documented order)."""
        return {"model": self.model, "arch": self.arch, "score_name": self.score_name,
                "layer_scores": list(self.layer_scores), "components": [dict(c) for c in self.components],
                "icl_score": self.icl_score, "clean_metric": self.clean_metric, "corrupted_metric": self.corrupted_metric}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InductionSummary":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("model", "arch", "layer_scores", "components", "icl_score", "clean_metric", "corrupted_metric"),
              "results.json induction")
        return cls(d["model"], d["arch"], list(d["layer_scores"]), [dict(c) for c in d["components"]], d["icl_score"],
                   d["clean_metric"], d["corrupted_metric"], d.get("score_name", cls.score_name))


def _n_heads(host) -> int:
    """Number of heads on axis 2 of ``attn.z``, read from a one-token pass."""
    _, cache = host.run_with_cache(torch.zeros(1, 1, dtype=torch.long), names=[block(0, "attn.z")], return_logits=False)
    return int(cache[block(0, "attn.z")].shape[2])


def induction_sites(host, cfg: InductionConfig) -> list[PatchSite]:
    """The components patched for ``host.arch`` (see the module docstring), plus ``cfg.extra_sites``."""
    arch = host.arch
    sites: list[PatchSite] = []
    if arch == "transformer":
        require_points(host, [block(0, "attn.z")], "induction patching")
        heads = _n_heads(host)
        for label in cfg.head_positions:
            pos = cfg.position_index(label)
            for layer in range(host.n_layers):
                for h in range(heads):
                    sites.append(PatchSite(block(layer, "attn.z"), pos, h, f"L{layer}.H{h}", label, layer))
    else:
        if arch == "mamba":
            plan = [("ssm.state", "last"), ("ssm.y", "last"), ("ssm.in_x", "s"), ("ssm.in_x", "s+1"), ("ssm.in_x", "s+2")]
        else:
            # att.state at t is the state *after* t; the last position reads the one after last-1
            plan = [("att.state", "last-1"), ("att.wkv", "last"), ("mixer_out", "last")]
        require_points(host, [block(0, p) for p, _ in plan], "induction patching")
        for layer in range(host.n_layers):
            for point, label in plan:
                sites.append(PatchSite(block(layer, point), cfg.position_index(label), None, f"L{layer}.{point}", label, layer))
    if cfg.residual_sweep:
        for label in ("s+1", "last"):
            for layer in range(host.n_layers):
                hook = block(layer, "resid_pre")
                sites.append(PatchSite(hook, cfg.position_index(label), None, f"L{layer}.resid_pre", label, layer))
    for hook, label in cfg.extra_sites:
        require_points(host, [hook], "an extra patching site")
        layer = host.layer_of(hook)
        sites.append(PatchSite(hook, cfg.position_index(label), None, hook, label, -1 if layer is None else layer))
    return sites


def _half_losses(logits: torch.Tensor, tokens: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean next-token loss on the first half and on the second half (first repeat excluded).

    Args:
        logits: ``[b, 2*half, vocab]``; tokens: ``[b, 2*half]``.

    Returns:
        two ``[b]`` float64 tensors.
    """
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    nll = -logp.gather(2, tokens[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)  # index j predicts token j+1
    return nll[:, : half - 1].mean(dim=1), nll[:, half:].mean(dim=1)


@torch.no_grad()
def _repeated_half_scores(host, cfg: InductionConfig, gen: torch.Generator):
    """Losses per half, per-layer ablation scores and (Transformers) per-head attention scores."""
    tokens = repeated_halves(cfg.n_prompts, cfg.half, host.vocab_size, gen, cfg.min_token_id)
    half, L = cfg.half, host.n_layers
    mixer = [block(i, "mixer_out") for i in range(L)]
    patterns = [block(i, "attn.pattern") for i in range(L)] if host.arch == "transformer" else []
    require_points(host, mixer + patterns, "induction scores")
    logits, cache = host.run_with_cache(tokens, names=(mixer if cfg.ablate_layers else []) + patterns)
    first, second = _half_losses(logits, tokens, half)
    loss_first, loss_second = first.mean().item(), second.mean().item()

    head_ind = head_prev = None
    if patterns:
        t_ind = torch.arange(half, 2 * half)
        t_prev = torch.arange(1, 2 * half)
        ind, prev = [], []
        for name in patterns:
            pat = cache[name].double().cpu()  # [b, h, t, t]
            ind.append(pat[:, :, t_ind, t_ind - half + 1].mean(dim=(0, 2)))
            prev.append(pat[:, :, t_prev, t_prev - 1].mean(dim=(0, 2)))
        head_ind, head_prev = torch.stack(ind), torch.stack(prev)

    layer_scores = None
    if cfg.ablate_layers:
        means = {name: cache[name].mean(dim=(0, 1)) for name in mixer}
        gain = loss_first - loss_second
        layer_scores = torch.empty(L, dtype=torch.float64)
        n = tokens.shape[0]
        for group in progress(chunks(list(range(L)), max(1, cfg.max_rows // n)), desc="layer ablation", unit="pass"):
            hooks = {}
            for rows, layer in zip(row_groups(len(group), n), group):
                hooks[mixer[layer]] = _mean_ablate(rows, means[mixer[layer]])
            out = host.run_with_hooks(tokens.repeat(len(group), 1), hooks)
            f, s = _half_losses(out, tokens.repeat(len(group), 1), half)
            for g, layer in enumerate(group):
                rows = slice(g * n, (g + 1) * n)
                layer_scores[layer] = gain - (f[rows].mean() - s[rows].mean()).item()
    return loss_first, loss_second, layer_scores, head_ind, head_prev


def _mean_ablate(rows: slice, mean: torch.Tensor):
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[rows] = mean
        return x

    return fn


def induction(host, config: InductionConfig | None = None, **overrides: Any) -> InductionResult:
    """Induction scores and patching localisation for one host.

    Args:
        host: a host of the hook vocabulary (Transformer, Mamba or RWKV).
        config: settings; keyword ``overrides`` replace single fields (``induction(host, n_prompts=8)``).

    Returns:
        :class:`InductionResult`: losses per half, per-layer ablation scores ``[n_layers]``,
        per-head scores ``[n_layers, n_heads]`` (Transformers), clean/corrupted metrics
        and the tidy patching table with :meth:`InductionResult.ranking`.
    """
    check_arch(host, "induction")
    cfg = config or InductionConfig()
    if overrides:
        cfg = InductionConfig(**{**asdict(cfg), **overrides})
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_first, loss_second, layer_scores, head_ind, head_prev = _repeated_half_scores(host, cfg, gen)

    prompts = induction_prompts(cfg.n_prompts, cfg.seq_len, cfg.s, host.vocab_size, gen, cfg.min_token_id)
    sites = induction_sites(host, cfg)
    run = patch_sites(host, prompts.clean, prompts.corrupted, prompts.targets, sites, cfg.metric, cfg.max_rows,
                      desc="induction patching")
    denom = run.clean - run.corrupted
    usable = abs(denom) > 1e-6 * (1.0 + abs(run.clean))
    effects = []
    for site, value in zip(sites, run.patched.tolist()):
        eff = value - run.corrupted
        effects.append(PatchEffect(site.component, site.hook, site.layer, site.head, site.position_label,
                                   site.position, eff, eff / denom if usable else None))
    return InductionResult(host.arch, host.n_layers, loss_first, loss_second, layer_scores, head_ind, head_prev,
                           run.clean, run.corrupted, effects, cfg)
