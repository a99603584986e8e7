"""The C kernel loader: a library whose ABI version differs from the bindings' is never called; the ISA override."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import pytest

from universality import UniversalityError
from universality.hosts.ssm import _ckernel as ck
from universality.precision import cpu_flags

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")


def test_source_and_bindings_declare_the_same_abi():
    declared = re.search(rb"#define KERNEL_ABI (\d+)", ck._SOURCE.read_bytes())
    assert declared is not None and int(declared.group(1)) == ck.KERNEL_ABI


@pytest.mark.skipif(ck.load_kernel() is None, reason="the C kernels cannot be built here")
def test_loaded_library_reports_the_bindings_abi():
    assert ck.load_kernel().kernel_abi_version() == ck.KERNEL_ABI


@needs_gcc
@pytest.mark.parametrize("stale_source", [
    f"int kernel_abi_version(void) {{ return {ck.KERNEL_ABI - 1}; }}\n",  # built from an older selective_scan.c
    "int scan_block_size(void) { return 16; }\n",  # older still: from before the ABI function existed
], ids=["older-abi", "no-abi-function"])
def test_stale_library_under_the_expected_name_is_refused_removed_and_rebuilt(tmp_path, stale_source, request):
    source = ck._SOURCE.read_bytes()
    target = tmp_path / ck._library_name(source)
    ck._compile(target, stale_source.encode())  # a stale build sitting where the current one should be
    with pytest.raises(RuntimeError, match="kernel ABI"):
        ck._load_or_build(tmp_path, source)
    assert not target.exists()
    if "older" in request.node.callspec.id:  # one full build is enough to show the next load rebuilds it
        lib = ck._load_or_build(tmp_path, source)
        assert lib.kernel_abi_version() == ck.KERNEL_ABI
        assert [p.name for p in tmp_path.glob("*.so")] == [target.name]


@needs_gcc
def test_build_compiles_the_hashed_snapshot_not_the_file_on_disk(tmp_path):
    """The library is named after the bytes handed to the build, and built from exactly those bytes."""
    snapshot = ck._SOURCE.read_bytes() + b"\nint snapshot_marker(void) { return 7; }\n"
    lib = ck._load_or_build(tmp_path, snapshot)
    assert lib.snapshot_marker() == 7  # only the snapshot defines it; the file on disk does not
    assert [p.name for p in tmp_path.glob("*.so")] == [ck._library_name(snapshot)]


@pytest.mark.skipif(ck.load_kernel() is None, reason="the C kernels cannot be built here")
@pytest.mark.parametrize("name", ["scan_fwd", "scan_bwd", "conv_silu_fwd", "conv_silu_bwd", "rms_fwd", "rms_bwd"])
def test_bound_argument_counts_match_the_c_prototypes(name):
    """A signature edited on one side only (and the ABI number not bumped) fails here, not at run time."""
    source = ck._SOURCE.read_text()
    start = source.index(f"void {name}_##SUF(") + len(f"void {name}_##SUF(")
    params = source[start:source.index(")", start)]
    lib = ck.load_kernel()
    for suffix in ("f32", "f64"):
        assert len(getattr(lib, f"{name}_{suffix}").argtypes) == params.count(",") + 1


def test_bad_isa_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(ck.ISA_ENV_VAR, "avx9")
    with pytest.raises(UniversalityError, match=r"UNIVERSALITY_KERNEL_ISA='avx9' is not valid; use one of native, avx2, generic or auto"):
        ck.load_kernel()


@pytest.mark.parametrize(("capability", "avx512", "expected"), [
    ("AVX2", True, "avx2"),  # torch told to stay at AVX2 on an AVX-512 CPU: the kernel follows
    ("AVX2", False, "native"),  # a real AVX2 CPU: native is already AVX2
    ("AVX512", True, "native"),
    ("DEFAULT", True, "generic"),
])
def test_unset_isa_follows_torch_dispatch_level(monkeypatch, capability, avx512, expected):
    import universality.precision as precision

    monkeypatch.delenv(ck.ISA_ENV_VAR, raising=False)
    monkeypatch.setattr(ck, "_LIBS_AUTO", {})
    monkeypatch.setattr(precision, "cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2": True, "avx512f": avx512, "avx512_bf16": False,
                                                         "amx_bf16": False})
    assert ck.kernel_isa() == expected
    monkeypatch.setenv(ck.ISA_ENV_VAR, "auto")
    assert ck.kernel_isa() == expected
    monkeypatch.setenv(ck.ISA_ENV_VAR, " Generic ")  # an explicit choice wins, case and spaces aside
    assert ck.kernel_isa() == "generic"


def test_each_isa_is_its_own_library_name():
    source = ck._SOURCE.read_bytes()
    names = {isa: ck._library_name(source, isa) for isa in ck.ISAS}
    assert len(set(names.values())) == len(ck.ISAS)
    assert all(name.startswith(f"selective_scan_{isa}_") for isa, name in names.items())


def _disassembly(isa, monkeypatch) -> str:
    monkeypatch.setenv(ck.ISA_ENV_VAR, isa)
    lib = ck.load_kernel()
    if lib is None:
        pytest.skip(f"the {isa} kernel cannot be built here")
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", lib._name], capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.skipif(shutil.which("objdump") is None or platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="needs objdump on x86-64")
def test_avx2_build_uses_ymm_and_never_zmm_and_generic_neither(monkeypatch):
    """The avx2 library must run on a CPU without AVX-512 (no zmm register anywhere, so no AVX-512
    instruction) and be vectorised for AVX2; the generic one uses SSE registers only."""
    if not cpu_flags()["avx2"]:
        pytest.skip("this CPU cannot load an AVX2 build")
    avx2 = _disassembly("avx2", monkeypatch)
    assert "%zmm" not in avx2 and "%k1" not in avx2
    assert avx2.count("%ymm") > 1000 and "vfmadd" in avx2
    generic = _disassembly("generic", monkeypatch)
    assert "%zmm" not in generic and "%ymm" not in generic and "%xmm" in generic
    if cpu_flags()["avx512f"]:  # and the override really switched libraries: native uses AVX-512 here
        assert "%zmm" in _disassembly("native", monkeypatch)
