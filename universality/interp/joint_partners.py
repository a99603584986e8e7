"""Partners of per-host dictionary latents through a joint dictionary (crosscoder, universal SAE, ...).

A latent ``i`` of model A's own dictionary is matched to the joint latents whose decoder direction *in A* points
the same way (cosine of decoder rows; scale-free, so the joint dictionary's per-model scaling does not matter).
Each such joint latent ``J`` then names, in every other model B that carries it, the latent of B's own dictionary
whose decoder direction best matches ``J``'s direction in B. So the card of A's latent reads: "joint latent J
(shared, cosine 0.93 here) ↔ B's latent 17 (cosine 0.88), C's latent 4 (0.91)".

1. **Normalise** every decoder row (per-host ``W_dec`` ``[n_m, d_m]`` and each joint block ``[n_joint, d_m]``).
2. **Host → joint**: per model, in chunks of host latents, the ``top`` joint latents by cosine among those the
   model carries (a joint latent classed exclusive to another model, or dead, is never a candidate).
3. **Joint → host**: per model, each joint latent's best host latent and its cosine.
4. **Assemble** the per-latent entries.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .._errors import UniversalityError

SHARED = "shared"
DEAD = "dead"


def _unit(w: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(w).detach().to(torch.float32).cpu()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def carried_by(label: str | tuple, model: str) -> bool:
    """Whether a joint latent with class ``label`` (``"shared"``, ``"dead"`` or a tuple of model names) is carried by ``model``."""
    if label == DEAD:
        return False
    return label == SHARED or model in tuple(label)


def class_text(label: str | tuple, n_models: int) -> str:
    """``"shared"``, ``"exclusive to A"``, ``"shared by A+B"`` (a subset of three or more models) or ``"dead"``."""
    if isinstance(label, str):
        return label
    names = tuple(label)
    return f"exclusive to {names[0]}" if len(names) == 1 else f"shared by {'+'.join(names)}" if len(names) < n_models else SHARED


def joint_partners(host_decoders: Mapping[str, torch.Tensor], joint_decoders: Mapping[str, torch.Tensor],
                   labels: Sequence[str | tuple], *, top: int = 2, chunk: int = 2048) -> dict[str, list[list[dict]]]:
    """Partners of every host latent through a joint dictionary.

    Args:
        host_decoders: model name → its own dictionary's decoder ``W_dec`` ``[n_m, d_m]`` (raw or normalised units).
        joint_decoders: model name → the joint dictionary's decoder block of that model ``[n_joint, d_m]``
            (:meth:`~universality.sae.joint.JointDictionary.decoder`); the same models as ``host_decoders``.
        labels: class of every joint latent (:meth:`~universality.sae.joint.JointDictionary.classify`).
        top: joint latents listed per host latent.
        chunk: host latents per matrix product (bounds memory at ``chunk × n_joint`` floats).

    Returns:
        model → one list per host latent (index = latent) of up to ``top`` entries, best first:
        ``{"J": joint latent, "c": cosine in this model, "cls": class text, "o": [{"m": other model,
        "j": its best host latent or None when it does not carry J, "c": cosine or None}, ...]}``.
    """
    names = list(host_decoders)
    if set(names) != set(joint_decoders):
        raise UniversalityError(f"the joint dictionary reads models {sorted(joint_decoders)} but host dictionaries were given for "
                                f"{sorted(names)}; give one host dictionary per model of the joint dictionary")
    n_joint = len(labels)
    host = {m: _unit(host_decoders[m]) for m in names}
    joint = {m: _unit(joint_decoders[m]) for m in names}
    for m in names:
        if joint[m].shape[0] != n_joint:
            raise UniversalityError(f"joint decoder block of '{m}' has {joint[m].shape[0]} rows but {n_joint} labels were given")
        if host[m].shape[1] != joint[m].shape[1]:
            raise UniversalityError(f"model '{m}': its dictionary's decoder has width {host[m].shape[1]} but the joint dictionary's "
                                    f"block has width {joint[m].shape[1]}; they must read the same hook")
    carries = {m: torch.tensor([carried_by(lb, m) for lb in labels], dtype=torch.bool) for m in names}
    # 3. joint → host: each joint latent's best host latent in every model
    best: dict[str, tuple[list[int], list[float]]] = {}
    for m in names:
        idx, cos = [], []
        for lo in range(0, n_joint, chunk):
            s = joint[m][lo:lo + chunk] @ host[m].T
            v, i = s.max(dim=1) if s.shape[1] else (torch.full((s.shape[0],), float("nan")), torch.zeros(s.shape[0], dtype=torch.long))
            idx += i.tolist()
            cos += v.tolist()
        best[m] = (idx, cos)
    texts = [class_text(lb, len(names)) for lb in labels]
    out: dict[str, list[list[dict]]] = {}
    for m in names:
        # 2. host → joint among the joint latents this model carries
        cand = carries[m]
        k = min(top, int(cand.sum()))
        rows: list[list[dict]] = []
        for lo in range(0, host[m].shape[0], chunk):
            s = host[m][lo:lo + chunk] @ joint[m].T
            if k == 0:
                rows += [[] for _ in range(s.shape[0])]
                continue
            s[:, ~cand] = -float("inf")
            v, i = s.topk(k, dim=1)
            # 4. assemble
            for vr, ir in zip(v.tolist(), i.tolist()):
                entries = []
                for c, J in zip(vr, ir):
                    others = [{"m": o, "j": best[o][0][J] if carries[o][J] else None,
                               "c": round(best[o][1][J], 4) if carries[o][J] else None} for o in names if o != m]
                    entries.append({"J": int(J), "c": round(float(c), 4), "cls": texts[J], "o": others})
                rows.append(entries)
        out[m] = rows
    return out


def summarise(partners: Mapping[str, list[list[dict]]], threshold: float = 0.7) -> dict[str, dict]:
    """Per model: host latents, the mean best cosine, and the fraction whose best joint latent has cosine ≥ ``threshold``,
    with the fraction of those matched to a shared joint latent."""
    out = {}
    for m, rows in partners.items():
        firsts = [r[0] for r in rows if r]
        good = [e for e in firsts if e["c"] >= threshold]
        out[m] = {"n_latents": len(rows), "mean_best_cosine": (sum(e["c"] for e in firsts) / len(firsts)) if firsts else None,
                  "frac_matched": len(good) / len(rows) if rows else None, "threshold": threshold,
                  "frac_matched_shared": (sum(e["cls"] == SHARED for e in good) / len(good)) if good else None}
    return out


__all__ = ["joint_partners", "summarise", "carried_by", "class_text"]
