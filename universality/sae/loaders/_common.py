"""What every loader shares: safe file reading, tensor checks, the algebraic folds, building a coder from tensors.

Reading is read-only and never unpickles arbitrary objects: safetensors files
through ``safetensors``, ``.pt`` files through ``torch.load(weights_only=True)``
(only tensors and plain containers), ``.npz`` files through
``numpy.load(allow_pickle=False)``.

Folds (all in float64, cast at the end) turn another library's parameterisation
into ours, where ``pre = (x_n - b_dec) @ W_enc.T + b_enc`` and
``recon = (codes @ W_dec + b_dec) / output_scale``:

* :func:`fold_input_bias`: a library that does *not* subtract ``b_dec`` before
  the encoder gets ``b_enc + W_enc @ b_dec``, so that our subtraction cancels;
* :func:`fold_decoder_norms`: unit decoder rows, each row's norm moved into
  the encoder row and bias (codes scale by the norm; reconstructions and the
  set of active latents are unchanged for gates that compare ``norm * pre``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ..._errors import UniversalityError
from ..._io import read_json_object
from .. import registry
from ..config import CoderConfig

if TYPE_CHECKING:
    from ..coder import SparseCoder


class Provenance(NamedTuple):
    """Where a loaded dictionary came from (set as ``coder.provenance``)."""

    library: str
    """``"universality"``, ``"sparsify"``, ``"saelens"``, ``"lm_saes"``, ``"dictionary_learning"`` or ``"circuit_tracer"``."""
    layout: str
    """The layout that matched (see :data:`universality.sae.loaders.LAYOUTS`)."""
    path: str
    """The folder or file read."""
    source_hook: str | None
    """The hook name as the library wrote it (input hook for transcoders)."""
    source_target_hook: str | None
    """A transcoder's output hook as the library wrote it."""
    skip_bos: bool
    """Whether the first (BOS) position should be left out when evaluating (Llama Scope: it fires thousands of latents)."""


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a clear error for invalid JSON or a non-object."""
    return read_json_object(path, "a dictionary config")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pt``/``.pth`` (``weights_only``) or ``.npz`` file, by name, on the CPU.

    A ``.pt`` file whose pickle names anything but tensors and plain containers
    is refused (nothing in it runs); a ``.pt`` holding ``{"sae": {...}}`` (lm_saes) is unwrapped.
    """
    if not path.is_file():
        raise UniversalityError(f"tensor file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as e:
            raise UniversalityError(f"'{path}' is not a readable safetensors file ({e})") from None
    if suffix in (".pt", ".pth", ".bin"):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols; the refusal below is what counts
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
            raise UniversalityError(
                f"'{path}' is a pickle that holds more than tensors ({first}); it was refused and nothing in it was run — "
                "re-save it as safetensors or as a plain state dict"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            raise UniversalityError(f"'{path}' is not a readable torch file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if isinstance(obj, dict) and "sae" in obj and isinstance(obj["sae"], dict):
            obj = obj["sae"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UniversalityError(f"'{path}' does not hold a state dict of tensors; give a file saved from a module's state_dict()")
        return {str(k): v for k, v in obj.items()}
    if suffix == ".npz":
        import numpy as np

        try:
            with np.load(str(path), allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        except ValueError as e:
            raise UniversalityError(f"'{path}' is not a plain .npz of arrays ({e}); object arrays are refused") from None
    raise UniversalityError(f"tensor file '{path}' has suffix '{suffix}'; readable are .safetensors, .pt/.pth (tensors only) and .npz")


def need(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int | None, ...], source: str) -> torch.Tensor:
    """``tensors[key]`` as float64 after checking it exists, is floating point and has ``shape`` (``None``: any size)."""
    if key not in tensors:
        raise UniversalityError(f"{source} lacks tensor '{key}' (it has {', '.join(sorted(tensors)) or 'none'})")
    t = tensors[key]
    if not t.is_floating_point():
        raise UniversalityError(f"tensor '{key}' of {source} has dtype {t.dtype}; a floating-point tensor is expected")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise UniversalityError(f"tensor '{key}' of {source} has shape {list(t.shape)}; expected {want}")
    return t.double()


def scalar(value: Any, name: str, source: str, positive: bool = True) -> float:
    """A finite number from a config (a positive one unless ``positive=False``); a clear error otherwise."""
    import math

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        raise UniversalityError(f"{name}={value!r} in {source} is not valid; it must be a finite {'positive ' if positive else ''}number")
    return float(value)


def fold_input_bias(W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """Encoder bias [n] for our convention when the source does not subtract ``b_dec`` [d] from the input: ``b_enc + W_enc @ b_dec``."""
    return b_enc + W_enc @ b_dec


def fold_decoder_norms(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_enc * n, b_enc * n, W_dec / n, n)`` with ``n`` [n_latents] the decoder-row norms (rows of norm 0 left as they are)."""
    norms = W_dec.norm(dim=1)
    n = torch.where(norms > 0, norms, torch.ones_like(norms))
    return W_enc * n[:, None], b_enc * n, W_dec / n[:, None], norms


def build(kind: str, state: dict[str, torch.Tensor], source: str, dtype: torch.dtype = torch.float32, **settings: Any) -> "SparseCoder":
    """A coder of ``kind`` shaped by ``state`` (our names: ``W_enc`` [n, d_in], ``W_dec`` [n, d_out], ...) holding those tensors.

    ``settings`` fill the rest of the config (``k``, ``transcoder``, ``hook``,
    scales); float tensors are cast to ``dtype``. Missing or unexpected tensors
    name the file they came from (``source``).
    """
    n, d_in = state["W_enc"].shape
    d_out = state["W_dec"].shape[1]
    cfg = CoderConfig.from_dict(dict(kind=kind, d_in=int(d_in), n_latents=int(n), d_out=int(d_out), **settings))
    coder = registry.coder_class(kind)(cfg).to(dtype)
    want = set(coder.state_dict())
    missing, extra = want - set(state), set(state) - want
    if missing or extra:
        raise UniversalityError(f"{source} does not map onto a '{kind}' dictionary: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for key, value in state.items():
        have = coder.state_dict()[key]
        if tuple(value.shape) != tuple(have.shape):
            raise UniversalityError(f"tensor '{key}' read from {source} has shape {list(value.shape)}; this dictionary needs {list(have.shape)}")
    coder.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}, strict=True)
    return coder.eval()


def first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` (relative to ``folder``) that is a file, else ``None``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


__all__ = ["Provenance", "read_json", "read_tensors", "need", "scalar", "fold_input_bias", "fold_decoder_norms", "build", "first_existing"]
