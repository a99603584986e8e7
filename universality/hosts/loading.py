"""``load_host``: a Hugging Face checkpoint (local folder or hub id) → a :class:`Host`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._device import resolve_device
from .._errors import UniversalityError
from .registry import host_class

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise UniversalityError(f"dtype '{dtype}' is not valid; use one of {', '.join(_DTYPES)}") from None


def _load_config(name_or_path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UniversalityError(f"checkpoint folder '{path}' has no config.json; save the model with save_pretrained")
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            raise UniversalityError(
                f"checkpoint folder '{path}' has no weights (expected one of {', '.join(_WEIGHT_FILES)})"
            )
    elif path.exists():
        raise UniversalityError(f"'{name_or_path}' is a file; give a checkpoint folder or a hub id")
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UniversalityError(
                f"'{name_or_path}' needs custom code from its repository; pass trust_remote_code=True if you trust it"
            ) from None
        raise UniversalityError(f"could not read the config of '{name_or_path}': {str(e).splitlines()[0]}") from None
    except OSError:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "the hub is switched off (HF_HUB_OFFLINE)" if offline else "it is not on the Hugging Face Hub or the hub cannot be reached"
        raise UniversalityError(f"model '{name_or_path}' is not a local checkpoint folder and {why}") from None


def load_host(name_or_path: str | os.PathLike, device: str = "auto", dtype: str | torch.dtype | None = None,
              trust_remote_code: bool = False):
    """Load a causal LM checkpoint and wrap it in the host for its ``config.model_type``.

    Args:
        name_or_path: a local folder written by ``save_pretrained`` or a hub id (online only).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: weight dtype (``None`` keeps the checkpoint's; float32 on CPU is recommended).
        trust_remote_code: allow the checkpoint's own Python code; off unless you ask.

    Returns:
        a :class:`~universality.hosts.base.Host` (Transformer, Mamba or RWKV).
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .._progress import is_quiet

    if is_quiet():
        hf_logging.disable_progress_bar()
    name = str(name_or_path)
    config = _load_config(name, trust_remote_code)
    cls = host_class(config.model_type)
    torch_dtype = _resolve_dtype(dtype)
    dev = resolve_device(device)
    kwargs = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(name, config=config, **kwargs)
    except OSError as e:
        raise UniversalityError(f"could not load the weights of '{name}': {str(e).splitlines()[0]}") from None
    model.to(dev)
    return cls(model, _load_tokenizer(name, trust_remote_code), name_or_path=name)


def _load_tokenizer(name: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError):
        return None
