"""N-way feature families across three or more hosts.

Features of every pair of hosts are linked when they are *mutual* best matches
(each is the other's MPPC argmax) with correlation above a threshold; families
are the connected components of that graph across all hosts. A family present
in every host is a candidate universal feature; a feature linked to nothing is a
family present in one host only.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from .._errors import UniversalityError
from ._inputs import check_threshold
from .mppc import MPPCResult, mppc


@dataclass(frozen=True)
class Families:
    """Feature families across hosts."""

    hosts: list[str]
    """Host names, in order."""
    labels: dict[str, torch.Tensor]
    """Host → [n_features] int64 family id of each feature (−1 for dead features)."""
    family_hosts: torch.Tensor
    """[n_families] int64: in how many distinct hosts each family has features."""
    family_size: torch.Tensor
    """[n_families] int64: how many features each family holds (can exceed the host count via chains)."""
    present_in: torch.Tensor
    """[n_hosts + 1] int64: present_in[m] = number of families spanning exactly m hosts."""

    @property
    def n_in_all(self) -> int:
        """Families with features in every host."""
        return int(self.present_in[len(self.hosts)])

    @property
    def n_in_one(self) -> int:
        """Families confined to a single host (features matched in no other host)."""
        return int(self.present_in[1])

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"hosts": list(self.hosts), "n_families": int(self.family_hosts.numel()), "n_in_all": self.n_in_all,
                "n_in_one": self.n_in_one, "present_in": self.present_in.tolist()}


def families_from_mppc(sizes: Mapping[str, int], results: Mapping[tuple[str, str], MPPCResult], *,
                       threshold: float = 0.5) -> Families:
    """Families from precomputed pairwise MPPC results keyed by (host_a, host_b) for every host pair (either order)."""
    threshold = check_threshold(threshold)
    hosts = list(sizes)
    if len(hosts) < 2:
        raise UniversalityError(f"at least two hosts are needed for families, got {len(hosts)}")
    offset = dict(zip(hosts, np.cumsum([0] + [int(sizes[h]) for h in hosts])[:-1]))
    total = int(sum(int(sizes[h]) for h in hosts))
    dead = np.zeros(total, dtype=bool)
    src, dst = [], []
    for ha, hb in combinations(hosts, 2):
        if (ha, hb) in results:
            r, a, b = results[(ha, hb)], ha, hb
        elif (hb, ha) in results:
            r, a, b = results[(hb, ha)], hb, ha
        else:
            raise UniversalityError(f"no MPPC result for host pair ({ha!r}, {hb!r})")
        if r.dead_a.numel() != sizes[a] or r.dead_b.numel() != sizes[b]:
            raise UniversalityError(f"MPPC result for ({a!r}, {b!r}) has {r.dead_a.numel()} x {r.dead_b.numel()} features, "
                                    f"but sizes say {sizes[a]} x {sizes[b]}")
        dead[offset[a]:offset[a] + sizes[a]] |= r.dead_a.numpy()
        dead[offset[b]:offset[b] + sizes[b]] |= r.dead_b.numpy()
        fwd, back = r.a_to_b.argmax.numpy(), r.b_to_a.argmax.numpy()
        rmax = np.nan_to_num(r.a_to_b.max_r.numpy(), nan=-np.inf)
        i = np.flatnonzero((fwd >= 0) & (rmax > threshold))
        i = i[back[fwd[i]] == i]
        src.append(i + offset[a])
        dst.append(fwd[i] + offset[b])
    s, d = (np.concatenate(src), np.concatenate(dst)) if src else (np.zeros(0, int), np.zeros(0, int))
    graph = sp.coo_matrix((np.ones(s.size), (s, d)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    live = ~dead
    _, fam = np.unique(comp[live], return_inverse=True)
    label = np.full(total, -1, dtype=np.int64)
    label[live] = fam
    n_fam = int(fam.max()) + 1 if fam.size else 0
    host_of = np.repeat(np.arange(len(hosts)), [int(sizes[h]) for h in hosts])
    pairs = np.unique(np.stack([label[live], host_of[live]], axis=1), axis=0) if n_fam else np.zeros((0, 2), int)
    fam_hosts = np.bincount(pairs[:, 0], minlength=n_fam) if n_fam else np.zeros(0, int)
    fam_size = np.bincount(label[live], minlength=n_fam) if n_fam else np.zeros(0, int)
    present = np.bincount(fam_hosts, minlength=len(hosts) + 1)
    labels = {h: torch.from_numpy(label[offset[h]:offset[h] + sizes[h]].copy()) for h in hosts}
    return Families(hosts, labels, torch.from_numpy(fam_hosts.astype(np.int64)),
                    torch.from_numpy(fam_size.astype(np.int64)), torch.from_numpy(present.astype(np.int64)))


def feature_families(codes: Mapping[str, Any], *, threshold: float = 0.5, sparse: bool | str = "auto") -> Families:
    """Families across hosts from their codes on the same aligned tokens: ``codes`` maps host → [n_tokens, n_h]."""
    if len(codes) < 2:
        raise UniversalityError(f"codes must map at least two hosts to their codes, got {len(codes)}")
    check_threshold(threshold)
    hosts = list(codes)
    sizes = {h: int(codes[h].shape[1]) for h in hosts}
    results = {(a, b): mppc(codes[a], codes[b], sparse=sparse) for a, b in combinations(hosts, 2)}
    return families_from_mppc(sizes, results, threshold=threshold)
