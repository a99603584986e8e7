"""One measured answer, per machine, to "does bfloat16 pay here?".

Every path that may run in bfloat16 on the CPU (the zoo's training autocast, the SAE trainer's
top-k ranking, the matching candidate search) asks :func:`bf16_pays` and nothing else. The answer
comes from, in order:

1. ``UNIVERSALITY_BF16=0|1`` in the environment (``1`` forces bfloat16 on, ``0`` off);
2. a probe cached in ``$UNIVERSALITY_HOME/probes/precision.json`` for this exact CPU, torch
   build and instruction-set environment (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``,
   ``MKL_ENABLE_INSTRUCTIONS``);
3. the probe itself: a ``[256, 512] @ [512, 1024]`` product timed in float32 and in bfloat16.
   bfloat16 pays when it is at least :data:`MIN_SPEEDUP` times faster. On CPUs with AMX or
   AVX-512 BF16 it is; on AVX2-only CPUs a bfloat16 matmul is emulated and runs a hundred or
   more times *slower* than float32, and the probe stops after one bfloat16 call.

CUDA tensors never ask: on a GPU bfloat16 is always fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ._errors import UniversalityError
from ._io import atomic_write_json

ENV_VAR = "UNIVERSALITY_BF16"
"""Environment override: ``1`` (bfloat16 on wherever it may be used), ``0`` (off)."""
MIN_SPEEDUP = 1.6
"""bfloat16 is used when a bfloat16 matmul is at least this many times faster than float32."""
ISA_ENV_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
"""Environment variables that change which kernels torch runs, hence part of the probe's cache key."""
_SHAPE = (256, 512, 1024)  # m, k, n of the probe's product

_LOCK = threading.Lock()
_ANSWER: "PrecisionProbe | None" = None


@dataclass(frozen=True)
class PrecisionProbe:
    """The decision and what it rests on."""

    bf16: bool
    """Whether CPU paths use bfloat16."""
    source: str
    """``"env"`` (the override), ``"cache"`` (an earlier probe on this machine) or ``"measured"`` (now)."""
    speedup: float | None
    """float32 time / bfloat16 time of the probe's product (``None`` when the override decided)."""
    capability: str
    """``torch.backends.cpu.get_cpu_capability()``: ``"AVX2"``, ``"AVX512"``, ... as torch dispatches now."""
    machine_key: str
    """Hash of the CPU, torch build and instruction-set environment the probe belongs to."""


def home_dir() -> Path:
    """The cache root: ``$UNIVERSALITY_HOME``, else ``~/.cache/universality``."""
    env = os.environ.get("UNIVERSALITY_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "universality"


def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels dispatch to here (``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``, ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old torch builds lack the query
        return "unknown"


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """Model name and flag set of the first CPU in ``/proc/cpuinfo`` (read once per process; empty elsewhere)."""
    model, flags = "", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
            if model and flags:
                break
    except OSError:
        pass
    return model, flags


def cpu_flags() -> dict[str, bool]:
    """Which of AVX2, AVX-512F, AVX-512 BF16 and AMX-BF16 the CPU reports (Linux ``/proc/cpuinfo``; all False elsewhere)."""
    flags = _cpuinfo()[1]
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else :func:`platform.processor`."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_description() -> str:
    """One line naming the CPU and what torch uses of it, for benchmark and CI output."""
    flags = [name for name, on in cpu_flags().items() if on]
    env = [f"{v}={os.environ[v]}" for v in ISA_ENV_VARS if os.environ.get(v)]
    probe = bf16_probe()
    bf16 = f"bf16 {'on' if probe.bf16 else 'off'} ({probe.source}"
    bf16 += f", {probe.speedup:.2f}x)" if probe.speedup is not None else ")"
    parts = [cpu_model(), f"torch capability {cpu_capability()}", "flags " + (",".join(flags) or "none"), bf16]
    return "; ".join(parts + env)


def machine_key() -> str:
    """Hash of what decides bfloat16 speed: CPU model and flags, torch version, instruction-set variables."""
    flags = ",".join(sorted(k for k, v in cpu_flags().items() if v))
    env = ",".join(f"{v}={os.environ.get(v, '')}" for v in ISA_ENV_VARS)
    text = "|".join([cpu_model(), flags, torch.__version__, cpu_capability(), env])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def env_override() -> bool | None:
    """The value of ``UNIVERSALITY_BF16`` as a bool, ``None`` when unset or empty.

    Raises :class:`UniversalityError` for any other value than ``0`` or ``1``.
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw == "":
        return None
    if raw not in ("0", "1"):
        raise UniversalityError(f"{ENV_VAR}={raw!r} is not a valid precision override; use 1 (bfloat16 on), "
                                f"0 (off) or leave it unset to measure")
    return raw == "1"


def measure_speedup() -> float:
    """float32 seconds / bfloat16 seconds of a ``[256, 512] @ [512, 1024]`` product (best of 3 each).

    A first bfloat16 call that takes over 0.2 s and over 20x the float32 best ends the probe early
    (emulated bfloat16 on AVX2 CPUs takes most of a second per call; a native first call, kernel
    generation included, takes milliseconds); the ratio from that call is returned.
    """
    m, k, n = _SHAPE
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)

    def best(x: torch.Tensor, y: torch.Tensor, repeat: int, give_up: float = float("inf")) -> float:
        torch.mm(x, y)
        t_best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            torch.mm(x, y)
            t_best = min(t_best, time.perf_counter() - t0)
            if t_best > give_up:
                break
        return t_best

    t32 = best(a, b, 5)
    a16, b16 = a.bfloat16(), b.bfloat16()
    t0 = time.perf_counter()
    torch.mm(a16, b16)  # warm-up call, timed: an emulated bf16 product stops here
    first = time.perf_counter() - t0
    if first > 0.2 and first > 20 * t32:
        return t32 / first
    t16 = min(first, best(a16, b16, 3))
    return t32 / max(t16, 1e-9)


def _cache_path() -> Path:
    return home_dir() / "probes" / "precision.json"


def _read_cache(key: str) -> float | None:
    try:
        entries = json.loads(_cache_path().read_text())
        value = entries.get(key)
        return float(value["speedup"]) if isinstance(value, dict) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_cache(key: str, speedup: float) -> None:
    path = _cache_path()
    try:
        entries = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {"speedup": speedup, "cpu": cpu_model(), "capability": cpu_capability(),
                    "torch": torch.__version__, "isa_env": {v: os.environ.get(v, "") for v in ISA_ENV_VARS}}
    try:
        atomic_write_json(path, entries)
    except OSError:
        pass  # a read-only home only costs a re-probe next time


def bf16_probe(refresh: bool = False) -> PrecisionProbe:
    """The precision decision for this process, with its source (see the module docstring).

    The override is re-read on every call, so tests and users may change it at run time; a
    measured answer is kept for the process and in the cache file. ``refresh`` re-measures.
    """
    global _ANSWER
    key = machine_key()
    override = env_override()
    if override is not None:
        return PrecisionProbe(override, "env", None, cpu_capability(), key)
    with _LOCK:
        if _ANSWER is not None and _ANSWER.machine_key == key and not refresh:
            return _ANSWER
        speedup = None if refresh else _read_cache(key)
        source = "cache"
        if speedup is None:
            speedup, source = measure_speedup(), "measured"
            _write_cache(key, speedup)
        _ANSWER = PrecisionProbe(speedup >= MIN_SPEEDUP, source, round(speedup, 3), cpu_capability(), key)
        return _ANSWER


def bf16_pays(device: torch.device | str | None = None) -> bool:
    """Whether bfloat16 should be used on ``device`` (default CPU): always on CUDA, else :func:`bf16_probe`."""
    if device is not None and torch.device(device).type == "cuda":
        return True
    return bf16_probe().bf16


def describe() -> dict:
    """The decision as a JSON-ready dict (what zoo members and benchmark outputs record)."""
    return asdict(bf16_probe())
