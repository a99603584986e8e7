"""Run directories: each pipeline stage records the fingerprint of its inputs and is skipped on rerun when unchanged.

Layout of a run directory::

    config.json            the resolved configuration of the command
    stages/<name>.json     {"fingerprint", "result", "seconds"} of each finished stage
    stages/<name>/         files a stage writes (activation stores, dictionaries)
    results.json           the report's input (see docs/report.md)
    report.html, summary.md, figures/, tables/

A stage's record is written atomically only after the stage finished, so an
interrupted run resumes at the first stage that has no matching record.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from .. import _dist, _memory
from .._errors import UniversalityError
from .._io import atomic_write_json, ensure_writable_dir, fingerprint


class RunDir:
    """A run directory whose stages are cached by input fingerprint."""

    def __init__(self, path: str | os.PathLike, log: Callable[[str], None] | None = None):
        self.path = Path(ensure_writable_dir(path))
        self.log = log or (lambda msg: None)
        self.timings: dict[str, dict] = {}
        """Stage name → {"seconds", "status": "ran" | "skipped", "peak_rss_mib"} for this invocation (the peak
        resident memory of this process while the stage ran, where ``/proc`` tells it)."""
        self._open_peaks: list[int] = []

    def _open_peaks_fold(self) -> None:
        """Fold the memory high-water mark into every running (possibly nested) stage, then start a new window."""
        hwm = _memory.peak_bytes() or 0
        self._open_peaks[:] = [max(p, hwm) for p in self._open_peaks]
        _memory.reset_peak()

    def folder(self, stage: str) -> Path:
        """The folder where ``stage`` may keep its files (created on demand)."""
        p = self.path / "stages" / stage
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _record(self, stage: str) -> Path:
        return self.path / "stages" / f"{stage}.json"

    def cached(self, stage: str, inputs: Any) -> Any | None:
        """The stored result of ``stage`` when its record matches ``inputs``' fingerprint, else ``None``."""
        rec = self._record(stage)
        if not rec.is_file():
            return None
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data.get("result") if data.get("fingerprint") == fingerprint(inputs) else None

    def stage(self, stage: str, inputs: Any, fn: Callable[[], Any], valid: Callable[[Any], bool] | None = None) -> Any:
        """Run ``fn()`` (a JSON-serialisable result) unless a record with the same input fingerprint exists.

        Args:
            stage: stage name (letters, digits, ``-_.``); also the name of its folder.
            inputs: JSON-serialisable description of everything the stage depends on.
            fn: computes the result; may write files under :meth:`folder`.
            valid: optional check of a recorded result (e.g. that its files still exist); a failing one reruns the stage.

        Returns:
            the result, fresh or from the record.
        """
        if not stage.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UniversalityError(f"stage name '{stage}' is not valid; use letters, digits, '-', '_' or '.'")
        t0 = time.perf_counter()
        hit = self.cached(stage, inputs)
        fresh = hit is not None and (valid is None or valid(hit))
        fresh, hit = _dist.broadcast_object((fresh, hit))  # under torchrun: every process follows rank 0's record
        if fresh:
            self.timings[stage] = {"seconds": round(time.perf_counter() - t0, 2), "status": "skipped"}
            self.log(f"{stage}: unchanged, skipped")
            return hit
        self.log(f"{stage}: running")
        self._open_peaks_fold()
        self._open_peaks.append(0)
        try:
            result = fn()
        finally:
            self._open_peaks_fold()
            peak = self._open_peaks.pop() or None
        seconds = round(time.perf_counter() - t0, 2)
        if _dist.is_main():  # one writer of the shared record; the others wait until it is on disk
            atomic_write_json(self._record(stage), {"fingerprint": fingerprint(inputs), "inputs": inputs, "result": result,
                                                    "seconds": seconds})
        _dist.barrier()
        self.timings[stage] = {"seconds": seconds, "status": "ran"}
        if peak is not None:
            self.timings[stage]["peak_rss_mib"] = round(peak / 2**20, 1)
        return result
