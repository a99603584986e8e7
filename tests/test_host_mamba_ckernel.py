"""The C kernel loader: a library whose ABI version differs from the bindings' is never called."""

from __future__ import annotations

import re
import shutil

import pytest

from universality.hosts.ssm import _ckernel as ck

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
