"""What every joint dictionary reports: decoder-norm shares, classes with intervals, Latent Scaling, cross-R², MPPC agreement.

All statistics are taken in the scaled space (every model at equal energy) and
accumulated in float64 over chunks of aligned rows.

* :func:`decoder_shares` / :func:`share_histogram`: ``||d_m,i|| / sum_m' ||d_m',i||``
  per model and latent (shared ≈ 1/M each, exclusive ≈ 1 for one model).
* :func:`decoder_cosines`: cosine between a latent's decoder directions in two models of the same width.
* :func:`class_counts`: shared / exclusive / subset counts with Wilson intervals over latents.
* :func:`latent_scaling` (Minder et al. 2025, generalised to models of different
  widths): for a latent classed exclusive to model A and every other model B, the
  least-squares direction ``v_B = E[f (y_B - E y_B)] / E[f²]`` of B's centred activation explained
  by the latent's activation ``f``; ``nu = ||v_B|| / ||v_A||`` compares it with the
  same fit in A (A's error plus the latent's own contribution). A truly exclusive
  latent has ``nu ≈ 0``; a latent whose concept B also carries has ``nu`` near 1 and is flagged.
* :func:`cross_r2`: the M × M matrix of R² when encoding from model i alone and decoding into model j.
* :func:`agreement_with_mppc`: among latents classed shared, how often independent per-model
  dictionaries' best MPPC partners of the latent are also mutual best matches.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from ..._errors import UniversalityError
from .dictionary import SHARED, UNCLASSED, JointDictionary
from .kinds import USAECoder
from .rows import AlignedRows


def _chunks(n: int, size: int = 8192):
    for lo in range(0, n, size):
        yield torch.arange(lo, min(n, lo + size))


def _source(jd: JointDictionary, xs: Any):
    src = xs if isinstance(xs, AlignedRows) else AlignedRows(xs)
    if src.widths != jd.widths:
        raise UniversalityError(f"the activations have widths {src.widths}; this joint dictionary reads widths {jd.widths}")
    return src


def frequency_and_fvu(jd: JointDictionary, xs: Any, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """Firing frequency ``[n_latents]`` and per-model FVU (a list of M floats) of ``jd`` on aligned rows ``idx`` of ``xs``.

    A universal SAE is read one model at a time: a latent's frequency counts rows where it fires from any
    model's encoder, and model m's FVU is that of its own encoding (the diagonal of :func:`cross_r2`).
    """
    freq, fvu, _ = firing_stats(jd, xs, idx)
    return freq, fvu


@torch.no_grad()
def firing_stats(jd: JointDictionary, xs: Any, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float], torch.Tensor | None]:
    """:func:`frequency_and_fvu` plus, for a universal SAE, the firing frequency from each model's encoder alone
    ``[M, n_latents]`` (the dictionary's ``source_frequency``; ``None`` for the other kinds), in one pass."""
    src = _source(jd, xs)
    idx = torch.arange(src.n) if idx is None else idx
    dev = jd.coder.W_enc.device
    fired = torch.zeros(jd.n_latents, dtype=torch.float64)
    blocks = jd.cfg.blocks()
    m = jd.n_models
    sq = torch.zeros(m, dtype=torch.float64)
    s1 = [torch.zeros(w, dtype=torch.float64) for w in jd.widths]
    s2 = torch.zeros(m, dtype=torch.float64)
    per_source = isinstance(jd.coder, USAECoder)
    by_source = torch.zeros(m, jd.n_latents, dtype=torch.float64)
    for lo in range(0, idx.numel(), 8192):
        xn = src.concat(idx[lo:lo + 8192], jd.cfg.model_scales).to(dev)
        xd = xn.double().cpu()
        if per_source:  # a universal SAE reads one model at a time: model j's own encoder reconstructs model j
            zs = [jd.encode_scaled(xn, source=j) for j in range(m)]
            on = torch.stack([z > 0 for z in zs])
            fired += on.any(0).sum(0).double().cpu()
            by_source += on.sum(1).double().cpu()
            errs = [(jd.decode_scaled(z) - xn).double().cpu() for z in zs]
        else:
            z = jd.encode_scaled(xn)
            fired += (z > 0).sum(0).double().cpu()
            errs = [(jd.decode_scaled(z) - xn).double().cpu()] * m
        for j, sl in enumerate(blocks):
            sq[j] += errs[j][:, sl].pow(2).sum()
            s1[j] += xd[:, sl].sum(0)
            s2[j] += xd[:, sl].pow(2).sum()
    n = idx.numel()
    var = torch.stack([s2[j] - s1[j].pow(2).sum() / n for j in range(m)])
    fvu = [float(sq[j] / var[j].clamp_min(1e-12)) for j in range(m)]
    return (fired / n).float(), fvu, (by_source / n).float() if per_source else None


def decoder_shares(jd: JointDictionary) -> torch.Tensor:
    """``[M, n_latents]``: each model's share ``||d_m,i|| / sum_m' ||d_m',i||`` of a latent's decoder norm."""
    norms = jd.decoder_norms
    return norms / norms.sum(0).clamp_min(1e-12)


def share_histogram(jd: JointDictionary, bins: int = 20, alive_only: bool = True) -> dict[str, Any]:
    """Histogram of every model's decoder share over ``bins`` equal bins of [0, 1]: ``{"edges", "counts": {name: [...]}}``."""
    sh = decoder_shares(jd)
    keep = jd.frequency > 0 if (alive_only and jd.frequency is not None) else torch.ones(jd.n_latents, dtype=torch.bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {n: np.histogram(sh[m][keep].numpy(), bins=edges)[0].tolist() for m, n in enumerate(jd.names)}
    return {"edges": edges.tolist(), "counts": counts}


def decoder_cosines(jd: JointDictionary) -> dict[str, torch.Tensor]:
    """Per pair of models of equal width, ``"A|B"`` → cosine ``[n_latents]`` between the latents' two decoder directions."""
    out = {}
    for a in range(jd.n_models):
        for b in range(a + 1, jd.n_models):
            if jd.widths[a] == jd.widths[b]:
                da, db = jd.decoder(a), jd.decoder(b)
                out[f"{jd.names[a]}|{jd.names[b]}"] = torch.nn.functional.cosine_similarity(da, db, dim=1, eps=1e-12)
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion ``k / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def label_name(label: Any) -> str:
    """A label as text: ``"shared"``, ``"dead"``, ``"unresolved"`` or the model names joined by ``+``."""
    return label if isinstance(label, str) else "+".join(label)


def class_counts(labels: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per class among classed latents: ``{"count", "fraction", "ci": [low, high]}`` (Wilson interval over latents;
    dead and unresolved latents are left out)."""
    live = [label_name(lb) for lb in labels if lb not in UNCLASSED]
    n = len(live)
    out = {}
    for name in sorted(set(live), key=lambda s: (s != SHARED, s.count("+") * -1, s)):
        c = live.count(name)
        out[name] = {"count": c, "fraction": c / n, "ci": list(wilson(c, n))}
    return out


def shared_fraction(labels: Sequence[Any]) -> float:
    """Fraction of classed latents (neither dead nor unresolved) labelled ``"shared"``."""
    live = [lb for lb in labels if lb not in UNCLASSED]
    return sum(lb == SHARED for lb in live) / max(len(live), 1)


def distinct_latents(jd: JointDictionary, labels: Sequence[Any], threshold: float = 0.9) -> list[int]:
    """Classed latents left after merging duplicates: a latent is dropped when a more frequent one with the same label
    writes the same directions (:meth:`~universality.sae.joint.JointDictionary.duplicate_groups`: same decoder carriers,
    cosine > ``threshold`` in every carrying model), e.g. a universal SAE's source-split copies."""
    rep = jd.duplicate_groups(cosine=threshold)
    return [i for i, lb in enumerate(labels) if lb not in UNCLASSED and (int(rep[i]) == i or labels[int(rep[i])] != lb)]


def distinct_shared_fraction(jd: JointDictionary, labels: Sequence[Any], threshold: float = 0.9) -> float:
    """Fraction of :func:`distinct_latents` labelled ``"shared"`` (duplicated latents counted once)."""
    kept = distinct_latents(jd, labels, threshold)
    return sum(labels[i] == SHARED for i in kept) / max(len(kept), 1)


class LatentScaling(NamedTuple):
    """Latent Scaling of the latents classed exclusive (owned by fewer than all models)."""

    latents: torch.Tensor
    """Latent ids examined ``[L]``."""
    nu: torch.Tensor
    """``[L, M]``: ``||v_m|| / ||v_owner||`` from each model's activation (NaN for the owner models)."""
    nu_error: torch.Tensor
    """``[L, M]``: the same fit on each model's reconstruction error instead of its activation."""
    flagged: torch.Tensor
    """Bool ``[L]``: some model that does not carry the latent has ``nu >= threshold`` (falsely exclusive)."""
    threshold: float
    """The flagging threshold on ``nu``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        def clean(t):
            return [[None if not math.isfinite(v) else round(float(v), 4) for v in row] for row in t.tolist()]
        return {"latents": self.latents.tolist(), "nu": clean(self.nu), "nu_error": clean(self.nu_error),
                "flagged": self.flagged.tolist(), "threshold": self.threshold}


@torch.no_grad()
def latent_scaling(jd: JointDictionary, xs: Any, labels: Sequence[Any] | None = None, threshold: float = 0.5,
                   idx: torch.Tensor | None = None) -> LatentScaling:
    """Latent Scaling of every live latent not labelled shared (see the module docstring); one pass over the rows."""
    src = _source(jd, xs)
    labels = jd.classify() if labels is None else labels
    lat = torch.tensor([i for i, lb in enumerate(labels) if lb != SHARED and lb not in UNCLASSED], dtype=torch.long)
    m = jd.n_models
    blocks = jd.cfg.blocks()
    if lat.numel() == 0:
        empty = torch.zeros(0, m)
        return LatentScaling(lat, empty, empty, torch.zeros(0, dtype=torch.bool), threshold)
    dev = jd.coder.W_enc.device
    idx = torch.arange(src.n) if idx is None else idx
    f1 = torch.zeros(lat.numel(), dtype=torch.float64)
    f2 = torch.zeros(lat.numel(), dtype=torch.float64)
    fy = torch.zeros(lat.numel(), sum(jd.widths), dtype=torch.float64)
    fe = torch.zeros_like(fy)
    y1 = torch.zeros(sum(jd.widths), dtype=torch.float64)
    e1 = torch.zeros_like(y1)
    for lo in range(0, idx.numel(), 8192):
        xn = src.concat(idx[lo:lo + 8192], jd.cfg.model_scales).to(dev)
        z = jd.encode_scaled(xn)
        xd = xn.double().cpu()
        err = xd - jd.decode_scaled(z).double().cpu()
        f = z[:, lat].double().cpu()
        f1 += f.sum(0)
        f2 += f.pow(2).sum(0)
        fy += f.t() @ xd
        fe += f.t() @ err
        y1 += xd.sum(0)
        e1 += err.sum(0)
    n = idx.numel()
    # centre the targets (a model's mean activation is not something a latent carries): sum f (y - mean y)
    fy -= f1[:, None] * (y1 / n)[None, :]
    fe -= f1[:, None] * (e1 / n)[None, :]
    ok = f2 > 0
    denom = f2.clamp_min(1e-300)[:, None]
    v_act, v_err = fy / denom, fe / denom
    W = jd.coder.W_dec.detach().double().cpu()[lat]
    car = jd.carriers()[:, lat].t()  # [L, M]
    # the owner's own fit: its error plus the latent's contribution, i.e. v_err + d (exactly, since f*d / f² = d)
    own = torch.zeros(lat.numel(), dtype=torch.float64)
    nu = torch.full((lat.numel(), m), float("nan"), dtype=torch.float64)
    nu_e = torch.full_like(nu, float("nan"))
    for j, sl in enumerate(blocks):
        own_j = (v_err[:, sl] + W[:, sl]).norm(dim=1)
        own = torch.where(car[:, j], torch.maximum(own, own_j), own)
    for j, sl in enumerate(blocks):
        other = ~car[:, j] & ok
        nu[other, j] = v_act[other][:, sl].norm(dim=1) / own[other].clamp_min(1e-12)
        nu_e[other, j] = v_err[other][:, sl].norm(dim=1) / own[other].clamp_min(1e-12)
    flagged = torch.nan_to_num(nu, nan=0.0).max(1).values >= threshold
    return LatentScaling(lat, nu.float(), nu_e.float(), flagged, threshold)


@torch.no_grad()
def cross_r2(jd: JointDictionary, xs: Any, idx: torch.Tensor | None = None) -> torch.Tensor:
    """``[M, M]``: R² of model j's activations when the code is read from model i alone (diagonal: own reconstruction)."""
    src = _source(jd, xs)
    m = jd.n_models
    blocks = jd.cfg.blocks()
    idx = torch.arange(src.n) if idx is None else idx
    dev = jd.coder.W_enc.device
    sq = torch.zeros(m, m, dtype=torch.float64)
    s1 = [torch.zeros(w, dtype=torch.float64) for w in jd.widths]
    s2 = torch.zeros(m, dtype=torch.float64)
    for lo in range(0, idx.numel(), 8192):
        xn = src.concat(idx[lo:lo + 8192], jd.cfg.model_scales).to(dev)
        xd = xn.double().cpu()
        for j, sl in enumerate(blocks):
            s1[j] += xd[:, sl].sum(0)
            s2[j] += xd[:, sl].pow(2).sum()
        for i in range(m):
            err = (jd.decode_scaled(jd.encode_scaled(xn, source=i)) - xn).double().cpu()
            for j, sl in enumerate(blocks):
                sq[i, j] += err[:, sl].pow(2).sum()
    n = idx.numel()
    var = torch.stack([s2[j] - s1[j].pow(2).sum() / n for j in range(m)]).clamp_min(1e-12)
    return (1 - sq / var[None, :]).float()


def off_diagonal_mean(mat: torch.Tensor) -> float:
    """Mean of the off-diagonal entries of a square matrix (the cross-R² of an R² matrix)."""
    m = mat.shape[0]
    off = ~torch.eye(m, dtype=torch.bool)
    return float(mat[off].mean())


def mutual_best(result: Any) -> torch.Tensor:
    """Bool ``[n_a]``: feature i of A and its best partner j in B pick each other (an :class:`~universality.matching.MPPCResult`)."""
    ab, ba = result.a_to_b.argmax, result.b_to_a.argmax
    ok = torch.isfinite(result.a_to_b.max_r) & (ab >= 0)
    back = torch.full_like(ab, -1)
    back[ok] = ba[ab[ok]]
    return ok & (back == torch.arange(ab.numel()))


def agreement_with_mppc(joint_codes: Any, model_codes: Sequence[Any], labels: Sequence[Any],
                        pair_results: dict | None = None) -> dict[str, Any]:
    """Of the latents labelled shared, the fraction whose best MPPC partners in every model's own dictionary are mutual best matches.

    ``joint_codes`` ``[n, n_latents]`` are the joint codes of the aligned rows, ``model_codes[m]``
    ``[n, n_m]`` model m's independent dictionary's codes of the same rows (tensors or scipy sparse).
    ``pair_results`` maps ``(a, b)`` (a < b) to the already computed MPPC of model a's and model b's codes.
    Returns ``{"agreement", "n_shared", "agreeing"}``.
    """
    from ... import matching

    partners = [matching.mppc(joint_codes, c).a_to_b for c in model_codes]
    ok = torch.ones(len(labels), dtype=torch.bool)
    for p in partners:
        ok &= torch.isfinite(p.max_r) & (p.argmax >= 0)
    for a in range(len(model_codes)):
        for b in range(a + 1, len(model_codes)):
            r = (pair_results or {}).get((a, b)) or matching.mppc(model_codes[a], model_codes[b])
            pa, pb = partners[a].argmax.clamp_min(0), partners[b].argmax.clamp_min(0)
            ok &= mutual_best(r)[pa] & (r.a_to_b.argmax[pa] == pb)
    shared = torch.tensor([lb == SHARED for lb in labels], dtype=torch.bool)
    n_shared = int(shared.sum())
    agreeing = int((ok & shared).sum())
    return {"agreement": agreeing / n_shared if n_shared else float("nan"), "n_shared": n_shared, "agreeing": agreeing}


def mutual_fraction(codes_a: Any, codes_b: Any) -> float:
    """Fraction of A's live features whose best MPPC partner in B picks them back (the SAE-seed skyline of agreement)."""
    from ... import matching

    r = matching.mppc(codes_a, codes_b)
    live = torch.isfinite(r.a_to_b.max_r)
    return float(mutual_best(r)[live].float().mean()) if bool(live.any()) else float("nan")


__all__ = ["frequency_and_fvu", "firing_stats", "decoder_shares", "share_histogram", "decoder_cosines", "wilson", "class_counts", "shared_fraction",
           "label_name", "distinct_latents", "distinct_shared_fraction", "LatentScaling", "latent_scaling", "cross_r2", "off_diagonal_mean", "mutual_best", "agreement_with_mppc",
           "mutual_fraction"]
