"""Build-at-first-use loader for the C kernels in ``selective_scan.c`` (selective scan, conv + SiLU, RMS norm).

The kernel is compiled once per source/flags/CPU combination with the system
``gcc -O3 -fopenmp`` into ``$UNIVERSALITY_HOME/kernels``
(default ``~/.cache/universality/kernels``) and loaded with :mod:`ctypes`.
When no compiler is present or the build fails, :func:`load_kernel` returns
``None`` and callers fall back to the pure-torch scan.

Which instruction set the build targets is :func:`kernel_isa`: ``UNIVERSALITY_KERNEL_ISA``
= ``native`` (``-march=native``: AVX-512 where the CPU has it), ``avx2`` (x86-64 with
AVX2 + FMA only, never a zmm register: what an AVX2-only CPU runs) or ``generic``
(baseline x86-64, SSE2). Unset (or ``auto``), it follows torch: when torch was told to
dispatch to AVX2 only (``ATEN_CPU_CAPABILITY=avx2``) on an AVX-512 CPU the kernel is
built for AVX2 as well, with ``ATEN_CPU_CAPABILITY=default`` it is built generic, so one
setting reproduces an older CPU; otherwise ``native``. Each ISA is its own library
(the ISA's flags are part of the file name's hash) and loaded separately.

The library's file name carries a hash of the exact source bytes it was built from
(the build compiles that snapshot, not the file as it may be by then), and before any
signature is bound the library must report ``kernel_abi_version() == KERNEL_ABI``:
a stale or mismatched build is deleted and refused rather than called with the
wrong arguments.
"""

from __future__ import annotations

import ctypes
import _ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from ..._errors import UniversalityError
from ..._io import ensure_writable_dir

_SOURCE = Path(__file__).with_name("selective_scan.c")
KERNEL_ABI = 3  # must equal KERNEL_ABI in selective_scan.c; bump both when an exported signature changes
_FLAGS = ("-O3", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
ISA_ENV_VAR = "UNIVERSALITY_KERNEL_ISA"
"""Environment override of the kernel's instruction set: ``native``, ``avx2``, ``generic`` or ``auto`` (default)."""
ISAS = ("native", "avx2", "generic")
# target flags per ISA; avx2 names its extensions rather than -march=x86-64-v3 so any gcc knows them
_ISA_FLAGS = {
    "native": ("-march=native",),
    "avx2": ("-march=x86-64", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mmovbe", "-mtune=generic"),
    "generic": ("-march=x86-64", "-mtune=generic"),
}
_LOCK = threading.Lock()
_LIBS: dict[str, ctypes.CDLL | None] = {}  # per ISA: the loaded library, or None when it could not be built
_LIBS_AUTO: dict[str, str] = {}  # torch's dispatch level is fixed for the process: "auto" is resolved once
_MISSING = object()


def kernel_home() -> Path:
    """Folder the compiled kernels live in: ``$UNIVERSALITY_HOME/kernels`` (default ``~/.cache/universality/kernels``)."""
    from ...precision import home_dir

    return home_dir() / "kernels"


def _cpu_signature() -> str:
    """Model name and flags of this CPU, so a shared cache never serves code built for another CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def _flags(isa: str) -> tuple[str, ...]:
    """Compiler flags of a build for ``isa`` (one of :data:`ISAS`)."""
    if isa != "native" and platform.machine().lower() not in ("x86_64", "amd64"):
        if isa == "generic":
            return _FLAGS  # the compiler's own baseline for this architecture
        raise UniversalityError(f"{ISA_ENV_VAR}=avx2 needs an x86-64 CPU, this one is {platform.machine()}")
    return _ISA_FLAGS[isa] + _FLAGS


def kernel_isa() -> str:
    """The instruction set the C kernels are built for in this process: ``native``, ``avx2`` or ``generic``.

    Read from ``UNIVERSALITY_KERNEL_ISA``; unset or ``auto`` follows torch's dispatch level
    (``avx2`` when torch runs AVX2 kernels on a CPU that has AVX-512, ``generic`` when it runs
    its default kernels, else ``native``). Raises :class:`UniversalityError` for any other value.
    """
    value = os.environ.get(ISA_ENV_VAR, "").strip().lower()
    if value in ISAS:
        _flags(value)  # avx2 off x86-64: the one-sentence error now, not a warning at build time
        return value
    if value not in ("", "auto"):
        raise UniversalityError(f"{ISA_ENV_VAR}={os.environ[ISA_ENV_VAR]!r} is not valid; use one of "
                                f"{', '.join(ISAS)} or auto")
    return _auto_isa()


def _auto_isa() -> str:
    """``native`` unless torch was restricted below what this CPU has (see :func:`kernel_isa`)."""
    if "auto" not in _LIBS_AUTO:
        from ...precision import cpu_capability, cpu_flags

        capability = cpu_capability().upper()
        if capability == "AVX2" and cpu_flags()["avx512f"]:
            _LIBS_AUTO["auto"] = "avx2"
        elif capability == "DEFAULT":
            _LIBS_AUTO["auto"] = "generic"
        else:
            _LIBS_AUTO["auto"] = "native"
    return _LIBS_AUTO["auto"]


def _library_name(source: bytes, isa: str = "native") -> str:
    """File name of the library built from ``source`` for ``isa`` with our flags on this CPU."""
    key = hashlib.sha256()
    key.update(source)
    key.update(" ".join(_flags(isa)).encode())
    key.update(_cpu_signature().encode())
    return f"selective_scan_{isa}_{key.hexdigest()[:16]}.so"


def _load_or_build(folder: Path, source: bytes | None = None, isa: str = "native") -> ctypes.CDLL:
    """Load (building it first when absent) the library for ``source`` (default: the current
    ``selective_scan.c``) and ``isa`` from ``folder``, after checking its ABI version."""
    source = _SOURCE.read_bytes() if source is None else source
    target = folder / _library_name(source, isa)
    if not target.is_file():
        _compile(target, source, isa)
    lib = ctypes.CDLL(str(target))
    _check_abi(lib, target)
    return _bind(lib)


def _check_abi(lib: ctypes.CDLL, path: Path) -> None:
    """Raise (and delete ``path``) unless ``lib`` reports this module's :data:`KERNEL_ABI`."""
    try:
        fn = lib.kernel_abi_version
        fn.argtypes, fn.restype = [], ctypes.c_int
        found = int(fn())
    except AttributeError:
        found = None
    if found != KERNEL_ABI:
        _ctypes.dlclose(lib._handle)  # so that a rebuild at the same path is really loaded anew
        path.unlink(missing_ok=True)  # never serve it again; the next load rebuilds from the source
        raise RuntimeError(f"{path.name} has kernel ABI {found}, this universality expects {KERNEL_ABI} "
                           "(a stale build, or selective_scan.c and _ckernel.py out of step)")


def _compile(target: Path, source: bytes, isa: str = "native") -> None:
    """Compile ``source`` (a snapshot of ``selective_scan.c``) for ``isa`` into ``target`` atomically."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) on PATH")
    folder = ensure_writable_dir(target.parent)
    with tempfile.TemporaryDirectory(prefix=target.stem + ".", dir=folder) as work:
        src, tmp = Path(work) / _SOURCE.name, Path(work) / target.name
        src.write_bytes(source)  # compile the bytes that were hashed, even if the file changes meanwhile
        proc = subprocess.run([cc, *_flags(isa), str(src), "-o", str(tmp), "-lm"], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)  # atomic: concurrent builders write the same bytes


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"scan_fwd_{suffix}")
        # x, dt, dtb, softplus, At, B, C, bs, cs, D, z, zs, y, yg, states, b, t, d, n, nthreads
        fwd.argtypes = [p] * 3 + [i32] + [p] * 3 + [i64, i64] + [p] * 2 + [i64] + [p] * 3 + [i64] * 4 + [i32]
        fwd.restype = None
        bwd = getattr(lib, f"scan_bwd_{suffix}")
        # x, dt, dtb, softplus, At, B, C, bs, cs, D, z, zs, dy, dx, ddt, dz, dzs, dAt, dB, dC, dD, ddtb, b, t, d, n, nthreads
        bwd.argtypes = [p] * 3 + [i32] + [p] * 3 + [i64, i64] + [p] * 2 + [i64] + [p] * 4 + [i64] + [p] * 5 + [i64] * 4 + [i32]
        bwd.restype = None
        cfwd = getattr(lib, f"conv_silu_fwd_{suffix}")
        cfwd.argtypes = [p, i64, p, p, p] + [i64] * 4 + [i32]
        cfwd.restype = None
        cbwd = getattr(lib, f"conv_silu_bwd_{suffix}")
        # x, xs, Wt, bias, dout, dx, dxs, dW, db, b, t, d, k, nthreads
        cbwd.argtypes = [p, i64, p, p, p, p, i64, p, p] + [i64] * 4 + [i32]
        cbwd.restype = None
        rfwd = getattr(lib, f"rms_fwd_{suffix}")
        rfwd.argtypes = [p, p, ctypes.c_double, p, p, i64, i64, i32]
        rfwd.restype = None
        rbwd = getattr(lib, f"rms_bwd_{suffix}")
        rbwd.argtypes = [p] * 6 + [i64, i64, i32]
        rbwd.restype = None
    return lib


def kernel_threads(work: int) -> int:
    """Threads for a kernel call touching ``work`` elements: one for small calls (a parallel
    region costs more than it saves there, most of all on a loaded machine), else torch's count."""
    import torch

    return 1 if work < (1 << 16) else max(1, torch.get_num_threads())


def load_kernel() -> ctypes.CDLL | None:
    """The compiled scan library for :func:`kernel_isa` (building it on first use), or ``None`` when it cannot be built.

    Set ``UNIVERSALITY_NO_CKERNEL=1`` to force the pure-torch path. Raises :class:`UniversalityError`
    when ``UNIVERSALITY_KERNEL_ISA`` holds an invalid value.
    """
    if os.environ.get("UNIVERSALITY_NO_CKERNEL", "") not in ("", "0"):
        return None
    isa = kernel_isa()
    lib = _LIBS.get(isa, _MISSING)
    if lib is not _MISSING:
        return lib  # type: ignore[return-value]
    with _LOCK:
        if isa in _LIBS:
            return _LIBS[isa]
        lib, errors = None, []
        # the cache folder, then a private temp folder when the cache is not writable
        for folder in (kernel_home(), Path(tempfile.gettempdir()) / f"universality-kernels-{os.getuid()}"):
            try:
                lib = _load_or_build(folder, isa=isa)
                break
            except (OSError, RuntimeError, AttributeError, UniversalityError, subprocess.SubprocessError) as e:
                errors.append(str(e))
        if lib is None:
            warnings.warn(f"universality: the C Mamba kernels ({isa}) are unavailable ({'; '.join(errors)}); using the "
                          "slower pure-torch path", RuntimeWarning, stacklevel=2)
        _LIBS[isa] = lib
        return lib
