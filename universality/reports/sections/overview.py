"""Models and corpus: fingerprints, versions and hardware — what every number in the report was computed from."""

from __future__ import annotations

from typing import Mapping

from ..page import Page
from .base import Section, register


class Overview(Section):
    """The models, the corpus, the dictionaries' settings and the environment; the closing 'how sure' sentence."""

    def render(self, res: Mapping, page: Page) -> None:
        """Tables of models, corpus, dictionaries (when present) and environment."""
        page.heading("Models and corpus")
        page.table(["model", "architecture", "role", "layers", "d_model", "parameters", "source", "fingerprint"],
                   [[m["name"], m["arch"], m.get("role", "model"), m.get("n_layers", ""), m.get("d_model", ""),
                     f"{m['n_params']:,}" if m.get("n_params") else "", m.get("path", ""), m.get("fingerprint", "")]
                    for m in res["models"]])
        corpus = res["corpus"]
        page.table(["corpus", "tokens", "fingerprint", "source"],
                   [[corpus.get("name", ""), f"{corpus['n_tokens']:,}" if corpus.get("n_tokens") else "",
                     corpus.get("fingerprint", ""), corpus.get("source", "")]])
        if res.get("dictionaries"):
            d = res["dictionaries"]
            page.table(list(d.keys()), [[d[k] for k in d]])
        env = res["environment"]
        page.table(["item", "value"], [[k, env[k]] for k in sorted(env)])


register(Overview())
