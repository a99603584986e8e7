"""Extract hook points from a host over a token stream into a sharded, resumable on-disk store.

Layout of a store folder::

    manifest.json                    host/stream fingerprints, hooks, dtype, shards with SHA-256
    tokens.safetensors               tokens [n, t] and mask [n, t]: row r ↔ (r // t, r % t)
    <hook>/shard-00000.safetensors   "acts" [rows, d] for sequences [lo, hi) of the stream

Each shard covers a fixed range of sequences computed in fixed micro-batches, so
its bytes depend only on the job, never on when the run was interrupted. Shards
are written atomically and the manifest is rewritten (atomically) after each
shard: a run killed at any instant resumes from the last recorded shard and
ends with files byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import _dist
from .._errors import UniversalityError
from .._io import atomic_write_bytes, atomic_write_json, ensure_writable_dir, fingerprint, sha256_bytes, sha256_file
from .._progress import progress
from ..data.stream import TokenStream, context_length
from .fingerprint import host_fingerprint

from .store_format import FORMAT
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SHARD_BYTES = 32 << 20


@dataclass(frozen=True)
class CacheConfig:
    """How activations are extracted and laid out on disk."""

    dtype: str = "float32"
    """Storage dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``."""
    batch_size: int = 8
    """Sequences per forward pass."""
    shard_sequences: int | None = None
    """Sequences per shard; ``None`` picks about 32 MiB per shard file for the widest hook."""
    check_finite: bool = True
    """Stop with an error naming hook and position when an activation is NaN or infinite."""
    overwrite: bool = False
    """Replace a store of a *different* job found in the output folder (the same job always resumes)."""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UniversalityError(f"dtype '{self.dtype}' is not valid for an activation store; use one of {', '.join(DTYPES)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UniversalityError(f"batch_size {self.batch_size!r} is not valid; use a positive integer")
        if self.shard_sequences is not None and (not isinstance(self.shard_sequences, int) or self.shard_sequences < 1):
            raise UniversalityError(f"shard_sequences {self.shard_sequences!r} is not valid; use a positive integer or None")


def hook_dir_name(hook: str) -> str:
    """Folder name of a hook's shards (hook names are already path-safe: letters, digits, dots, underscores)."""
    if not hook or any(c in hook for c in "/\\") or hook.startswith("."):
        raise UniversalityError(f"hook name '{hook}' cannot be used as a folder name")
    return hook


def cache_activations(host: Any, hooks: Sequence[str] | str, stream: TokenStream, out_dir: str | os.PathLike,
                      config: CacheConfig | None = None, **kw) -> "ActivationStore":
    """Run ``host`` over ``stream`` and store the activations of ``hooks`` under ``out_dir``.

    Every hook must give one vector per token (shape [b, t, ...], flattened to
    [b*t, d]). Rows cover every position, masked ones included, in stream order.
    Rerunning the same job resumes (or returns at once when complete). Keyword
    arguments fill a :class:`CacheConfig`. Returns the :class:`ActivationStore`.
    """
    from .store import ActivationStore

    config = config or CacheConfig(**kw)
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise UniversalityError("give at least one hook point to cache, e.g. 'blocks.0.resid_post'")
    if len(set(hooks)) != len(hooks):
        raise UniversalityError(f"hook list {hooks} repeats a name; give each hook once")
    host.validate_names(hooks)
    for h in hooks:
        hook_dir_name(h)
        if h.endswith("attn.pattern"):
            raise UniversalityError(f"hook '{h}' is [batch, heads, t, t], not one vector per token; cache a per-token hook instead")
    if not isinstance(stream, TokenStream):
        raise UniversalityError(f"stream must be a TokenStream (see universality.data.make_stream); got {type(stream).__name__}")
    limit = context_length(host)
    if limit is not None and stream.seq_len > limit:
        raise UniversalityError(f"sequences of {stream.seq_len} tokens exceed this model's context of {limit}; build the stream with seq_len <= {limit}")
    job = {"format": FORMAT, "host": host_fingerprint(host), "stream": stream.fingerprint, "hooks": hooks,
           "dtype": config.dtype, "batch_size": config.batch_size, "shard_sequences": config.shard_sequences}
    job_fp = fingerprint(job)
    # under torchrun every process must cache the same job; checked before anything is created or written
    _dist.check_agree(stream.fingerprint, "the token-stream fingerprint",
                      "give every process the same corpus, token count, sequence length and seed")
    _dist.check_agree(job_fp, "the caching job (host weights, hooks or settings)", "give every process the same model and options")
    manifest, error = None, None
    if _dist.is_main():  # rank 0 alone reads, replaces or starts the shared manifest
        try:
            manifest = _prepare_manifest(host, stream, out_dir, config, job, job_fp)
        except UniversalityError as e:
            error = e
    manifest, message = _dist.broadcast_object((manifest, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise UniversalityError(message)
    out = Path(out_dir)
    # a complete store is re-checked (every shard's checksum) and any damaged shard is recomputed
    _Writer(host, hooks, stream, out, config, manifest).run()
    _dist.barrier()
    return ActivationStore(out)


def _prepare_manifest(host: Any, stream: TokenStream, out_dir: Any, config: CacheConfig, job: dict, job_fp: str) -> dict:
    """The manifest to continue from: the folder's own when it holds this job, else a new one (tokens file written)."""
    out = ensure_writable_dir(out_dir)
    manifest = _read_manifest(out)
    if manifest is not None and manifest.get("job_fingerprint") != job_fp:
        if not config.overwrite:
            raise UniversalityError(
                f"'{out}' already holds an activation store of a different job (other host, stream, hooks or settings); "
                "choose another folder or pass overwrite=True"
            )
        for shard in manifest.get("shards", []):  # drop the old job's shards so none is left behind
            for entry in shard.get("files", {}).values():
                (out / entry["file"]).unlink(missing_ok=True)
        manifest = None
    if manifest is None:
        tokens_file = out / "tokens.safetensors"
        stream.save(tokens_file)
        manifest = {"format": FORMAT, "job_fingerprint": job_fp, "job": job, "host": host.describe(),
                    "host_fingerprint": job["host"], "stream": stream.describe(), "hooks": {}, "dtype": config.dtype,
                    "n_sequences": stream.n_sequences, "seq_len": stream.seq_len, "batch_size": config.batch_size,
                    "shard_sequences": config.shard_sequences, "shards": [], "complete": False,
                    "tokens": {"file": "tokens.safetensors", "sha256": sha256_file(tokens_file)}}
    return manifest


def _read_manifest(out: Path) -> dict | None:
    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a half-written manifest cannot exist (atomic writes); an unreadable one is rebuilt


@dataclass
class _Writer:
    host: Any
    hooks: list[str]
    stream: TokenStream
    out: Path
    config: CacheConfig
    manifest: dict
    _dtype: torch.dtype = field(init=False)

    def run(self) -> None:
        self._dtype = DTYPES[self.config.dtype]
        n = self.stream.n_sequences
        per = self.manifest["shard_sequences"]
        if per is None:
            per = self._auto_shard_sequences()
            self.manifest["shard_sequences"] = per
        # rank 0 checks the recorded shards (checksums) and every process continues from its verdict
        intact = [k for k, s in enumerate(self.manifest["shards"]) if self._shard_intact(s)] if _dist.is_main() else None
        intact = _dist.broadcast_object(intact)
        done = {s["index"]: s for k, s in enumerate(self.manifest["shards"]) if k in set(intact)}
        self.manifest["shards"] = [done[k] for k in sorted(done)]
        n_shards = -(-n // per)
        todo = [k for k in range(n_shards) if k not in done]
        if todo:
            self.manifest["complete"] = False
        lo_t, hi_t = _dist.shard_range(len(todo))  # under torchrun each process takes a disjoint run of shards
        error = None
        # one writer thread: shard k is serialised, hashed and written while shard k + 1 is computed;
        # at most one write is pending, so memory stays at two shards
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as pool:
                pending = None
                for k in progress(todo[lo_t:hi_t], desc="caching activations", unit="shard"):
                    lo, hi = k * per, min(n, (k + 1) * per)
                    acts = self._compute(lo, hi)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(self._write_shard, k, lo, hi, acts)
                if pending is not None:
                    pending.result()
        except UniversalityError as e:
            if not _dist.active():
                raise
            error = e
        if _dist.active():
            _dist.raise_if_any(error)
            gathered = _dist.all_gather_objects((self.manifest["shards"], self.manifest["hooks"]))
            for shards, hooks in gathered:
                for h, info in hooks.items():
                    self.manifest["hooks"].setdefault(h, info)
                by_index = {s["index"]: s for s in self.manifest["shards"]}
                by_index.update({s["index"]: s for s in shards})
                self.manifest["shards"] = [by_index[k] for k in sorted(by_index)]
        if (todo or not self.manifest.get("complete")) and _dist.is_main():
            self.manifest["complete"] = True
            atomic_write_json(self.out / "manifest.json", self.manifest)

    def _write_shard(self, k: int, lo: int, hi: int, acts: dict[str, torch.Tensor]) -> None:
        """Write shard ``k`` (one file per hook, atomically), then record it in the manifest (atomically)."""
        from safetensors.torch import save

        files = {}
        for h in self.hooks:
            rel = f"{hook_dir_name(h)}/shard-{k:05d}.safetensors"
            # one metadata key: safetensors writes several keys in a random order, which would break byte-identity
            meta = json.dumps({"hook": h, "shard": k, "sequences": [lo, hi], "job": self.manifest["job_fingerprint"]},
                              sort_keys=True)
            data = save({"acts": acts[h]}, metadata={"universality": meta})
            atomic_write_bytes(self.out / rel, data)
            files[h] = {"file": rel, "sha256": sha256_bytes(data), "rows": int(acts[h].shape[0])}
        self.manifest["shards"].append({"index": k, "sequences": [lo, hi], "files": files})
        self.manifest["shards"].sort(key=lambda s: s["index"])
        if _dist.is_main():  # other processes' shards are recorded by rank 0 when every process is done
            atomic_write_json(self.out / "manifest.json", self.manifest)

    def _shard_intact(self, shard: dict) -> bool:
        for h in self.hooks:
            f = shard.get("files", {}).get(h)
            if f is None or not (self.out / f["file"]).is_file() or sha256_file(self.out / f["file"]) != f["sha256"]:
                return False
        return True

    def _auto_shard_sequences(self) -> int:
        widths = self.manifest["hooks"]
        if not widths:
            self._compute(0, min(self.config.batch_size, self.stream.n_sequences))
            widths = self.manifest["hooks"]
        widest = max(w["d"] for w in widths.values())
        per_seq = self.stream.seq_len * widest * torch.finfo(self._dtype).bits // 8
        per = max(1, _SHARD_BYTES // max(1, per_seq))
        bs = self.config.batch_size
        return max(bs, per // bs * bs)

    @torch.no_grad()
    def _compute(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        """Activations of sequences [lo, hi): hook → [(hi - lo) * seq_len, d] in the storage dtype (one copy per batch)."""
        out: dict[str, torch.Tensor] = {}
        t = self.stream.seq_len
        converted = self._dtype != torch.float32
        for b0 in range(lo, hi, self.config.batch_size):
            b1 = min(hi, b0 + self.config.batch_size)
            tokens = self.stream.tokens[b0:b1].to(self.host.device)
            _, cache = self.host.run_with_cache(tokens, names=self.hooks, return_logits=False)
            for h in self.hooks:
                x = cache[h]
                if x.dim() < 2 or tuple(x.shape[:2]) != (b1 - b0, t):
                    raise UniversalityError(f"hook '{h}' has shape {tuple(x.shape)}, not one vector per token [batch, seq, ...]; cache a per-token hook")
                x = x.reshape((b1 - b0) * t, -1)
                if self.config.check_finite:
                    _check_finite(h, x, b0, t)
                self.manifest["hooks"].setdefault(h, {"d": int(x.shape[1]), "shape": list(cache[h].shape[2:])})
                if h not in out:
                    out[h] = torch.empty((hi - lo) * t, x.shape[1], dtype=self._dtype)
                rows = out[h][(b0 - lo) * t:(b1 - lo) * t]
                rows.copy_(x)
                if self.config.check_finite and converted:
                    _check_finite(h, rows, b0, t, why=f" after conversion to {self.config.dtype}")
        return out


def _check_finite(hook: str, x: torch.Tensor, first_seq: int, t: int, why: str = "") -> None:
    """Raise naming hook, sequence and position when ``x`` [rows, d] holds NaN/inf (rows start at ``first_seq``)."""
    # fast path: one float32 reduction is finite when every entry is (NaN/inf propagate through a sum);
    # a finite sum overflowing to inf only sends us to the exact check below
    if bool(torch.isfinite(x.sum(dtype=torch.float32))):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0])
        n_bad = int(bad.any(dim=1).sum())
        raise UniversalityError(
            f"hook '{hook}' produced NaN/inf{why} at sequence {first_seq + row // t}, position {row % t} "
            f"({n_bad} positions in this batch); check the model weights or use a wider dtype"
        )
