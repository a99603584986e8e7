"""N-way feature families: features joined across every compared host by mutual best matches."""

from __future__ import annotations

from typing import Mapping

from .. import figures as F
from ..page import Page
from .base import Section, register


class Families(Section):
    """results.json ``families``."""

    key = "families"

    def render(self, res: Mapping, page: Page) -> None:
        """Families by number of hosts (table and bar chart) and examples present in every host."""
        fam = res.get("families")
        if not (fam and fam.get("n_families")):
            return
        page.heading("N-way feature families")
        page.para(f"Features grouped into families by mutual best matches above r = {fam.get('threshold', '?')}, connected across "
                  f"{', '.join(fam['hosts'])}.")
        page.table(["hosts in family", "families"], [[k, fam["by_size"][k]] for k in sorted(fam["by_size"], key=int)])
        page.figure("families", "How many feature families span 1, 2, ... hosts.", lambda: F.family_sizes(fam))
        if fam.get("examples"):
            with_r = any("mean_r" in e for e in fam["examples"])
            page.para("Examples of families present in every host (feature indices of each host's dictionary):")
            page.table(["family"] + list(fam["hosts"]) + (["mean r"] if with_r else []),
                       [[i] + [e["members"].get(h, "—") for h in fam["hosts"]] + ([e.get("mean_r", "")] if with_r else [])
                        for i, e in enumerate(fam["examples"])])

    def findings(self, res: Mapping) -> list[str]:
        """How many families span every host and how many only one."""
        fam = res.get("families")
        if not (fam and fam.get("n_families")):
            return []
        n_all = fam["by_size"].get(str(len(fam["hosts"])), 0)
        n_one = fam["by_size"].get("1", 0)
        return [f"N-way: of {fam['n_families']} feature families across {len(fam['hosts'])} hosts, {n_all} appear in all of them "
                f"and {n_one} in one host only (mutual best match above r = {fam.get('threshold', '?')})."]


register(Families())
