"""Input checks and conversions shared by the matching modules.

Everything public in :mod:`universality.matching` accepts torch tensors, numpy
arrays and (for codes) scipy sparse matrices; these helpers turn them into
float64 numpy arrays or CSR matrices and raise :class:`UniversalityError` with
one sentence when the input is unusable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._errors import UniversalityError


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a scipy sparse matrix/array or a torch sparse tensor."""
    return sp.issparse(x) or (isinstance(x, torch.Tensor) and x.layout != torch.strided)


def to_numpy(x: Any, name: str, *, ndim: int = 2, dtype=np.float64) -> np.ndarray:
    """A dense numpy copy/view of ``x`` with ``ndim`` dimensions and finite values."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            x = x.to_dense()
        x = x.detach().to("cpu")
        x = x.to(torch.float64 if dtype == np.float64 else torch.float32).numpy()
    elif sp.issparse(x):
        x = x.toarray()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise UniversalityError(f"{name} must be a numeric tensor or array, got {type(x).__name__}") from None
    if arr.ndim != ndim:
        raise UniversalityError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    if arr.size and not np.isfinite(arr).all():
        raise UniversalityError(f"{name} contains NaN or infinite values; clean or drop those entries first")
    return arr


def to_csr(x: Any, name: str) -> sp.csr_matrix:
    """A CSR matrix (float32 or float64 values, int32/int64 indices) of 2-D ``x``; only non-zeros are stored."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.layout != torch.strided:
            x = x.to_dense()
        if x.ndim != 2:
            raise UniversalityError(f"{name} must have 2 dimensions, got shape {tuple(x.shape)}")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        x = x.numpy()
    if sp.issparse(x):
        m = sp.csr_matrix(x)
    else:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise UniversalityError(f"{name} must have 2 dimensions, got shape {tuple(arr.shape)}")
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        m = sp.csr_matrix(arr)
    if m.data.size and not np.isfinite(m.data).all():
        raise UniversalityError(f"{name} contains NaN or infinite values; clean or drop those entries first")
    m.eliminate_zeros()
    return m


def density(x: Any) -> float:
    """Fraction of non-zero entries of a 2-D tensor, array or sparse matrix."""
    if sp.issparse(x):
        return x.nnz / max(1, x.shape[0] * x.shape[1])
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            return float(x._nnz()) / max(1, x.numel())
        return float((x != 0).sum()) / max(1, x.numel())
    arr = np.asarray(x)
    return float(np.count_nonzero(arr)) / max(1, arr.size)


def check_threshold(value: float, name: str = "threshold", low: float = -1.0, high: float = 1.0) -> float:
    """``value`` as a float after checking it lies in [low, high]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UniversalityError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}") from None
    if not (low <= v <= high):
        raise UniversalityError(f"{name} must lie in [{low:g}, {high:g}], got {v:g}")
    return v


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UniversalityError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def weight_matrix(obj: Any, attr: str, name: str) -> np.ndarray:
    """``obj.attr`` (e.g. a coder's ``W_dec``) or ``obj`` itself when it is a raw matrix, as float64 [n, d]."""
    if hasattr(obj, attr):
        obj = getattr(obj, attr)
    elif not isinstance(obj, (torch.Tensor, np.ndarray)):
        raise UniversalityError(f"{name} must be a coder with a '{attr}' attribute or a 2-D matrix, got {type(obj).__name__}")
    return to_numpy(obj, f"{name}.{attr}")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # in x's precision: no float64 copy of big float32 inputs
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
