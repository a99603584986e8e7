"""Explanations of dictionary features: contexts, explainers, scorers, cross-model comparison, delphi's layout.

    from universality import interp
    res = interp.explain(coder, store)                      # offline token-statistics explainer + simulator
    client = interp.ChatClient(interp.ClientConfig("http://localhost:8000/v1", "my-model"), cache_dir="llm-cache")
    res = interp.explain(coder, store, client=client, out="explain-out")   # any OpenAI-compatible endpoint

See ``docs/interp.md``.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from .client import ChatClient, ClientConfig
from .contexts import ContextConfig, ContextSet, LatentActivations, LatentContexts, decoder_neighbours, sample_contexts
from .crossmodel import embedding_agreement, explanation_swap, spearman_bootstrap
from .joint_partners import joint_partners
from .pipeline import DictionaryExplanations, LatentResult, explain_dictionary
from .scoring import SCORERS, classification_metrics
from .tokens import TokenTable
from .tokenstats import Background, Simulator, TokenStatsConfig, explain_tokens

__all__ = ["Background", "ChatClient", "ClientConfig", "ContextConfig", "ContextSet", "DictionaryExplanations",
           "LatentActivations", "LatentContexts", "LatentResult", "SCORERS", "Simulator", "TokenStatsConfig", "TokenTable",
           "classification_metrics", "decoder_neighbours", "embedding_agreement", "explain", "explain_dictionary",
           "explain_tokens", "explanation_swap", "joint_partners", "sample_contexts", "spearman_bootstrap"]


def explain(dictionary: Any, store: Any, client: ChatClient | None = None, *, hook: str | None = None, tokenizer: Any = None,
            latents: Iterable[int] | None = None, out: str | os.PathLike | None = None, module: str | None = None,
            context_cfg: ContextConfig | None = None) -> DictionaryExplanations:
    """Explain and score a dictionary's latents on an activation store's tokens.

    Args:
        dictionary: a trained coder (:mod:`universality.sae`) or a folder :func:`universality.sae.load` reads.
        store: the :class:`~universality.activations.ActivationStore` (or its folder) to draw contexts from.
        client: ``None`` for the offline token-statistics explainer and simulator, else a :class:`ChatClient`.
        hook: the store's hook the dictionary reads (default: the dictionary's own, else the store's only one).
        tokenizer: decodes token ids for the texts (``None``: ids shown as ``<id>``).
        latents, out, module, context_cfg: see :func:`explain_dictionary`.
    """
    import numpy as np

    from .. import sae
    from .._errors import UniversalityError
    from ..activations import ActivationStore
    from ..activations.codes import encode_chunk
    from .delphi_format import module_name

    if store is None:
        raise UniversalityError("explaining a dictionary needs an activation store to draw contexts from; "
                                "cache one with 'universality cache' and pass it")
    coder = sae.load(dictionary) if isinstance(dictionary, (str, os.PathLike)) else dictionary
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    hook = hook or getattr(coder.cfg, "hook", None) or None
    if hook is not None and hook not in store.hooks and len(store.hooks) == 1:
        hook = store.hooks[0]
    import scipy.sparse as sp

    parts, rows = [], []
    for r, x in store.chunks(hook, masked=True):
        parts.append(encode_chunk(coder, x))
        rows.append(r.numpy())
    csr = sp.vstack(parts, format="csr")
    r_all = np.concatenate(rows)
    coo = csr.tocoo()
    codes = sp.csc_matrix((coo.data, (r_all[coo.row], coo.col)), shape=(store.n_rows, csr.shape[1]), dtype=np.float32)
    acts = LatentActivations(codes, store.tokens.numpy(), store.mask.numpy())
    vocab = int(store.tokens.max()) + 1
    if tokenizer is not None:
        vocab = max(vocab, len(tokenizer))
    table = TokenTable.from_tokenizer(tokenizer, vocab)
    return explain_dictionary(acts, table, module=module or module_name("dictionary", hook or "codes"), out=out, latents=latents,
                              w_dec=coder.W_dec.detach().float().cpu().numpy(), client=client, context_cfg=context_cfg)
