"""delphi's on-disk layout of explanations and scores, so its tools (``delphi.log.result_analysis``) read ours.

Layout under a base folder::

    explanations/<module>_latent<i>.txt        the explanation as a JSON string
    scores/<scorer>/<module>_latent<i>.txt     a JSON list of per-sample records: str_tokens, activations,
                                               distance, activating, prediction, probability, correct
    log/hookpoint_firing_counts.pt            {module: int64 tensor [n_latents]} of firing counts (torch.save),
                                               which delphi's result analysis weights F1 by

``<scorer>`` is ``detection`` or ``fuzz``; ``<module>`` names the dictionary (no ``/``; delphi reads the latent
index as the integer after the last ``latent`` of the file stem). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .._errors import UniversalityError
from .._io import atomic_write_bytes, atomic_write_text


def module_name(model: str, hook: str) -> str:
    """A delphi module name for a dictionary: ``<model>.<hook>`` with characters delphi cannot take replaced."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", f"{model}.{hook}")
    return name.replace("latent", "lat3nt")


def _file(base: Path, module: str, latent: int) -> str:
    return f"{module}_latent{int(latent)}.txt"


def write_explanation(base: str | os.PathLike, module: str, latent: int, text: str) -> Path:
    """Write one explanation (``explanations/<module>_latent<i>.txt``)."""
    return atomic_write_text(Path(base) / "explanations" / _file(Path(base), module, latent), json.dumps(text, ensure_ascii=False))


def write_scores(base: str | os.PathLike, module: str, scorer: str, latent: int, records: list[dict]) -> Path:
    """Write one latent's per-sample records of one scorer (``scores/<scorer>/<module>_latent<i>.txt``)."""
    return atomic_write_text(Path(base) / "scores" / scorer / _file(Path(base), module, latent), json.dumps(records, ensure_ascii=False))


def read_explanations(base: str | os.PathLike, module: str) -> dict[int, str]:
    """Latent → explanation of every explanation file of ``module`` under ``base`` (unreadable files left out)."""
    out: dict[int, str] = {}
    folder = Path(base) / "explanations"
    if not folder.is_dir():
        return out
    for f in folder.glob(f"{module}_latent*.txt"):
        try:
            text = json.loads(f.read_text(encoding="utf-8"))
            out[int(f.stem.split("latent")[-1])] = str(text)
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def read_scores(base: str | os.PathLike, module: str, scorer: str) -> dict[int, list[dict]]:
    """Latent → per-sample records of ``scorer`` for ``module`` under ``base``."""
    out: dict[int, list[dict]] = {}
    folder = Path(base) / "scores" / scorer
    if not folder.is_dir():
        return out
    for f in folder.glob(f"{module}_latent*.txt"):
        try:
            out[int(f.stem.split("latent")[-1])] = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UniversalityError(f"score file '{f}' is not valid JSON ({type(e).__name__}); delete it and rerun explain") from None
    return out


def write_firing_counts(base: str | os.PathLike, module: str, counts) -> Path:
    """Add ``module``'s firing counts ``[n_latents]`` to ``log/hookpoint_firing_counts.pt`` (other modules' entries kept).

    delphi's ``result_analysis.load_data`` reads this file (``torch.load(weights_only=True)``) beside ``scores/``.
    """
    import io

    import torch

    path = Path(base) / "log" / "hookpoint_firing_counts.pt"
    have = {}
    if path.is_file():
        try:
            have = dict(torch.load(path, weights_only=True))
        except Exception:  # noqa: BLE001  (an unreadable file is written anew)
            have = {}
    have[module] = torch.as_tensor(counts).to(torch.int64).cpu()
    buf = io.BytesIO()
    torch.save(have, buf)
    return atomic_write_bytes(path, buf.getvalue())
