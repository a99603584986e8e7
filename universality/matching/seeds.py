"""Seed stability of dictionaries (Paulo & Belrose): which latents two (or N) runs share.

Two latents are paired by Hungarian matching on encoder-row cosine and, separately,
on decoder-row cosine; a latent of A is *shared* when both its matched cosines
exceed the threshold (0.7 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np
import torch

from .._errors import UniversalityError
from .._records import require_keys
from ._inputs import check_threshold, to_numpy
from .assign import assign
from .similarity import cosine_factors


@dataclass(frozen=True)
class SeedOverlap:
    """Shared latents between two dictionaries, seen from A."""

    shared_fraction: float
    """Fraction of A's latents that are shared (both matched cosines above the threshold)."""
    pairs: torch.Tensor
    """[n_shared, 2] int64 (latent of A, its decoder-matched latent of B) for shared latents."""
    encoder_cos: torch.Tensor
    """[n_a] float64 cosine with the encoder-assigned partner (NaN when unmatched: A wider than B)."""
    decoder_cos: torch.Tensor
    """[n_a] float64 cosine with the decoder-assigned partner (NaN when unmatched)."""
    shared: torch.Tensor
    """[n_a] bool: which latents of A are shared."""
    assignments_agree: float
    """Fraction of A's matched latents whose encoder and decoder partners are the same latent of B."""
    threshold: float
    """The threshold used."""

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-latent arrays)."""
        return {"shared_fraction": self.shared_fraction, "n_shared": int(self.pairs.shape[0]),
                "n_latents": int(self.shared.numel()), "assignments_agree": self.assignments_agree,
                "threshold": self.threshold}


def coder_matrices(coder: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(W_enc [n, d_in], W_dec [n, d_out]) of a coder, of a ``(W_enc, W_dec)`` pair, or one matrix used as both."""
    if hasattr(coder, "W_enc") and hasattr(coder, "W_dec"):
        enc, dec = coder.W_enc, coder.W_dec
    elif isinstance(coder, (tuple, list)) and len(coder) == 2:
        enc, dec = coder
    elif isinstance(coder, (torch.Tensor, np.ndarray)):
        enc = dec = coder
    else:
        raise UniversalityError(f"{name} must have W_enc and W_dec attributes, be a (W_enc, W_dec) pair or one matrix; got {type(coder).__name__}")
    enc, dec = to_numpy(enc, f"{name}.W_enc"), to_numpy(dec, f"{name}.W_dec")
    if enc.shape[0] != dec.shape[0]:
        raise UniversalityError(f"{name}: W_enc has {enc.shape[0]} latents but W_dec has {dec.shape[0]}; both are [n_latents, d]")
    return enc, dec


def seed_overlap(coder_a: Any, coder_b: Any, threshold: float = 0.7, *, method: str = "hungarian", k: int = 32) -> SeedOverlap:
    """Shared latents of two dictionaries: Hungarian on encoder and on decoder cosine, both above ``threshold``.

    ``coder_*``: objects with ``W_enc`` [n, d_in] and ``W_dec`` [n, d_out] (rows are latents), or such a pair,
    or one matrix. ``method``: ``"hungarian"`` or ``"sparse-hungarian"`` (large dictionaries; ``k`` candidates).
    """
    threshold = check_threshold(threshold)
    if method not in ("hungarian", "sparse-hungarian"):
        raise UniversalityError(f"method must be 'hungarian' or 'sparse-hungarian', got {method!r}")
    enc_a, dec_a = coder_matrices(coder_a, "coder_a")
    enc_b, dec_b = coder_matrices(coder_b, "coder_b")
    n_a = enc_a.shape[0]
    partners, cosines = [], []
    for xa, xb in ((enc_a, enc_b), (dec_a, dec_b)):
        sim = cosine_factors(xa, xb, dtype=torch.float64 if method == "hungarian" else torch.float32)
        m = assign(sim, method, k=k)
        partner = m.partner_of_rows(n_a)
        cos = torch.full((n_a,), float("nan"), dtype=torch.float64)
        cos[m.rows] = torch.as_tensor(sim.pairs(m.rows.numpy(), m.cols.numpy()), dtype=torch.float64)
        partners.append(partner)
        cosines.append(cos)
    (enc_p, dec_p), (enc_c, dec_c) = partners, cosines
    shared = (enc_c > threshold) & (dec_c > threshold)
    matched = (enc_p >= 0) & (dec_p >= 0)
    agree = float((enc_p[matched] == dec_p[matched]).double().mean()) if bool(matched.any()) else float("nan")
    idx = torch.nonzero(shared).ravel()
    pairs = torch.stack([idx, dec_p[idx]], dim=1)
    return SeedOverlap(float(shared.double().mean()), pairs, enc_c, dec_c, shared, agree, threshold)


@dataclass(frozen=True)
class SeedPresence:
    """For N dictionaries: in how many seeds each latent of the reference appears."""

    counts: torch.Tensor
    """[n_ref] int64: number of seeds (the reference included) in which each reference latent is shared."""
    histogram: torch.Tensor
    """[n_seeds + 1] int64: histogram[m] = number of reference latents present in exactly m seeds (m ≥ 1)."""
    shared_fraction: torch.Tensor
    """[n_seeds, n_seeds] float64 pairwise shared fractions (row seed seen from itself; diagonal 1)."""


def seed_presence(coders: Sequence[Any], threshold: float = 0.7, *, reference: int = 0, method: str = "hungarian",
                  k: int = 32) -> SeedPresence:
    """Seed overlap across N ≥ 2 dictionaries: per reference latent, the number of seeds that share it."""
    if len(coders) < 2:
        raise UniversalityError(f"coders must hold at least two dictionaries, got {len(coders)}")
    if not 0 <= reference < len(coders):
        raise UniversalityError(f"reference must be an index in [0, {len(coders) - 1}], got {reference}")
    n = len(coders)
    frac = torch.eye(n, dtype=torch.float64)
    counts = None
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            s = seed_overlap(coders[i], coders[j], threshold, method=method, k=k)
            frac[i, j] = s.shared_fraction
            if i == reference:
                counts = s.shared.long() if counts is None else counts + s.shared.long()
    counts = counts + 1
    hist = torch.bincount(counts, minlength=n + 1)
    return SeedPresence(counts, hist, frac)


CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
"""Cosine thresholds of the shared-fraction curve of :func:`seed_stability`."""


@dataclass(frozen=True)
class SeedOverlapResult:
    """A seed-stability study of N ≥ 2 dictionaries of one kind and size: the results.json ``seed_overlap`` entry."""

    model: str
    """Label of the host the dictionaries were trained on."""
    hook: str
    """Full hook name they read (e.g. ``blocks.2.mlp_out``)."""
    kind: str
    """Dictionary kind (``topk``, ``relu``, ...)."""
    n_latents: int
    """Latents per dictionary."""
    k: int | None
    """Active latents per token for TopK kinds, else ``None``."""
    seeds: list[int]
    """Training seeds, in the order of the dictionaries."""
    threshold: float
    """Cosine both matched partners must exceed for a latent to count as shared."""
    shared_fraction: float
    """Mean over seed pairs of the shared fraction (seen from the first of each pair)."""
    shared_fraction_std: float
    """Standard deviation of the shared fraction over seed pairs (ddof 1; 0 with a single pair)."""
    agreement: float | None
    """Mean over seed pairs of the fraction whose encoder and decoder partners coincide (``None`` if never defined)."""
    n_seed_hist: list[int]
    """``n_seed_hist[m - 1]``: latents of the first dictionary present in exactly m of the seeds."""
    curve_thresholds: list[float]
    """Thresholds of the shared-fraction curve."""
    curve_shared_fraction: list[float]
    """Shared fraction of the first seed pair at each curve threshold."""

    def to_dict(self) -> dict:
        """The results.json entry (``curve`` nests the two curve lists)."""
        return {"model": self.model, "hook": self.hook, "kind": self.kind, "n_latents": self.n_latents, "k": self.k,
                "seeds": list(self.seeds), "threshold": self.threshold, "shared_fraction": self.shared_fraction,
                "shared_fraction_std": self.shared_fraction_std, "agreement": self.agreement,
                "n_seed_hist": list(self.n_seed_hist),
                "curve": {"thresholds": list(self.curve_thresholds), "shared_fraction": list(self.curve_shared_fraction)}}

    @classmethod
    def from_dict(cls, d: dict) -> "SeedOverlapResult":
        """Inverse of :meth:`to_dict`."""
        keys = ("model", "hook", "kind", "n_latents", "k", "seeds", "threshold", "shared_fraction", "shared_fraction_std",
                "agreement", "n_seed_hist", "curve")
        require_keys(d, keys, "seed_overlap")
        curve = d["curve"] or {}
        return cls(d["model"], d["hook"], d["kind"], int(d["n_latents"]), d["k"], list(d["seeds"]), d["threshold"],
                   d["shared_fraction"], d["shared_fraction_std"], d["agreement"], list(d["n_seed_hist"]),
                   list(curve.get("thresholds", [])), list(curve.get("shared_fraction", [])))


def seed_stability(coders: Sequence[Any], threshold: float = 0.7, *, seeds: Sequence[int] | None = None,
                   model: str = "", hook: str = "", kind: str = "", k: int | None = None,
                   curve_thresholds: Sequence[float] = CURVE_THRESHOLDS) -> SeedOverlapResult:
    """Seed stability of N ≥ 2 dictionaries (Paulo & Belrose): shared fraction over every seed pair, its spread,
    the N-seed presence histogram and the shared-fraction-vs-threshold curve of the first pair.

    ``coders`` as in :func:`seed_overlap`; ``seeds`` labels them (default 0..N-1); ``model``, ``hook``, ``kind`` and
    ``k`` describe the study in the returned record and do not enter the computation.
    """
    if len(coders) < 2:
        raise UniversalityError(f"coders must hold at least two dictionaries, got {len(coders)}")
    seeds = list(range(len(coders))) if seeds is None else list(seeds)
    if len(seeds) != len(coders):
        raise UniversalityError(f"seeds must name one seed per dictionary ({len(coders)}), got {len(seeds)}")
    overlaps = [seed_overlap(a, b, threshold) for a, b in combinations(coders, 2)]
    fracs = np.array([o.shared_fraction for o in overlaps])
    presence = seed_presence(coders, threshold)
    first = overlaps[0]
    curve = [float(((first.encoder_cos > t) & (first.decoder_cos > t)).double().mean()) for t in curve_thresholds]
    agree = [o.assignments_agree for o in overlaps if o.assignments_agree == o.assignments_agree]
    n_latents = int(first.shared.numel())
    return SeedOverlapResult(model, hook, kind, n_latents, k, seeds, threshold, float(fracs.mean()),
                             float(fracs.std(ddof=1)) if fracs.size > 1 else 0.0,
                             float(np.mean(agree)) if agree else None,
                             [int(x) for x in presence.histogram[1:].tolist()], list(curve_thresholds), curve)
