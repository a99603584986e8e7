"""Per-stage peak resident memory: a stage that allocates 400 MB reports it, a trivial one does not, and a stage
that contains it (nested) reports at least as much; the process-wide peak survives the per-stage resets."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from universality import _memory
from universality.jobs import RunDir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _memory.peak_bytes() is None,
                                reason="peak RSS readings need Linux /proc")


def _touch(mb: int) -> float:
    a = np.ones(mb * 2**20 // 8)  # every page written, so it is resident
    return float(a[::4096].sum())


def test_each_stage_reports_its_own_peak_and_nesting_folds(tmp_path):
    run = RunDir(tmp_path / "run")
    run.stage("small", {"x": 1}, lambda: 1)
    run.stage("outer", {"x": 2}, lambda: run.stage("big", {"x": 3}, lambda: _touch(400)) and 2)
    run.stage("after", {"x": 4}, lambda: 3)
    t = run.timings
    assert t["big"]["peak_rss_mib"] - t["small"]["peak_rss_mib"] > 350
    assert t["outer"]["peak_rss_mib"] >= t["big"]["peak_rss_mib"]
    assert t["after"]["peak_rss_mib"] < t["big"]["peak_rss_mib"] - 300  # the 400 MB were freed; the window was reset
    assert _memory.process_peak() >= (t["big"]["peak_rss_mib"] - 0.1) * 2**20  # recorded to 0.1 MiB
    again = RunDir(tmp_path / "run")
    again.stage("small", {"x": 1}, lambda: 1)
    assert again.timings["small"] == {"seconds": again.timings["small"]["seconds"], "status": "skipped"}
