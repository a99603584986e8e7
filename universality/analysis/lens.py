"""Logit lens and tuned lens over ``blocks.{i}.resid_post`` of any host.

* The **logit lens** reads block ``i``'s stream through the model's own final norm and
  unembedding (:meth:`Host.unembed <universality.hosts.base.Host.unembed>`).
* The **tuned lens** first passes it through an affine *translator* ``x + W_i x + b_i``,
  zero-initialised (so it starts as the logit lens) and trained on the corpus to minimise
  ``KL(final || lens)`` while the final norm and unembedding stay frozen. The last block's
  translator stays the identity: its logit lens is the model's output.

Both are measured per block, on held-out tokens, by the KL to the final distribution, the
top-1 agreement with the final prediction and the entropy of the lens distribution, each a
mean over tokens with a 95% bootstrap interval over sequences (:func:`lens_curves`).
Translators are saved and loaded like dictionaries (:meth:`TunedLens.save`, :meth:`TunedLens.load`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .._io import atomic_save_tensors, atomic_write_json, load_tensors, read_json_object
from .._progress import progress

LENS_FORMAT = "universality.tuned-lens/1"
"""Format tag in ``lens.json`` of a saved tuned lens."""
LENSES = ("logit", "tuned")
"""Lens kinds :func:`lens_curves` measures."""


@dataclass
class TunedLensConfig:
    """How a tuned lens is trained (:func:`train_tuned_lens`)."""

    steps: int = 250
    """Optimizer steps (Adam); each uses ``batch_tokens`` tokens for every translator."""
    batch_tokens: int = 512
    """Tokens per step, drawn at random from the training tokens."""
    lr: float = 2e-3
    """Adam learning rate (linearly decayed to zero)."""
    seed: int = 0
    """Seed of the batch order."""
    check_every: int = 50
    """Steps between the held-back checks of phase 3 (each translator keeps its best checked state)."""

    def __post_init__(self):
        for name in ("steps", "batch_tokens", "check_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UniversalityError(f"tuned lens {name} {v!r} is not valid; use a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UniversalityError(f"tuned lens lr {self.lr!r} is not valid; use a positive number")


class TunedLens(torch.nn.Module):
    """One affine translator per block: ``translate(i, x) = x + x @ weight[i].T + bias[i]``.

    Attributes:
        weight: ``[n_layers, d_model, d_model]``, zero at initialisation.
        bias: ``[n_layers, d_model]``, zero at initialisation.
        info: JSON-able provenance: host fingerprint, arch, training settings and losses.
    """

    def __init__(self, n_layers: int, d_model: int, info: dict | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = torch.nn.Parameter(torch.zeros(n_layers, d_model))
        self.info: dict = dict(info or {})

    @property
    def n_layers(self) -> int:
        """Blocks covered (one translator each)."""
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        """Width of the stream the translators map."""
        return int(self.weight.shape[1])

    def translate(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s stream ``x`` [..., d_model] mapped toward the final stream, same shape."""
        w, b = self.weight[layer], self.bias[layer]
        x = x.to(w.dtype)
        return x + x @ w.T + b

    def save(self, path: str | os.PathLike) -> Path:
        """Write folder ``path``: ``lens.json`` (format tag, sizes, provenance) + ``translators.safetensors``."""
        folder = Path(path)
        atomic_save_tensors(folder / "translators.safetensors", {"weight": self.weight, "bias": self.bias})
        atomic_write_json(folder / "lens.json", {"format": LENS_FORMAT, "n_layers": self.n_layers,
                                                 "d_model": self.d_model, "info": self.info})
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TunedLens":
        """Read a folder written by :meth:`save`; anything else is one clear error."""
        folder = Path(path)
        meta_path = folder / "lens.json"
        if not meta_path.is_file():
            raise UniversalityError(f"'{folder}' is not a tuned lens folder: it has no lens.json (write one with TunedLens.save)")
        meta = read_json_object(meta_path, "a tuned lens's lens.json", hint="save the lens again")
        if meta.get("format") != LENS_FORMAT:
            raise UniversalityError(f"'{meta_path}' is not a tuned lens of format '{LENS_FORMAT}'")
        t = load_tensors(folder / "translators.safetensors")
        lens = cls(int(meta["n_layers"]), int(meta["d_model"]), meta.get("info"))
        if set(t) != {"weight", "bias"} or t["weight"].shape != lens.weight.shape or t["bias"].shape != lens.bias.shape:
            raise UniversalityError(f"'{folder}/translators.safetensors' does not hold the translators lens.json describes")
        with torch.no_grad():
            lens.weight.copy_(t["weight"])
            lens.bias.copy_(t["bias"])
        return lens

    def check_host(self, host: Any) -> None:
        """One sentence when this lens was not made for ``host``'s shape."""
        if (self.n_layers, self.d_model) != (host.n_layers, host.d_model):
            raise UniversalityError(f"this tuned lens has {self.n_layers} translators of width {self.d_model} but the "
                                    f"{host.arch} host has {host.n_layers} blocks of width {host.d_model}; train one for it")


# ------------------------------------------------------------------------------------------ streams
def _resid_names(host: Any) -> list[str]:
    return [host.hook_name(i, "resid_post") for i in range(host.n_layers)]


def _check_tokens(tokens: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.numel() == 0:
        raise UniversalityError("lens tokens must be a non-empty 2-D integer tensor [sequences, positions]")
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    if mask.shape != tokens.shape:
        raise UniversalityError(f"lens mask shape {tuple(mask.shape)} differs from the tokens' {tuple(tokens.shape)}")
    if not bool(mask.any()):
        raise UniversalityError("lens mask selects no token; give at least one real token")
    return tokens, mask.bool()


@torch.no_grad()
def collect_streams(host: Any, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                    batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Every block's ``resid_post`` at the real tokens.

    Args:
        tokens: ``[n_seq, t]`` token ids; mask: ``[n_seq, t]`` bool (default all real).
    Returns:
        ``(streams [n_layers, n_tokens, d_model] float32, seq_id [n_tokens])``: tokens in row order, and
        the sequence each came from (for intervals over sequences).
    """
    tokens, mask = _check_tokens(tokens, mask)
    names = _resid_names(host)
    parts: list[torch.Tensor] = []
    for s in range(0, tokens.shape[0], batch):
        _, cache = host.run_with_cache(tokens[s:s + batch], names, return_logits=False)
        m = mask[s:s + batch].to(host.device)
        parts.append(torch.stack([cache[n][m].float().cpu() for n in names]))
    seq = torch.arange(tokens.shape[0]).unsqueeze(1).expand_as(mask)[mask]
    return torch.cat(parts, dim=1), seq


# ------------------------------------------------------------------------------------------ training
def train_tuned_lens(host: Any, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                     cfg: TunedLensConfig | None = None, streams: torch.Tensor | None = None) -> TunedLens:
    """A :class:`TunedLens` for ``host`` trained on ``tokens`` [n_seq, t] (or on ready ``streams``).

    Phases: (1) collect every block's ``resid_post`` (:func:`collect_streams`) unless given;
    (2) per step, draw ``batch_tokens`` tokens, take the final distribution of the last block's
    stream as the target and minimise the mean over blocks ``0..n_layers-2`` of
    ``KL(final || softmax(unembed(translate(i, stream_i))))`` with Adam; the final norm and the
    unembedding are frozen (their gradients are not kept) and the last translator stays the identity;
    (3) held-back early stopping: the last tenth of the tokens (the last sequences, at most 8,192; never drawn in
    phase 2) scores every translator at the start (the identity), every ``check_every`` steps and at the end, and
    each translator keeps its state of lowest held-back KL. One that never beats the identity stays it
    (``info["identity_layers"]``); ``info["kept_steps"]`` says which step each translator comes from.
    """
    cfg = cfg or TunedLensConfig()
    if streams is None:
        streams, _ = collect_streams(host, tokens, mask)
    n_layers, n_tok, d = streams.shape
    if (n_layers, d) != (host.n_layers, host.d_model):
        raise UniversalityError(f"streams of shape {tuple(streams.shape)} do not match the host's {host.n_layers} blocks of width {host.d_model}")
    lens = TunedLens(n_layers, d, {"arch": host.arch, "host_fingerprint": host.fingerprint, "config": asdict(cfg),
                                   "n_tokens": int(n_tok)})
    lens.to(host.device)
    params = [p for p in host.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    opt = torch.optim.Adam(lens.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    trained = range(n_layers - 1)
    # the last tenth of the tokens (the last sequences) only judges the translators in phase 3
    n_fit = n_tok - min(n_tok // 10, 8192) if n_tok >= 20 else n_tok
    best = _BestTranslators(host, lens, streams[:, n_fit:] if n_fit < n_tok else streams)
    losses = []
    try:
        for step in progress(range(cfg.steps), desc=f"tuned lens ({host.arch})", unit="step"):
            idx = torch.randint(0, n_fit, (min(cfg.batch_tokens, n_fit),), generator=gen)
            x = streams[:, idx].to(host.device)
            with torch.no_grad():
                target = F.log_softmax(host.unembed(x[-1]).float(), -1)
            loss = sum(kl_to_final(target, F.log_softmax(host.unembed(lens.translate(i, x[i])).float(), -1)).mean()
                       for i in trained) / max(1, len(trained))
            opt.zero_grad(set_to_none=True)
            if n_layers > 1:
                loss.backward()
                with torch.no_grad():
                    lens.weight.grad[-1].zero_()
                    lens.bias.grad[-1].zero_()
                opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if (step + 1) % cfg.check_every == 0 or step + 1 == cfg.steps:
                best.check(step + 1)
    finally:
        for p in params:
            p.requires_grad_(True)
    best.restore()
    lens.info["identity_layers"] = [i for i in trained if best.step[i] == 0]
    lens.info["kept_steps"] = [best.step[i] for i in trained]
    lens.info["heldback_kl"] = [best.kl[i] for i in trained]
    lens.info["final_loss"] = float(np.mean(losses[-10:])) if losses else 0.0
    lens.info["first_loss"] = losses[0] if losses else 0.0
    return lens.cpu()


class _BestTranslators:
    """Phase 3 of training: each translator's state of lowest mean KL on held-back ``streams`` ``[n_layers, n, d]``
    among the checked ones (the first check, at construction, is the identity: the logit lens)."""

    def __init__(self, host: Any, lens: TunedLens, streams: torch.Tensor):
        self.host, self.lens, self.x = host, lens, streams.to(host.device)
        with torch.no_grad():
            self.final = F.log_softmax(host.unembed(self.x[-1]).float(), -1)
        n = lens.n_layers - 1
        self.kl = [math.inf] * n
        self.step = [0] * n
        self.weight = lens.weight.detach()[:n].clone()
        self.bias = lens.bias.detach()[:n].clone()
        self.check(0)

    @torch.no_grad()
    def check(self, step: int) -> None:
        """Score every translator now; keep the ones better than their best so far."""
        for i in range(self.lens.n_layers - 1):
            lp = F.log_softmax(self.host.unembed(self.lens.translate(i, self.x[i])).float(), -1)
            kl = float(kl_to_final(self.final, lp).mean())
            if kl < self.kl[i]:
                self.kl[i], self.step[i] = kl, step
                self.weight[i].copy_(self.lens.weight[i])
                self.bias[i].copy_(self.lens.bias[i])

    @torch.no_grad()
    def restore(self) -> None:
        """Write the kept states into the lens."""
        n = self.lens.n_layers - 1
        self.lens.weight[:n].copy_(self.weight)
        self.lens.bias[:n].copy_(self.bias)


def kl_to_final(final_logp: torch.Tensor, lens_logp: torch.Tensor) -> torch.Tensor:
    """``KL(final || lens)`` in nats per token: ``[..., vocab]`` log-probabilities in, ``[...]`` out."""
    return (final_logp.exp() * (final_logp - lens_logp)).sum(-1)


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class LensCurve:
    """One lens's per-block statistics on one host: means over tokens, 95% intervals over sequences."""

    lens: str
    """``"logit"`` or ``"tuned"``."""
    kl: list[float]
    """Mean ``KL(final || lens)`` in nats per block."""
    kl_ci: list[list[float]]
    """``[lo, hi]`` per block."""
    top1: list[float]
    """Share of tokens whose lens argmax equals the final argmax, per block."""
    top1_ci: list[list[float]]
    entropy: list[float]
    """Mean entropy of the lens distribution in nats, per block."""
    entropy_ci: list[list[float]]

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LensCurve":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass
class LensResult:
    """Logit- and tuned-lens curves of one host (results.json ``lens_steer.lens`` entries)."""

    model: str
    arch: str
    n_layers: int
    depths: list[float]
    """Relative depth ``(i + 1) / n_layers`` of each block's ``resid_post``."""
    curves: list[LensCurve]
    n_tokens: int
    """Held-out tokens measured."""
    n_sequences: int
    final_entropy: float
    """Mean entropy of the model's own output distribution (nats)."""
    train: dict = field(default_factory=dict)
    """Tuned-lens training facts (tokens, steps, first and final loss)."""

    def curve(self, lens: str) -> LensCurve | None:
        """The curve of lens kind ``lens``, if measured."""
        return next((c for c in self.curves if c.lens == lens), None)

    def to_dict(self) -> dict:
        """JSON-able dict."""
        d = asdict(self)
        d["curves"] = [c.to_dict() for c in self.curves]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LensResult":
        """Inverse of :meth:`to_dict`."""
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["curves"] = [LensCurve.from_dict(c) for c in d.get("curves") or []]
        return cls(**kw)


def mean_interval(per_token: np.ndarray, seq_id: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, list[float]]:
    """Mean of ``per_token`` [n] and a 95% percentile bootstrap interval resampling whole sequences (``seq_id`` [n])."""
    per_token = np.asarray(per_token, dtype=np.float64)
    mean = float(per_token.mean())
    uniq, inv = np.unique(seq_id, return_inverse=True)
    sums = np.bincount(inv, weights=per_token, minlength=uniq.size)
    counts = np.bincount(inv, minlength=uniq.size).astype(np.float64)
    if uniq.size < 2 or n_boot < 1:
        return mean, [mean, mean]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, uniq.size, size=(n_boot, uniq.size))
    boot = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return mean, [float(lo), float(hi)]


@torch.no_grad()
def lens_curves(host: Any, tokens: torch.Tensor, mask: torch.Tensor | None = None, tuned: TunedLens | None = None,
                name: str = "", n_boot: int = 200, chunk: int = 1024, streams: tuple[torch.Tensor, torch.Tensor] | None = None,
                train: dict | None = None) -> LensResult:
    """Per-block KL to the final distribution, top-1 agreement and entropy of the logit lens (and ``tuned``).

    Args:
        tokens: ``[n_seq, t]`` held-out token ids; mask: ``[n_seq, t]`` (default all real).
        tuned: a :class:`TunedLens` for this host, or ``None`` for the logit lens only.
        streams: ready ``(streams [n_layers, n_tokens, d], seq_id [n_tokens])`` from :func:`collect_streams`.
    """
    if tuned is not None:
        tuned.check_host(host)
        tuned = tuned.to(host.device)
    x_all, seq = streams if streams is not None else collect_streams(host, tokens, mask)
    n_layers, n_tok, _ = x_all.shape
    lenses = ["logit"] + (["tuned"] if tuned is not None else [])
    stats = {(l, s): np.zeros((n_layers, n_tok)) for l in lenses for s in ("kl", "top1", "entropy")}
    final_entropy = np.zeros(n_tok)
    for s in range(0, n_tok, chunk):
        x = x_all[:, s:s + chunk].to(host.device)
        final = F.log_softmax(host.unembed(x[-1]).float(), -1)
        top = final.argmax(-1)
        final_entropy[s:s + chunk] = (-(final.exp() * final).sum(-1)).cpu().numpy()
        for i in range(n_layers):
            for lens in lenses:
                xi = x[i] if lens == "logit" or i == n_layers - 1 else tuned.translate(i, x[i])
                lp = F.log_softmax(host.unembed(xi).float(), -1)
                stats[lens, "kl"][i, s:s + chunk] = kl_to_final(final, lp).clamp_min(0).cpu().numpy()
                stats[lens, "top1"][i, s:s + chunk] = (lp.argmax(-1) == top).float().cpu().numpy()
                stats[lens, "entropy"][i, s:s + chunk] = (-(lp.exp() * lp).sum(-1)).cpu().numpy()
    seq_np = seq.numpy()
    curves = []
    for lens in lenses:
        out: dict[str, Any] = {"lens": lens}
        for stat in ("kl", "top1", "entropy"):
            pairs = [mean_interval(stats[lens, stat][i], seq_np, n_boot, seed=i) for i in range(n_layers)]
            out[stat] = [p[0] for p in pairs]
            out[stat + "_ci"] = [p[1] for p in pairs]
        curves.append(LensCurve(**out))
    return LensResult(name or host.arch, host.arch, n_layers, [(i + 1) / n_layers for i in range(n_layers)], curves,
                      int(n_tok), int(np.unique(seq_np).size), float(final_entropy.mean()), dict(train or {}))
