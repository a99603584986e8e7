"""Dictionary codes of an activation store, encoded shard by shard into sparse CSR form on disk.

Layout of a code store folder::

    manifest.json               format, job fingerprint, n_latents, shards with SHA-256, complete flag
    shard-00000.safetensors     "rows" [m] int64 (flat stream positions), "indptr" [m + 1] int64,
                                "indices" [nnz] int32, "values" [nnz] float32 of the counted rows of
                                activation-store shard 0

Only counted rows (mask True: not BOS/EOS/pad) are kept, in stream order. A TopK
dictionary keeps at most ``k`` non-zeros a row, so a store holds tokens × k
entries, never tokens × latents; encoding holds one chunk of dense codes at a time.
Shards are written atomically and the manifest last, so an interrupted encode
leaves no store that reads as complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .. import _dist
from .._errors import UniversalityError
from .._io import atomic_write_bytes, atomic_write_json, ensure_writable_dir, fingerprint, sha256_bytes, sha256_file
from .._progress import progress

CODES_FORMAT = "universality.codes/1"
_ENCODE_ROWS = 2048


def _dense_to_csr(codes: np.ndarray) -> sp.csr_matrix:
    """CSR (int32 indices, float32 values) of dense codes ``[m, n_latents]``; exact zeros are left out."""
    rr, cc = np.nonzero(codes)
    indptr = np.zeros(codes.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rr, minlength=codes.shape[0]), out=indptr[1:])
    return sp.csr_matrix((codes[rr, cc].astype(np.float32), cc.astype(np.int32), indptr), shape=codes.shape)


@torch.no_grad()
def encode_chunk(coder: Any, x: torch.Tensor, chunk: int = _ENCODE_ROWS) -> sp.csr_matrix:
    """Sparse codes ``[n, n_latents]`` (CSR, float32) of activations ``x`` ``[n, d_in]``, ``chunk`` rows at a time.

    At most ``chunk × n_latents`` dense codes exist at once.
    """
    dev = next(coder.parameters()).device
    n_latents = int(coder.cfg.n_latents)
    parts = [_dense_to_csr(coder.encode(x[i:i + chunk].to(dev)).float().cpu().numpy()) for i in range(0, x.shape[0], chunk)]
    if not parts:
        return sp.csr_matrix((0, n_latents), dtype=np.float32)
    return sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]


def encode_store(coder: Any, store: Any, hook: str, out_dir: str | os.PathLike, *, job: Any = None,
                 chunk: int = _ENCODE_ROWS) -> "CodeStore":
    """Encode the counted rows of ``store``'s ``hook`` with ``coder`` into a :class:`CodeStore` at ``out_dir``.

    ``job`` is any JSON-serialisable description of the dictionary (its fingerprint is recorded); a complete
    store of the same job is returned as is. One activation shard and one chunk of dense codes are in memory
    at a time. Returns the :class:`CodeStore`.
    """
    job_fp = fingerprint({"format": CODES_FORMAT, "hook": hook, "store": store.manifest["job_fingerprint"], "job": job})
    # under torchrun every process must encode the same store with the same job before anything is touched
    _dist.check_agree(store.stream.fingerprint, "the token-stream fingerprint", "give every process the same activation store")
    _dist.check_agree(job_fp, "the encoding job (store, hook or dictionary)", "give every process the same dictionary and store")
    out = Path(out_dir)
    reuse = _clear_or_reuse(out, job_fp) if _dist.is_main() else None  # rank 0 alone reads or removes shared files
    if _dist.broadcast_object(reuse):
        return CodeStore(out)
    _dist.barrier()
    from safetensors.torch import save

    flat_mask = store.mask.reshape(-1)
    shards = []
    lo_k, hi_k = _dist.shard_range(store.n_shards)  # under torchrun each process encodes a disjoint run of shards
    for k in progress(range(lo_k, hi_k), desc=f"encoding {hook}", unit="shard"):
        lo, hi = store.shard_rows(k)
        keep = flat_mask[lo:hi]
        x = store.shard(k, hook)[keep]
        csr = encode_chunk(coder, x, chunk)
        rows = torch.arange(lo, hi)[keep]
        data = save({"rows": rows, "indptr": torch.from_numpy(csr.indptr.astype(np.int64)),
                     "indices": torch.from_numpy(csr.indices.astype(np.int32)),
                     "values": torch.from_numpy(csr.data.astype(np.float32))})
        rel = f"shard-{k:05d}.safetensors"
        atomic_write_bytes(out / rel, data)
        shards.append({"index": k, "file": rel, "sha256": sha256_bytes(data), "n_rows": int(rows.numel()),
                       "first_row": int(rows[0]) if rows.numel() else lo, "nnz": int(csr.nnz)})
    shards = [s for part in _dist.all_gather_objects(shards) for s in part]  # rank order = shard order
    if _dist.is_main():  # the manifest last: a store reads as complete only when every shard is on disk
        atomic_write_json(out / "manifest.json", {"format": CODES_FORMAT, "job_fingerprint": job_fp, "job": job, "hook": hook,
                                                  "n_latents": int(coder.cfg.n_latents), "stream": store.stream.fingerprint,
                                                  "n_rows": sum(s["n_rows"] for s in shards), "shards": shards, "complete": True})
    _dist.barrier()
    return CodeStore(out)


def _clear_or_reuse(out_dir: Path, job_fp: str) -> bool:
    """True when ``out_dir`` holds a complete code store of ``job_fp``; otherwise remove any other store's files there."""
    out = ensure_writable_dir(out_dir)
    mf = out / "manifest.json"
    if mf.is_file():
        try:
            old = json.loads(mf.read_text())
        except ValueError:
            old = {}
        if old.get("job_fingerprint") == job_fp and old.get("complete"):
            return True
        for s in old.get("shards", []):
            (out / s["file"]).unlink(missing_ok=True)
        mf.unlink()
    return False


class CodeStore:
    """A folder written by :func:`encode_store`: sparse codes of the counted rows of one hook.

    Attributes:
        path: the folder; manifest: its parsed ``manifest.json``; n_latents: code width;
        n_rows: counted rows held (flat stream positions in :attr:`rows`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise UniversalityError(f"'{self.path}' is not a code store (no manifest.json); create one with encode_store")
        try:
            self.manifest = json.loads(mf.read_text())
        except ValueError:
            raise UniversalityError(f"the manifest of code store '{self.path}' is not valid JSON; encode the store again") from None
        if self.manifest.get("format") != CODES_FORMAT or not self.manifest.get("complete"):
            raise UniversalityError(f"'{self.path}' is not a complete code store of format {CODES_FORMAT}; encode the store again")
        self.n_latents = int(self.manifest["n_latents"])
        self.n_rows = int(self.manifest["n_rows"])
        self._shards = sorted(self.manifest["shards"], key=lambda s: s["index"])
        self._offsets = np.cumsum([0] + [s["n_rows"] for s in self._shards])
        self._verified: set[str] = set()
        self._rows: np.ndarray | None = None
        self._last: tuple[int, np.ndarray, sp.csr_matrix] | None = None

    def __repr__(self) -> str:
        return f"<CodeStore '{self.path}' rows={self.n_rows} latents={self.n_latents} shards={len(self._shards)}>"

    def shard(self, k: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """Flat stream rows ``[m]`` and CSR codes ``[m, n_latents]`` of shard ``k`` (checksum verified on first read)."""
        if self._last is not None and self._last[0] == k:
            return self._last[1], self._last[2]
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        entry = self._shards[k]
        f = self.path / entry["file"]
        if not f.is_file():
            raise UniversalityError(f"file '{f}' of code store '{self.path}' is missing; encode the store again")
        if entry["file"] not in self._verified:
            if sha256_file(f) != entry["sha256"]:
                raise UniversalityError(f"file '{f}' is corrupt or truncated (checksum mismatch with the manifest); encode the store again")
            self._verified.add(entry["file"])
        try:
            t = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise UniversalityError(f"code shard '{f}' cannot be read ({type(e).__name__}); encode the store again") from None
        rows = t["rows"].numpy()
        csr = sp.csr_matrix((t["values"].numpy(), t["indices"].numpy(), t["indptr"].numpy()), shape=(rows.size, self.n_latents))
        self._last = (k, rows, csr)
        return rows, csr

    def chunks(self) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        """In-order pass, one shard at a time: yields ``(rows [m], codes CSR [m, n_latents])``."""
        for k in range(len(self._shards)):
            yield self.shard(k)

    @property
    def rows(self) -> np.ndarray:
        """Flat stream positions of every held row, ascending ``[n_rows]`` int64."""
        if self._rows is None:
            self._rows = np.concatenate([self.shard(k)[0] for k in range(len(self._shards))]) if self._shards \
                else np.zeros(0, dtype=np.int64)
        return self._rows

    def gather(self, rows: Any) -> sp.csr_matrix:
        """CSR codes ``[len(rows), n_latents]`` of flat stream positions ``rows`` (any order), reading only the shards needed.

        Every position must be a counted row of the stream.
        """
        rows = np.asarray(torch.as_tensor(rows, dtype=torch.long).reshape(-1))
        held = self.rows
        pos = np.searchsorted(held, rows)
        if rows.size and (pos.max() >= held.size or not np.array_equal(held[np.minimum(pos, held.size - 1)], rows)):
            raise UniversalityError(f"some requested rows are not counted rows of code store '{self.path}'; ask only for masked-in positions")
        shard_of = np.searchsorted(self._offsets, pos, side="right") - 1
        parts, order = [], []
        for k in np.unique(shard_of).tolist():
            sel = np.nonzero(shard_of == k)[0]
            parts.append(self.shard(k)[1][pos[sel] - self._offsets[k]])
            order.append(sel)
        if not parts:
            return sp.csr_matrix((0, self.n_latents), dtype=np.float32)
        out = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        where = np.concatenate(order)
        if np.array_equal(where, np.arange(where.size)):
            return out
        inverse = np.empty_like(where)
        inverse[where] = np.arange(where.size)
        return out[inverse]
