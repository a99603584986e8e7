"""A trained joint dictionary in raw units: encode a list of models' rows, decode into every model, classify latents.

:class:`JointDictionary` wraps the trained coder of a joint kind (which works on
the concatenated, scaled space) and speaks per-model raw activations. Its own
folder format: ``joint.json`` (``"format": "universality.joint"`` plus every
config field) and ``joint.safetensors`` (the coder's tensors and the latents'
activation ``frequency``, plus a universal SAE's ``source_frequency``), both written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..._errors import UniversalityError
from ..._io import atomic_save_tensors, atomic_write_json, ensure_writable_dir, load_tensors, read_json_object
from .. import registry
from ..coder import SparseCoder
from ..config import CoderConfig
from .config import JointConfig
from .kinds import USAECoder, block_norms

FORMAT_NAME = "universality.joint"
FORMAT_VERSION = 1
SHARED = "shared"
"""Label of a latent every model carries."""
DEAD = "dead"
"""Label of a latent that never fired on the data it was measured on."""
UNRESOLVED = "unresolved"
"""Label of a universal SAE latent whose decoder writes strongly into a model whose encoder never evokes it (its two views
disagree); like a dead latent it is left out of the class fractions."""
UNCLASSED = (DEAD, UNRESOLVED)
"""Labels that are not a class (left out of the fractions)."""


class JointDictionary:
    """One sparse code shared by M models: ``encode(xs)`` → codes ``[n, n_latents]``, ``decode(codes)`` → a tensor per model.

    ``frequency`` ``[n_latents]`` is the fraction of rows on which each latent fired
    (measured by :func:`~universality.sae.fit_joint` on held-out rows; ``None`` if unknown).
    ``source_frequency`` ``[M, n_latents]`` (universal SAEs only) is the same fraction when
    the code is read from model m's encoder alone: which models *evoke* each latent.
    """

    def __init__(self, coder: SparseCoder, frequency: torch.Tensor | None = None, source_frequency: torch.Tensor | None = None):
        if not isinstance(coder.cfg, JointConfig):
            raise UniversalityError(f"a {coder.cfg.kind!r} dictionary is not a joint dictionary; joint kinds are {', '.join(registry.registered_kinds(joint=True))}")
        self.coder = coder
        self.frequency = frequency
        self.source_frequency = source_frequency
        self.metrics = None

    # ----- shape ---------------------------------------------------------------------------------
    @property
    def cfg(self) -> JointConfig:
        """The coder's :class:`~universality.sae.joint.JointConfig` (a kind's subclass)."""
        return self.coder.cfg

    @property
    def kind(self) -> str:
        """Registered joint kind name."""
        return self.cfg.kind

    @property
    def n_latents(self) -> int:
        """Number of latents."""
        return self.cfg.n_latents

    @property
    def names(self) -> list[str]:
        """Model names, in order."""
        return list(self.cfg.model_names)

    @property
    def widths(self) -> list[int]:
        """Activation width of each model."""
        return list(self.cfg.widths)

    @property
    def n_models(self) -> int:
        """Number of models M."""
        return self.cfg.n_models

    @property
    def decoder_norms(self) -> torch.Tensor:
        """Per-model decoder norms ``[M, n_latents]`` in the scaled space (every model at equal energy)."""
        return block_norms(self.coder.W_dec.detach(), self.cfg.blocks())

    def decoder(self, m: int) -> torch.Tensor:
        """Model ``m``'s decoder directions ``[n_latents, d_m]`` (scaled space)."""
        return self.coder.W_dec.detach()[:, self.cfg.blocks()[m]]

    # ----- raw units ---------------------------------------------------------------------------------
    def _check_rows(self, xs: Sequence[torch.Tensor]) -> int:
        if not isinstance(xs, (list, tuple)) or len(xs) != self.n_models:
            got = len(xs) if isinstance(xs, (list, tuple)) else type(xs).__name__
            raise UniversalityError(f"xs has {got} entries; this joint dictionary reads {self.n_models} models ({', '.join(self.names)})")
        n = None
        for i, (x, w) in enumerate(zip(xs, self.widths)):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != w:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise UniversalityError(f"xs[{i}] has shape {shape}; model '{self.names[i]}' expects [n, {w}]")
            if n is not None and x.shape[0] != n:
                raise UniversalityError(f"xs[{i}] has {x.shape[0]} rows but xs[0] has {n}; give the same aligned rows for every model")
            n = x.shape[0]
        return int(n)

    def scaled(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The concatenated scaled rows ``[n, sum d_m]`` of raw per-model rows ``xs`` (list of ``[n, d_m]``)."""
        self._check_rows(xs)
        dev, dt = self.coder.W_enc.device, self.coder.W_enc.dtype
        return torch.cat([x.to(dev, dt) * s for x, s in zip(xs, self.cfg.model_scales)], dim=1)

    @torch.no_grad()
    def encode_scaled(self, xn: torch.Tensor, source: int | None = None) -> torch.Tensor:
        """Codes ``[n, n_latents]`` of scaled concatenated rows ``xn`` ``[n, sum d_m]``.

        ``source`` = m reads model m alone: a universal SAE uses model m's encoder;
        a crosscoder sees every other model's block at its decoder bias (zero input).
        """
        c = self.coder
        if source is None:
            return c.activate(c.preacts(xn))
        if not (isinstance(source, int) and 0 <= source < self.n_models):
            raise UniversalityError(f"source={source!r} is not valid; give a model index 0..{self.n_models - 1}")
        sl = self.cfg.blocks()[source]
        if isinstance(c, USAECoder):
            return c.activate_from(c.preacts_from(xn[:, sl], source), source)
        xs = c.b_dec.expand_as(xn).clone()
        xs[:, sl] = xn[:, sl]
        return c.activate(c.preacts(xs))

    def encode(self, xs: Sequence[torch.Tensor], source: int | None = None) -> torch.Tensor:
        """Codes ``[n, n_latents]`` of aligned raw rows ``xs`` (one ``[n, d_m]`` tensor per model); see :meth:`encode_scaled` for ``source``."""
        return self.encode_scaled(self.scaled(xs), source)

    @torch.no_grad()
    def decode_scaled(self, codes: torch.Tensor) -> torch.Tensor:
        """Scaled concatenated reconstruction ``[n, sum d_m]`` of codes ``[n, n_latents]``."""
        c = self.coder
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != self.n_latents:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise UniversalityError(f"codes have shape {shape}; this joint dictionary expects [n, {self.n_latents}]")
        return c.decode(codes)  # output_scale is 1: the joint scaling lives in model_scales; sparse codes take the sparse path

    def decode(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Raw reconstruction of every model from codes ``[n, n_latents]``: a list of ``[n, d_m]`` tensors."""
        out = self.decode_scaled(codes)
        return [out[:, sl] / s for sl, s in zip(self.cfg.blocks(), self.cfg.model_scales)]

    # ----- latent classes ---------------------------------------------------------------------------------
    def carriers(self, threshold: float = 0.3) -> torch.Tensor:
        """Bool ``[M, n_latents]``: model m carries latent i when ``||d_m,i|| >= threshold * max_m' ||d_m',i||``."""
        if not (0 < threshold <= 1):
            raise UniversalityError(f"threshold={threshold!r} is not valid; use a number in (0, 1]")
        norms = self.decoder_norms
        return norms >= threshold * norms.max(0).values.clamp_min(1e-12)

    def duplicate_groups(self, threshold: float = 0.3, cosine: float = 0.9) -> torch.Tensor:
        """Long ``[n_latents]``: each live latent's representative, the most frequent latent it duplicates (itself if none).

        Latent j duplicates a more frequent latent i when both have the same decoder carriers
        (:meth:`carriers` at ``threshold``) and their decoder directions have cosine > ``cosine``
        in every carrying model: they write the same thing everywhere they write (a universal
        SAE's *source-split* copies of one feature, each read by a different model's encoder).
        Dead latents map to themselves. Work is chunked: ``[1024, n_latents]`` per model at a time.
        """
        n = self.n_latents
        car = self.carriers(threshold)
        freq = self.frequency if self.frequency is not None else torch.ones(n)
        live = freq > 0
        order = sorted(range(n), key=lambda i: (-float(freq[i]), i))
        rank = torch.empty(n, dtype=torch.long)
        rank[torch.tensor(order)] = torch.arange(n)
        unit = [torch.nn.functional.normalize(self.decoder(m).float().cpu(), dim=1, eps=1e-12) for m in range(self.n_models)]
        code = (car.long() * (2 ** torch.arange(self.n_models))[:, None]).sum(0).cpu()  # carrier pattern as an integer
        candidates: dict[int, list[int]] = {}
        for lo in range(0, n, 1024):
            hi = min(n, lo + 1024)
            ok = (code[lo:hi, None] == code[None, :]) & live[lo:hi, None] & live[None, :]
            ok &= rank[lo:hi, None] > rank[None, :]  # only more frequent latents can be a representative
            for m in range(self.n_models):
                close = (unit[m][lo:hi] @ unit[m].t()) > cosine
                ok &= close | ~car[m, lo:hi, None].cpu()
            for a, b in ok.nonzero().tolist():
                candidates.setdefault(lo + a, []).append(b)
        rep = torch.arange(n)
        for i in order:  # most frequent first: a latent joins the first representative it duplicates
            for j in sorted(candidates.get(i, ()), key=lambda j: int(rank[j])):
                if int(rep[j]) == j:
                    rep[i] = j
                    break
        return rep

    def readers(self, threshold: float = 0.3) -> torch.Tensor | None:
        """Bool ``[M, n_latents]`` for a universal SAE with known ``source_frequency``: which models *read* each latent.

        Each model's encoder has its own firing budget (its L0, ``source_frequency[m].sum()``;
        a crowded model fires more), so a latent's reading by model m is its duplicate group's
        (:meth:`duplicate_groups`) share of model m's firing; model m reads the latent when that
        share is at least ``threshold`` times the largest share over models. ``None`` for other kinds.
        """
        if self.source_frequency is None or not isinstance(self.coder, USAECoder):
            return None
        rep = self.duplicate_groups(threshold)
        sf = self.source_frequency.float().cpu()
        group = torch.zeros_like(sf).index_add_(1, rep, sf)[:, rep]  # every latent sees its group's firing per source
        share = group / sf.sum(1, keepdim=True).clamp_min(1e-12)
        top = share.max(0).values
        return (share >= threshold * top) & (top > 0)

    def classify(self, threshold: float = 0.3, conflict: float = 0.5) -> list[str | tuple[str, ...]]:
        """Per-latent label: ``"shared"`` when every model carries it, else the tuple of model names that do.

        A latent whose ``frequency`` is 0 is ``"dead"`` (when the frequency is known).
        ``threshold`` is the decoder-norm ratio of :meth:`carriers`. A universal SAE (with
        ``source_frequency``) also asks its encoders, since a latent read from one model alone still
        gets a decoder into every model (fit to whatever the others show on those rows): model m carries a
        latent when it both writes it (decoder norm) and reads it (:meth:`readers`). A latent that writes
        at least ``conflict`` of its largest norm into a model that does not read it is ``"unresolved"``
        (the decoder says the model carries it, the encoder says it does not); weaker writes there are leakage.
        """
        car = self.carriers(threshold).cpu()
        reads = self.readers(threshold)
        unresolved = torch.zeros(self.n_latents, dtype=torch.bool)
        if reads is not None:
            norms = self.decoder_norms.cpu()
            strong = norms >= conflict * norms.max(0).values.clamp_min(1e-12)
            unresolved = (strong & ~reads).any(0)
            both = car & reads
            car = torch.where(both.any(0, keepdim=True), both, car)
        names = self.names
        dead = self.frequency <= 0 if self.frequency is not None else torch.zeros(self.n_latents, dtype=torch.bool)
        out: list[str | tuple[str, ...]] = []
        for i in range(self.n_latents):
            if bool(dead[i]):
                out.append(DEAD)
            elif bool(unresolved[i]):
                out.append(UNRESOLVED)
            elif bool(car[:, i].all()):
                out.append(SHARED)
            else:
                out.append(tuple(n for m, n in enumerate(names) if bool(car[m, i])))
        return out

    # ----- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write folder ``path``: ``joint.json`` + ``joint.safetensors`` (atomic); read it back with :func:`load_joint`."""
        folder = ensure_writable_dir(path)
        tensors = dict(self.coder.tensors())
        if self.frequency is not None:
            tensors["frequency"] = self.frequency.detach().float().cpu()
        if self.source_frequency is not None:
            tensors["source_frequency"] = self.source_frequency.detach().float().cpu()
        atomic_save_tensors(folder / "joint.safetensors", tensors)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **self.cfg.to_dict()}
        if self.metrics is not None:
            meta["metrics"] = self.metrics
        atomic_write_json(folder / "joint.json", meta)
        return folder

    def to(self, device) -> "JointDictionary":
        """Move the coder (and frequency) to ``device``; returns self."""
        self.coder = self.coder.to(device)
        return self

    def __repr__(self) -> str:
        return f"JointDictionary(kind={self.kind}, models={self.names}, widths={self.widths}, n_latents={self.n_latents})"


def load_joint(path: str | os.PathLike, device: str = "cpu") -> JointDictionary:
    """Load a joint dictionary folder written by :meth:`JointDictionary.save` onto ``device``."""
    folder = Path(path)
    meta_path = folder / "joint.json"
    if not meta_path.is_file():
        raise UniversalityError(f"'{folder}' is not a joint dictionary folder; expected joint.json and joint.safetensors written by JointDictionary.save")
    meta = read_json_object(meta_path, "a joint dictionary's joint.json")
    if meta.get("format") != FORMAT_NAME:
        raise UniversalityError(f"'{meta_path}' has format {meta.get('format')!r}, not {FORMAT_NAME!r}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise UniversalityError(f"'{folder}' was written by a newer format version {meta['version']}; this reader knows up to {FORMAT_VERSION}")
    cfg = CoderConfig.from_dict(meta)
    coder = registry.coder_class(cfg.kind)(cfg)
    tensors = load_tensors(folder / "joint.safetensors")
    freq = tensors.pop("frequency", None)
    source_freq = tensors.pop("source_frequency", None)
    missing = set(coder.state_dict()) - set(tensors)
    if missing:
        raise UniversalityError(f"'{folder / 'joint.safetensors'}' lacks tensors {sorted(missing)}; the folder is incomplete")
    coder.load_state_dict(tensors, strict=True)
    jd = JointDictionary(coder.to(device).eval(), freq, source_freq)
    jd.metrics = meta.get("metrics")
    return jd


__all__ = ["JointDictionary", "load_joint", "SHARED", "DEAD", "UNRESOLVED", "UNCLASSED", "FORMAT_NAME"]
