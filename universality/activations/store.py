"""Reading an activation store: checksummed shards, streamed shuffled batches with bounded memory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch

from .._errors import UniversalityError
from .._io import sha256_file
from ..data.stream import TokenStream
from .store_format import FORMAT


class ActivationStore:
    """A folder written by :func:`~universality.activations.cache_activations`.

    Attributes:
        path: the store folder.
        manifest: the parsed ``manifest.json``.
        hooks: hook names held, in the order they were asked for.
        n_sequences, seq_len: shape of the token stream; row ``r`` is position ``r % seq_len`` of sequence ``r // seq_len``.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise UniversalityError(f"'{self.path}' is not an activation store (no manifest.json); create one with cache_activations")
        try:
            self.manifest = json.loads(mf.read_text())
        except ValueError:
            raise UniversalityError(f"the manifest of activation store '{self.path}' is not valid JSON; recreate the store") from None
        if self.manifest.get("format") != FORMAT:
            raise UniversalityError(f"'{self.path}' has format {self.manifest.get('format')!r}; this version reads {FORMAT}")
        if not self.manifest.get("complete"):
            raise UniversalityError(f"activation store '{self.path}' is incomplete (interrupted); rerun the same cache command to resume it")
        self.verify_reads = verify
        self.hooks: list[str] = list(self.manifest["job"]["hooks"])
        self.n_sequences: int = int(self.manifest["n_sequences"])
        self.seq_len: int = int(self.manifest["seq_len"])
        self._shards = sorted(self.manifest["shards"], key=lambda s: s["index"])
        _check_coverage(self.path, self._shards, self.n_sequences)
        self._stream: TokenStream | None = None
        self._verified: set[Path] = set()
        """Files whose checksum matched already: each file is hashed once per store object, not on every read."""

    # ----- metadata ------------------------------------------------------------------
    @property
    def stream(self) -> TokenStream:
        """The token stream the rows come from (tokens, mask, fingerprints)."""
        if self._stream is None:
            f = self.path / self.manifest["tokens"]["file"]
            self._check_file(f, self.manifest["tokens"]["sha256"])
            self._stream = TokenStream.load(f)
        return self._stream

    @property
    def tokens(self) -> torch.Tensor:
        """Token ids, LongTensor [n_sequences, seq_len]."""
        return self.stream.tokens

    @property
    def mask(self) -> torch.Tensor:
        """BoolTensor [n_sequences, seq_len]: True at positions that count (not BOS/EOS/pad)."""
        return self.stream.mask

    @property
    def n_rows(self) -> int:
        """Rows per hook: every position of every sequence."""
        return self.n_sequences * self.seq_len

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype of the shards."""
        return getattr(torch, self.manifest["dtype"])

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def d(self, hook: str | None = None) -> int:
        """Width of one row of ``hook`` (default: the only/first hook)."""
        return int(self.manifest["hooks"][self._hook(hook)]["d"])

    def __repr__(self) -> str:
        return f"<ActivationStore '{self.path}' hooks={self.hooks} rows={self.n_rows} shards={self.n_shards}>"

    # ----- reading -------------------------------------------------------------------
    def shard(self, k: int, hook: str | None = None) -> torch.Tensor:
        """Rows of shard ``k`` for ``hook``: [rows, d] in the storage dtype (checksum verified)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        hook = self._hook(hook)
        entry = self._shards[k]["files"][hook]
        f = self.path / entry["file"]
        self._check_file(f, entry["sha256"])
        try:
            return load_file(str(f))["acts"]
        except (SafetensorError, OSError, KeyError) as e:
            raise UniversalityError(f"shard '{f}' cannot be read ({type(e).__name__}); rerun the cache command to rewrite it") from None

    def shard_rows(self, k: int) -> tuple[int, int]:
        """Row range [lo, hi) covered by shard ``k``."""
        lo, hi = self._shards[k]["sequences"]
        return lo * self.seq_len, hi * self.seq_len

    def read(self, hook: str | None = None, masked: bool = False, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """Every row of ``hook`` in stream order: [n_rows, d] (only counted rows, [n_counted, d], when ``masked``).

        Loads the whole hook into memory; use :meth:`batches` or :meth:`chunks` for large stores.
        """
        parts = [x for _, x in self.chunks(hook, masked=masked, dtype=dtype)]
        return torch.cat(parts)

    def chunks(self, hook: str | None = None, masked: bool = False,
               dtype: torch.dtype | None = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """In-order pass over ``hook``, one shard at a time: yields ``(rows [m], acts [m, d])``.

        ``rows`` are flat stream positions; with ``masked`` only counted positions are yielded.
        """
        flat_mask = self.mask.reshape(-1)
        for k in range(self.n_shards):
            lo, hi = self.shard_rows(k)
            x = self.shard(k, hook)
            rows = torch.arange(lo, hi)
            if masked:
                keep = flat_mask[lo:hi]
                rows, x = rows[keep], x[keep]
            yield rows, (x.to(dtype) if dtype is not None else x)

    def gather(self, rows: torch.Tensor, hook: str | None = None, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """Rows ``rows`` (flat positions, any order) of ``hook``: [len(rows), d], reading only the shards needed."""
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.n_rows):
            raise UniversalityError(f"row indices must lie in 0..{self.n_rows - 1} for this store")
        out = torch.empty((rows.numel(), self.d(hook)), dtype=dtype or self.dtype)
        bounds = torch.tensor([self.shard_rows(k)[1] for k in range(self.n_shards)])
        which = torch.bucketize(rows, bounds, right=True)
        for k in torch.unique(which).tolist():
            sel = (which == k).nonzero().squeeze(1)
            x = self.shard(k, hook)
            out[sel] = x[rows[sel] - self.shard_rows(k)[0]].to(out.dtype)
        return out

    def batches(self, batch_size: int, hook: str | None = None, shuffle: bool = True, seed: int = 0,
                masked: bool = True, buffer_shards: int = 4, drop_last: bool = False,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """One pass over ``hook`` in batches [batch_size, d] (the last may be smaller unless ``drop_last``).

        With ``shuffle``, shards are visited in a seeded random order and rows are
        shuffled within a buffer of ``buffer_shards`` shards, so memory stays at
        about ``buffer_shards`` shards whatever the store's size. ``masked``
        skips BOS/EOS/pad positions. Same seed → same batches.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UniversalityError(f"batch_size {batch_size!r} is not valid; use a positive integer")
        if not isinstance(buffer_shards, int) or buffer_shards < 1:
            raise UniversalityError(f"buffer_shards {buffer_shards!r} is not valid; use a positive integer")
        hook = self._hook(hook)
        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(self.n_shards, generator=gen).tolist() if shuffle else list(range(self.n_shards))
        flat_mask = self.mask.reshape(-1)
        carry: torch.Tensor | None = None
        for g in range(0, len(order), buffer_shards):
            parts = [] if carry is None else [carry]
            for k in order[g:g + buffer_shards]:
                x = self.shard(k, hook)
                if masked:
                    lo, hi = self.shard_rows(k)
                    x = x[flat_mask[lo:hi]]
                parts.append(x)
            buf = torch.cat(parts)
            if shuffle:
                buf = buf[torch.randperm(buf.shape[0], generator=gen)]
            n_full = buf.shape[0] // batch_size * batch_size
            for i in range(0, n_full, batch_size):
                yield buf[i:i + batch_size].to(device=device, dtype=dtype)
            carry = buf[n_full:]
        if carry is not None and carry.shape[0] and not drop_last:
            yield carry.to(device=device, dtype=dtype)

    def verify(self) -> None:
        """Check every file's SHA-256 against the manifest; raise naming the first bad file."""
        self._check_file(self.path / self.manifest["tokens"]["file"], self.manifest["tokens"]["sha256"], force=True)
        for s in self._shards:
            for entry in s["files"].values():
                self._check_file(self.path / entry["file"], entry["sha256"], force=True)

    # ----- helpers -------------------------------------------------------------------
    def _hook(self, hook: str | None) -> str:
        if hook is None:
            if len(self.hooks) != 1:
                raise UniversalityError(f"this store holds several hooks ({', '.join(self.hooks)}); name one")
            return self.hooks[0]
        if hook not in self.hooks:
            raise UniversalityError(f"hook '{hook}' is not in store '{self.path}'; it holds {', '.join(self.hooks)}")
        return hook

    def _check_file(self, f: Path, sha: str, force: bool = False) -> None:
        if not self.verify_reads or (f in self._verified and not force):
            if not f.is_file():
                raise UniversalityError(f"file '{f}' of activation store '{self.path}' is missing; rerun the cache command to rewrite it")
            return
        if not f.is_file():
            raise UniversalityError(f"file '{f}' of activation store '{self.path}' is missing; rerun the cache command to rewrite it")
        if sha256_file(f) != sha:
            raise UniversalityError(
                f"file '{f}' is corrupt or truncated (checksum mismatch with the manifest); rerun the same cache command to rewrite it"
            )
        self._verified.add(f)


def _check_coverage(path: Path, shards: list[dict], n_sequences: int) -> None:
    """Raise unless the shards' sequence ranges tile ``[0, n_sequences)`` in order, without gap or overlap."""
    end = 0
    for s in shards:
        lo, hi = s["sequences"]
        if lo != end or hi <= lo:
            break
        end = hi
    if end != n_sequences:
        raise UniversalityError(f"the shards of activation store '{path}' do not cover its {n_sequences} sequences "
                                f"(first gap or overlap at sequence {end}); rerun the same cache command to repair it")


def paired_chunks(store_a: ActivationStore, store_b: ActivationStore, hook_a: str | None = None, hook_b: str | None = None,
                  alignment=None, dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Aligned row pairs of two stores, a chunk at a time: yields ``(x_a [m, d_a], x_b [m, d_b])``.

    Without ``alignment`` the stores must hold the same token stream (same
    fingerprint) and counted positions are paired one to one. With a token-level
    :class:`~universality.data.align.Alignment` its ``rows_a``/``rows_b`` maps are
    followed, one shard of A at a time.
    """
    if alignment is None:
        if store_a.stream.fingerprint != store_b.stream.fingerprint:
            raise UniversalityError("these stores hold different token streams; pass the cross-tokenizer alignment to pair their rows")
        for (ra, xa), (rb, xb) in zip(store_a.chunks(hook_a, masked=True, dtype=dtype),
                                      _rechunk(store_b, hook_b, store_a, dtype)):
            yield xa, xb
        return
    if alignment.pool != "token":
        raise UniversalityError("paired_chunks follows token-level alignments; for pool='word' read both hooks and call alignment.take")
    for k in range(store_a.n_shards):
        lo, hi = store_a.shard_rows(k)
        sel = ((alignment.rows_a >= lo) & (alignment.rows_a < hi)).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        xa = store_a.shard(k, hook_a)[alignment.rows_a[sel] - lo].to(dtype)
        xb = store_b.gather(alignment.rows_b[sel], hook_b, dtype=dtype)
        yield xa, xb


def _rechunk(store_b: ActivationStore, hook_b, store_a: ActivationStore, dtype):
    """Counted rows of B cut to the same row ranges as A's shards."""
    flat_mask = store_a.mask.reshape(-1)
    for k in range(store_a.n_shards):
        lo, hi = store_a.shard_rows(k)
        rows = torch.arange(lo, hi)[flat_mask[lo:hi]]
        yield rows, store_b.gather(rows, hook_b, dtype=dtype)
