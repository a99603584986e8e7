"""The run's stages: how long each took, its peak resident memory, and whether it ran or was skipped as unchanged."""

from __future__ import annotations

from typing import Mapping

from ..page import Page
from .base import Section, register


class Timings(Section):
    """results.json ``timings``."""

    key = "timings"

    def render(self, res: Mapping, page: Page) -> None:
        """One row per stage (nothing when the results carry no timings)."""
        if not res.get("timings"):
            return
        page.heading("Run")
        page.table(["stage", "seconds", "peak RSS (MiB)", "status"],
                   [[k, v.get("seconds", ""), v.get("peak_rss_mib", ""), v.get("status", "")] if isinstance(v, dict) else [k, v, "", ""]
                    for k, v in res["timings"].items()])


register(Timings())
