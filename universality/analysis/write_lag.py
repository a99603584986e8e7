"""The Off-by-One write-lag profile: at which position is a token written into a layer's memory?

For one layer, the input at position ``s`` (the layer's ``resid_pre``) is
replaced by another sequence's input at ``s``, and the change of what the layer
*writes* into its token-mixing memory is measured at positions ``s + δ``:

* Mamba: the state increment ``B̄ₜxₜ = (dtₜ · xₜ) ⊗ Bₜ`` with ``x = ssm.conv_out``
  (``[d_inner, d_state]`` per position), computed from the cached ``ssm.dt``,
  ``ssm.conv_out`` and ``ssm.B``;
* RWKV: the key and value ``att.k``, ``att.v`` written at ``t``;
* Transformer: the key and value ``attn.k``, ``attn.v`` at ``t``.

Changes are relative (divided by the mean norm of the clean write) and averaged
over sequences and source positions; the profile over ``δ = 0..max_lag`` is
normalised to sum to 1. A Transformer writes token ``s`` at ``s`` (peak 0); a
Mamba whose causal conv shifts by one position writes it at ``s + 1`` (peak 1).

The behavioural version runs the reference induction task (``A B ... A``) and,
in a clean pass, replaces only the layer's write at ``s + δ`` by its value from
a pass whose layer input at ``s`` was corrupted; the change of the induction
metric per ``δ`` is the behavioural profile. All variants of one measurement
share a forward pass (copies stacked in the batch), so unchanged positions
compare bit-for-bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch

from .._errors import UniversalityError
from .._io import atomic_write_json, atomic_write_text
from .._progress import progress
from .._records import require_keys
from ._points import (block, check_arch, check_layer, chunks, finite_or_none, list_to_tensor, require_points,
                      row_groups, rows_to_csv, target_metric, tensor_to_list)
from .tasks import distinct_tokens, induction_prompts

#: hook points (per block) whose values make up the layer's write, per architecture
WRITE_POINTS: dict[str, tuple[str, ...]] = {
    "transformer": ("attn.k", "attn.v"),
    "rwkv": ("att.k", "att.v"),
    "mamba": ("ssm.dt", "ssm.conv_out", "ssm.B"),
}


@dataclass
class WriteLagConfig:
    """Settings of :func:`write_lag`."""

    max_lag: int = 3
    """Largest lag δ measured; the profile covers ``δ = 0..max_lag``."""
    n_seqs: int = 16
    """Random sequences for the representational profile (at least 2: the donor is another sequence)."""
    seq_len: int = 32
    """Length of every sequence (random ones and induction prompts)."""
    n_sources: int = 8
    """Source positions ``s`` per sequence, spread evenly over ``1..seq_len - 1 - max_lag``."""
    behavioural: bool = True
    """Also compute the behavioural profile on the induction task."""
    n_prompts: int = 16
    """Induction prompts per behavioural source position."""
    n_behavioural_sources: int = 4
    """Source positions for the behavioural profile, spread over ``1..seq_len - 2 - max_lag``."""
    metric: str = "logit"
    """Induction metric for the behavioural profile: ``"logit"`` or ``"logprob"``."""
    max_rows: int = 256
    """Most sequences in one representational pass (source positions are stacked up to this);
    a behavioural pass always holds ``(max_lag + 3) * n_prompts`` sequences."""
    min_token_id: int = 0
    """Smallest token id drawn for random sequences."""
    seed: int = 0
    """Seed of the random sequences."""

    def __post_init__(self) -> None:
        for name in ("max_lag", "n_seqs", "seq_len", "n_sources", "n_prompts", "n_behavioural_sources", "max_rows",
                     "min_token_id", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise UniversalityError(f"WriteLagConfig.{name} must be an integer; got {v!r}")
        if self.max_lag < 3:
            raise UniversalityError(f"WriteLagConfig.max_lag must be at least 3; got {self.max_lag}")
        if self.n_seqs < 2 or self.n_prompts < 2:
            raise UniversalityError(
                f"WriteLagConfig.n_seqs and n_prompts must be at least 2 (another sequence is the donor); got {self.n_seqs} and {self.n_prompts}"
            )
        if min(self.n_sources, self.n_behavioural_sources, self.max_rows) < 1 or self.min_token_id < 0:
            raise UniversalityError("WriteLagConfig.n_sources, n_behavioural_sources and max_rows must be positive and min_token_id non-negative")
        need = self.max_lag + (3 if self.behavioural else 2)
        if self.seq_len < need:
            raise UniversalityError(
                f"WriteLagConfig.seq_len {self.seq_len} is too short for lags 0..{self.max_lag}; use at least {need}"
                + (" (the behavioural task also needs s+max_lag before the last position)" if self.behavioural else "")
            )
        if self.metric not in ("logit", "logprob"):
            raise UniversalityError(f"WriteLagConfig.metric must be 'logit' or 'logprob'; got {self.metric!r}")


@dataclass
class WriteLagProfile:
    """The write-lag profile of one layer (tensors on CPU, float64, index = lag δ)."""

    arch: str
    """Architecture of the host."""
    layer: int
    """Block index."""
    effect: torch.Tensor
    """``[max_lag + 1]``: non-negative, sums to 1; share of the write change at ``s + δ``."""
    raw: torch.Tensor
    """``[max_lag + 1]``: mean relative change of the write at ``s + δ`` (before normalising)."""
    write_points: tuple[str, ...]
    """Hook points (per block) the write was computed from."""
    n_samples: int
    """(sequence, source) pairs averaged."""
    behavioural_effect: torch.Tensor | None = None
    """``[max_lag + 1]``: mean |metric change| when only the write at ``s + δ`` is corrupted, normalised to sum to 1."""
    behavioural_change: torch.Tensor | None = None
    """``[max_lag + 1]``: mean signed metric change (units of the metric) per lag."""
    behavioural_full_change: float | None = None
    """Mean signed metric change when the layer's whole input at ``s`` is corrupted (all of its effects)."""
    metric: str = "logit"
    """Metric of the behavioural profile."""
    degenerate: bool = False
    """True when no change was measured at any lag (``effect`` is then uniform)."""
    behavioural_interval: torch.Tensor | None = None
    """``[max_lag + 1, 2]``: 95 % normal interval of ``behavioural_change`` over the (prompt, source) samples."""
    behavioural_samples: int = 0
    """(prompt, source) pairs behind the behavioural profile."""

    @property
    def lags(self) -> list[int]:
        """The lags ``0..max_lag``."""
        return list(range(self.effect.shape[0]))

    @property
    def peak(self) -> int:
        """Lag with the largest share of the write change."""
        return int(torch.argmax(self.effect))

    @property
    def behavioural_peak(self) -> int | None:
        """Lag whose write corruption moves the induction metric most (None when not computed)."""
        return None if self.behavioural_effect is None else int(torch.argmax(self.behavioural_effect))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "arch": self.arch,
            "layer": self.layer,
            "lags": self.lags,
            "effect": tensor_to_list(self.effect),
            "raw": tensor_to_list(self.raw),
            "peak": self.peak,
            "write_points": list(self.write_points),
            "n_samples": self.n_samples,
            "behavioural_effect": tensor_to_list(self.behavioural_effect),
            "behavioural_change": tensor_to_list(self.behavioural_change),
            "behavioural_full_change": None if self.behavioural_full_change is None else finite_or_none(self.behavioural_full_change),
            "behavioural_peak": self.behavioural_peak,
            "metric": self.metric,
            "degenerate": self.degenerate,
            "behavioural_interval": tensor_to_list(self.behavioural_interval),
            "behavioural_samples": self.behavioural_samples,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WriteLagProfile":
        """Inverse of :meth:`to_dict` (tensors float64; ``None`` entries, written for NaN, read back as NaN)."""
        require_keys(d, ("arch", "layer", "effect", "raw", "write_points", "n_samples"), "write-lag profile")
        full = d.get("behavioural_full_change")
        return cls(d["arch"], int(d["layer"]), list_to_tensor(d["effect"]), list_to_tensor(d["raw"]), tuple(d["write_points"]),
                   int(d["n_samples"]), list_to_tensor(d.get("behavioural_effect")), list_to_tensor(d.get("behavioural_change")),
                   None if full is None else float(full), d.get("metric", "logit"), bool(d.get("degenerate", False)),
                   list_to_tensor(d.get("behavioural_interval")), int(d.get("behavioural_samples", 0)))


@dataclass
class WriteLagTable:
    """Write-lag profiles of every layer of one host, ready for the report."""

    name: str
    """Label of the host (its checkpoint name unless given)."""
    arch: str
    """Architecture."""
    profiles: list[WriteLagProfile]
    """One profile per layer, in layer order."""
    config: WriteLagConfig = field(repr=False)
    """Settings used."""

    @property
    def effect(self) -> torch.Tensor:
        """``[n_layers, max_lag + 1]`` stacked profiles."""
        return torch.stack([p.effect for p in self.profiles])

    @property
    def peaks(self) -> list[int]:
        """Peak lag per layer."""
        return [p.peak for p in self.profiles]

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows (name, arch, layer, lag, effect, behavioural_effect) for CSV or plotting."""
        out = []
        for p in self.profiles:
            for lag in p.lags:
                out.append({"name": self.name, "arch": self.arch, "layer": p.layer, "lag": lag,
                            "effect": finite_or_none(p.effect[lag]),
                            "behavioural_effect": None if p.behavioural_effect is None else finite_or_none(p.behavioural_effect[lag])})
        return out

    def save_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path`` atomically."""
        atomic_write_json(path, self.to_dict())

    def save_csv(self, path) -> None:
        """Write :meth:`rows` (one row per layer and lag) to ``path`` atomically."""
        atomic_write_text(path, rows_to_csv(self.rows()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: per-layer profiles, the ``[layer][lag]`` effect grid and peaks."""
        return {"kind": "write_lag", "name": self.name, "arch": self.arch, "peaks": self.peaks,
                "effect": tensor_to_list(self.effect), "profiles": [p.to_dict() for p in self.profiles],
                "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WriteLagTable":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("name", "arch", "profiles", "config"), "write-lag table")
        return cls(d["name"], d["arch"], [WriteLagProfile.from_dict(p) for p in d["profiles"]], WriteLagConfig(**d["config"]))

    def summary(self, model: str | None = None) -> "WriteLagResult":
        """The results.json ``write_lag`` entry: each layer's profile and peak (``model`` defaults to :attr:`name`)."""
        return WriteLagResult(model or self.name, self.arch,
                              [LayerLag(p.layer, [float(x) for x in p.effect.tolist()], int(p.peak)) for p in self.profiles])


@dataclass
class LayerLag:
    """One layer of a :class:`WriteLagResult`."""

    layer: int
    """Block index."""
    effect: list[float]
    """Share of the write change at lag δ = 0, 1, ... (non-negative, sums to 1)."""
    peak: int
    """Lag with the largest share."""

    def to_dict(self) -> dict[str, Any]:
        """``{layer, effect, peak}``."""
        return {"layer": self.layer, "effect": list(self.effect), "peak": self.peak}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerLag":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("layer", "effect", "peak"), "write-lag layer")
        return cls(int(d["layer"]), [float(x) for x in d["effect"]], int(d["peak"]))


@dataclass
class WriteLagResult:
    """One host's entry of results.json ``write_lag``: the write-lag profile of every layer."""

    model: str
    """Label of the host in the run."""
    arch: str
    """Architecture of the host."""
    layers: list[LayerLag]
    """One profile per layer, in layer order."""

    def to_dict(self) -> dict[str, Any]:
        """The results.json entry ``{model, arch, layers: [{layer, effect, peak}]}``."""
        return {"model": self.model, "arch": self.arch, "layers": [x.to_dict() for x in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WriteLagResult":
        """Inverse of :meth:`to_dict`."""
        require_keys(d, ("model", "arch", "layers"), "results.json write_lag")
        return cls(d["model"], d["arch"], [LayerLag.from_dict(x) for x in d["layers"]])


def _config(config: WriteLagConfig | None, overrides: dict) -> WriteLagConfig:
    cfg = config or WriteLagConfig()
    return WriteLagConfig(**{**asdict(cfg), **overrides}) if overrides else cfg


def _spread(lo: int, hi: int, k: int) -> list[int]:
    """Up to ``k`` distinct integers spread evenly over ``lo..hi``."""
    if hi <= lo:
        return [lo]
    return sorted({int(round(v)) for v in torch.linspace(lo, hi, min(k, hi - lo + 1)).tolist()})


def _write_tensors(arch: str, cache: Mapping[str, torch.Tensor], layer: int, rows: slice,
                   positions: slice) -> list[torch.Tensor]:
    """The layer's write at ``positions`` for ``rows``: a list of ``[n, P, features]`` float64 tensors.

    Mamba gives one tensor, the flattened increment ``(dt · x) ⊗ B``; Transformer and
    RWKV give the key and the value.
    """
    pts = [cache[block(layer, p)][rows, positions].double() for p in WRITE_POINTS[arch]]
    if arch == "mamba":
        return [_mamba_increment(*pts).flatten(2)]
    return [p.flatten(2) for p in pts]


def _mamba_increment(dt: torch.Tensor, x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The state increment ``(dt · x) ⊗ B`` per position.

    Mamba-1: ``dt, x`` ``[b, t, d]``, ``B`` ``[b, t, n]`` → ``[b, t, d, n]``.
    Mamba-2: ``dt`` ``[b, t, h]``, ``x`` ``[b, t, h, p]``, ``B`` ``[b, t, g, n]`` (head ``j`` reads
    group ``j // (h / g)``) → ``[b, t, h, p, n]``.
    """
    if x.dim() == 3 and dt.shape == x.shape and B.dim() == 3 and B.shape[:2] == x.shape[:2]:
        return (dt * x).unsqueeze(-1) * B.unsqueeze(-2)
    if x.dim() == 4 and dt.shape == x.shape[:3] and B.dim() == 4 and B.shape[:2] == x.shape[:2] \
            and x.shape[2] % B.shape[2] == 0:
        B = B.repeat_interleave(x.shape[2] // B.shape[2], dim=2)
        return (dt.unsqueeze(-1) * x).unsqueeze(-1) * B.unsqueeze(-2)
    raise UniversalityError(
        f"the Mamba host's ssm.dt {tuple(dt.shape)}, ssm.conv_out {tuple(x.shape)} and ssm.B {tuple(B.shape)} "
        "match neither the Mamba-1 nor the Mamba-2 layout the write-lag analysis knows"
    )


def _relative_change(clean: list[torch.Tensor], corrupted: list[torch.Tensor], scales: list[torch.Tensor]) -> torch.Tensor:
    """Mean over write parts of ``||corrupted - clean|| / scale`` per position: ``[n, P]``."""
    parts = [(c - x).norm(dim=-1) / s for c, x, s in zip(clean, corrupted, scales)]
    return torch.stack(parts).mean(dim=0)


def _normalise(v: torch.Tensor) -> tuple[torch.Tensor, bool]:
    total = v.sum()
    if not torch.isfinite(total) or total <= 0:
        return torch.full_like(v, 1.0 / v.numel()), True
    return v / total, False


def _swap_in_donor(groups: list[slice], sources: list[int]):
    """Hook on ``resid_pre``: in each row group, position ``s`` takes the previous sequence's value at ``s``."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for rows, s in zip(groups, sources):
            x[rows, s] = x[rows, s].roll(1, dims=0)
        return x

    return fn


@torch.no_grad()
def _representational(host, layer: int, cfg: WriteLagConfig, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean relative write change per lag ``[max_lag + 1]`` and the number of samples."""
    n, t = tokens.shape
    lags = cfg.max_lag + 1
    sources = _spread(1, t - 1 - cfg.max_lag, cfg.n_sources)
    names = [block(layer, p) for p in WRITE_POINTS[host.arch]]
    total = torch.zeros(lags, dtype=torch.float64)
    count = 0
    per_pass = max(1, cfg.max_rows // n - 1)  # one copy per source plus the clean copy
    for group in progress(chunks(sources, per_pass), desc=f"write lag L{layer}", unit="pass"):
        groups = row_groups(len(group) + 1, n)
        clean_rows = groups[-1]
        hooks = {block(layer, "resid_pre"): _swap_in_donor(groups[:-1], group)}
        _, cache = host.run_with_cache(tokens.repeat(len(group) + 1, 1), names=names, hooks=hooks, return_logits=False)
        full_clean = _write_tensors(host.arch, cache, layer, clean_rows, slice(None))
        scales = [w.norm(dim=-1).mean().clamp_min(1e-30) for w in full_clean]
        for rows, s in zip(groups[:-1], group):
            span = slice(s, s + lags)
            clean = _write_tensors(host.arch, cache, layer, clean_rows, span)
            corrupted = _write_tensors(host.arch, cache, layer, rows, span)
            total += _relative_change(clean, corrupted, scales).sum(dim=0).cpu()
            count += n
    return total / count, count


def _copy_from(source_rows: slice, targets: list[tuple[slice, int]]):
    """Hook on a write point: each (rows, position) target takes the ``source_rows`` value at that position."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for rows, pos in targets:
            x[rows, pos] = x[source_rows, pos]
        return x

    return fn


@torch.no_grad()
def _behavioural(host, layer: int, cfg: WriteLagConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Mean |metric change| and mean signed change per lag, the change with the whole input at ``s`` corrupted,
    and the signed change of every (prompt, source) sample ``[samples, max_lag + 1]``.

    One pass per source position, with ``max_lag + 3`` stacked copies of the prompts:
    copies ``0..max_lag`` have only the write at ``s + δ`` taken from the corrupted copy,
    then the corrupted copy (layer input at ``s`` swapped), then the clean copy. On Mamba
    the read-out ``ssm.C`` at ``s + δ`` is held at its clean value.
    """
    lags = cfg.max_lag + 1
    t = cfg.seq_len
    abs_total = torch.zeros(lags, dtype=torch.float64)
    signed_total = torch.zeros(lags, dtype=torch.float64)
    full_total, count = 0.0, 0
    samples = []
    n = cfg.n_prompts
    for s in progress(_spread(1, t - 2 - cfg.max_lag, cfg.n_behavioural_sources), desc=f"behavioural L{layer}", unit="pass"):
        prompts = induction_prompts(n, t, s, host.vocab_size, gen, cfg.min_token_id)
        groups = row_groups(lags + 2, n)
        corrupt_rows, clean_rows = groups[-2], groups[-1]
        hooks: dict[str, Any] = {block(layer, "resid_pre"): _swap_in_donor([corrupt_rows], [s])}
        targets = [(groups[d], s + d) for d in range(lags)]
        for point in WRITE_POINTS[host.arch]:
            hooks[block(layer, point)] = _copy_from(corrupt_rows, targets)
        if host.arch == "mamba":  # C (the read-out at s+δ) is derived from the patched x: keep it clean
            hooks[block(layer, "ssm.C")] = _copy_from(clean_rows, targets)
        logits = host.run_with_hooks(prompts.clean.repeat(lags + 2, 1), hooks)
        metric = target_metric(logits, prompts.targets.repeat(lags + 2), cfg.metric).view(lags + 2, n).cpu()
        change = metric - metric[-1]
        abs_total += change[:lags].abs().sum(dim=1)
        signed_total += change[:lags].sum(dim=1)
        samples.append(change[:lags].T.double())
        full_total += change[lags].sum().item()
        count += n
    return abs_total / count, signed_total / count, full_total / count, torch.cat(samples)


def normal_interval(samples: torch.Tensor, z: float = 1.96) -> torch.Tensor:
    """``[k, 2]``: mean ± ``z`` standard errors of each column of ``samples`` ``[n, k]`` (95 % for the default ``z``)."""
    n = samples.shape[0]
    mean = samples.mean(dim=0)
    half = z * samples.std(dim=0, unbiased=True) / n ** 0.5 if n > 1 else torch.full_like(mean, float("inf"))
    return torch.stack([mean - half, mean + half], dim=1)


def write_lag(host, layer: int, config: WriteLagConfig | None = None, tokens: torch.Tensor | None = None,
              **overrides: Any) -> WriteLagProfile:
    """The Off-by-One write-lag profile of one layer.

    Args:
        host: a Transformer, Mamba or RWKV host.
        layer: block index.
        config: settings; keyword ``overrides`` replace single fields (``write_lag(host, 3, n_seqs=8)``).
        tokens: optional LongTensor ``[n, t]`` (n ≥ 2) of real text for the representational
            profile; random distinct tokens otherwise.

    Returns:
        :class:`WriteLagProfile` with ``effect`` ``[max_lag + 1]`` (non-negative, sums to 1),
        ``peak`` and, unless switched off, the behavioural profile.
    """
    arch = check_arch(host, "write_lag")
    layer = check_layer(host, layer)
    cfg = _config(config, overrides)
    points = [block(layer, p) for p in ("resid_pre",) + WRITE_POINTS[arch] + (("ssm.C",) if arch == "mamba" else ())]
    require_points(host, points, "write_lag")
    gen = torch.Generator().manual_seed(cfg.seed)
    if tokens is None:
        tokens = distinct_tokens(cfg.n_seqs, cfg.seq_len, host.vocab_size, gen, cfg.min_token_id)
    else:
        tokens = torch.as_tensor(tokens)
        if tokens.dim() != 2 or tokens.shape[0] < 2:
            raise UniversalityError(f"tokens must be a LongTensor [n, t] with n ≥ 2 sequences; got shape {tuple(tokens.shape)}")
        if tokens.shape[1] < cfg.max_lag + 2:
            raise UniversalityError(
                f"tokens of length {tokens.shape[1]} are too short for lags 0..{cfg.max_lag}; give at least {cfg.max_lag + 2} positions"
            )
    raw, n_samples = _representational(host, layer, cfg, tokens)
    effect, degenerate = _normalise(raw)
    profile = WriteLagProfile(arch, layer, effect, raw, WRITE_POINTS[arch], n_samples, metric=cfg.metric, degenerate=degenerate)
    if cfg.behavioural:
        mean_abs, mean_signed, full, per_sample = _behavioural(host, layer, cfg, gen)
        profile.behavioural_effect = _normalise(mean_abs)[0]
        profile.behavioural_change = mean_signed
        profile.behavioural_full_change = full
        profile.behavioural_interval = normal_interval(per_sample)
        profile.behavioural_samples = int(per_sample.shape[0])
    return profile


def write_lag_all(host, config: WriteLagConfig | None = None, name: str | None = None,
                  tokens: torch.Tensor | None = None, **overrides: Any) -> WriteLagTable:
    """Write-lag profiles of every layer of ``host`` (same sequences for every layer).

    Returns:
        :class:`WriteLagTable`; ``table.effect`` is ``[n_layers, max_lag + 1]``.
    """
    check_arch(host, "write_lag_all")
    cfg = _config(config, overrides)
    profiles = [write_lag(host, layer, cfg, tokens=tokens)
                for layer in progress(range(host.n_layers), desc="layers", unit="layer")]
    return WriteLagTable(name or str(getattr(host, "name_or_path", "") or host.arch), host.arch, profiles, cfg)


def compare_write_lag(hosts: Mapping[str, Any], config: WriteLagConfig | None = None,
                      **overrides: Any) -> dict[str, WriteLagTable]:
    """Per-layer write-lag tables for several hosts, keyed by the given names (for side-by-side plots)."""
    if not hosts:
        raise UniversalityError("compare_write_lag needs at least one host in the name → host mapping; got none")
    cfg = _config(config, overrides)
    return {name: write_lag_all(h, cfg, name=name) for name, h in hosts.items()}
