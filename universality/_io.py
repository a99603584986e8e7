"""Atomic file writes and checksums shared by every stage.

Every write goes to a temporary file in the destination folder, is flushed and
fsync'ed, then renamed over the destination, so a reader never sees a
half-written file and a killed process leaves either the old file or the new.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ._errors import UniversalityError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check it is a writable folder."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UniversalityError(f"output folder '{p}' cannot be created ({e.strerror}); choose a writable path") from None
    if not os.access(p, os.W_OK):
        raise UniversalityError(f"output folder '{p}' is not writable; choose a writable path")
    return p


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted keys, NaN rejected) and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n")


def read_json_object(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object stored in ``path``.

    Invalid JSON, or JSON that is not an object, is one clear error naming the file; ``what`` names the file's role
    ("a dictionary config") and ``hint`` (optional) is appended to say what to do.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UniversalityError(f"'{path}' is not valid JSON ({e.msg} at line {e.lineno}){tail}") from None
    except UnicodeDecodeError:
        raise UniversalityError(f"'{path}' is not valid JSON (not UTF-8 text){tail}") from None
    if not isinstance(data, dict):
        raise UniversalityError(f"'{path}' holds a JSON {type(data).__name__}; {what} must be a JSON object{tail}")
    return data


def atomic_save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save a name→tensor mapping as safetensors atomically (tensors made contiguous, on CPU)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(flat, metadata=dict(metadata) if metadata else None))


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file into a name→tensor dict (never unpickles)."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise UniversalityError(f"tensor file '{p}' does not exist")
    return load_file(str(p), device=device)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (sorted keys): 16 hex characters."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))[:16]
