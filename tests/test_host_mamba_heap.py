"""retained_heap: large tensors freed inside the block are reused without page faults (glibc)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from universality.hosts.ssm.heap import hugepage_empty, retained_heap

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


def _faults_of_churn(rounds: int = 4, mib: int = 64) -> int:
    """Minor page faults taken while a ``mib`` MiB tensor is allocated, written and freed ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        t = torch.empty(mib * 256 * 1024)
        t.fill_(1.0)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_freed_large_buffers_are_reused_inside_and_mapped_afresh_after():
    pages = 4 * 64 * 1024 * 1024 // 4096
    assert _faults_of_churn() > pages // 2  # default glibc: every round maps fresh pages
    with retained_heap() as applied:
        assert applied
        _faults_of_churn(12)  # the first rounds grow the heap (aligned requests do not fit the chunk just freed)
        assert _faults_of_churn() < pages // 50
    # defaults are back: a size the heap holds no free chunk for is mapped afresh each time
    assert _faults_of_churn(mib=256) > 4 * pages // 2


def test_retained_heap_is_a_no_op_without_glibc(monkeypatch):
    from universality.hosts.ssm import heap

    monkeypatch.setattr(heap, "_mallopt", lambda: None)
    with retained_heap() as applied:
        assert applied is False


def _thp_madvise_mode() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _thp_madvise_mode(), reason="transparent huge pages are off or absent")
def test_hugepage_empty_faults_once_per_2mib():
    pages = 64 * 1024 * 1024 // 4096
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = hugepage_empty(16, 1024, 1024)  # 64 MiB of float32
    t.fill_(2.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert t.shape == (16, 1024, 1024) and t.dtype == torch.float32 and bool((t == 2.0).all())
    assert faults < pages // 8, faults  # 4 KiB pages would take ~16,400; huge pages ~550 (the unaligned ends)


def test_hugepage_empty_small_or_elsewhere_is_a_plain_tensor(monkeypatch):
    from universality.hosts.ssm import heap

    assert hugepage_empty(3, 4, dtype=torch.float64).shape == (3, 4)
    monkeypatch.setattr(heap, "_madvise", lambda: None)
    t = hugepage_empty(9 * 1024 * 1024)
    assert t.shape == (9 * 1024 * 1024,) and t.dtype == torch.float32
