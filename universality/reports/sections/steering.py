"""Steering: dose-response curves (multiplier → metric) per host and method."""

from __future__ import annotations

from typing import Mapping

from ..._errors import UniversalityError
from .. import figures_lens as FL
from ..checks import need
from ..page import Page, csv_text
from .base import Section, register


def steering_entries(res: Mapping) -> list:
    """The ``lens_steer.steering`` entries of a results dict (``[]`` when absent)."""
    return list((res.get("lens_steer") or {}).get("steering") or [])


class Steering(Section):
    """results.json ``lens_steer.steering`` (:class:`~universality.analysis.steer.DoseResponse` per host and method)."""

    key = "lens_steer"

    def validate(self, res: Mapping) -> None:
        """Every curve names its model and method and has one value and interval per multiplier."""
        for i, e in enumerate(steering_entries(res)):
            w = f"lens_steer.steering[{i}]"
            need(e, "model", w, str)
            need(e, "method", w, str)
            n = len(need(e, "multipliers", w, list))
            if len(need(e, "values", w, list)) != n or len(need(e, "ci", w, list)) != n:
                raise UniversalityError(f"results.json '{w}' must have one value and one interval per multiplier ({n})")

    def render(self, res: Mapping, page: Page) -> None:
        """The dose-response figure and a table of the metric at each multiplier."""
        entries = steering_entries(res)
        if not entries:
            return
        page.heading("Steering")
        page.para("A steering vector is the mean activation over positive prompts minus the mean over negative prompts "
                  "(residual: CAA; state: the recurrent state after the prompt). It is added with a multiplier from the "
                  "middle of each steered prompt on; the metric, which the vector was not fitted to, is averaged over the "
                  "steered positions. Bands: 95% bootstrap intervals over prompts.")
        page.figure("steering", "Dose-response: metric against multiplier per model and method.", lambda: FL.dose_response(entries))
        page.table(["model", "method", "hook", "|v|"] + [f"×{m:g}" for m in entries[0]["multipliers"]],
                   [[e["model"], e["method"], e["hook"], f"{e.get('vector_norm', 0):.3g}"]
                    + [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" for v, (lo, hi) in zip(e["values"], e["ci"])] for e in entries])

    def tables(self, res: Mapping) -> dict[str, str]:
        """``steering.csv``: one row per host, method and multiplier."""
        entries = steering_entries(res)
        if not entries:
            return {}
        rows = [["model", "arch", "method", "hook", "metric", "multiplier", "value", "lo", "hi"]]
        for e in entries:
            for m, v, (lo, hi) in zip(e["multipliers"], e["values"], e["ci"]):
                rows.append([e["model"], e.get("arch", ""), e["method"], e["hook"], e["metric"], m, f"{v:.6f}", f"{lo:.6f}", f"{hi:.6f}"])
        return {"steering.csv": csv_text(rows)}

    def findings(self, res: Mapping) -> list[str]:
        """Per curve: the metric at the smallest and the largest multiplier, and whether the change clears the intervals."""
        out = []
        for e in steering_entries(res):
            (v0, v1), (ci0, ci1) = (e["values"][0], e["values"][-1]), (e["ci"][0], e["ci"][-1])
            clear = ci1[0] > ci0[1] or ci1[1] < ci0[0]
            out.append(f"Steering {e['model']} ({e['method']}, {e['hook']}): {e['metric']} goes from {v0:.3f} at "
                       f"×{e['multipliers'][0]:g} to {v1:.3f} at ×{e['multipliers'][-1]:g}"
                       + (" (intervals apart)." if clear else " (intervals overlap)."))
        return out


register(Steering())
