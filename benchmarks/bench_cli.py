"""The demo's wall time with the zoo cached, next to a resumed rerun of the same command in the same process.

Goal (issue 7): ``universality demo`` ≤ 2 minutes with the zoo cached (``--quick``: the test-size version).
The baseline is the same command run again on the finished run directory, where every stage is skipped:
the floor that loading models and rendering the report cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Figure


def _demo_seconds(argv: list[str]) -> float:
    from universality.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"universality {' '.join(argv)} exited with {rc}")
    return time.perf_counter() - t0


def run(quick: bool) -> list[Figure]:
    """Cold demo (fresh run directory, zoo built beforehand and not timed) vs its resumed rerun."""
    from universality import zoo
    from universality.jobs.demo import DEMO_MODELS

    preset = "test" if quick else "default"
    members = [m.name for m in zoo.get_preset(preset).models if m.name.split("-")[0] in DEMO_MODELS]
    zoo.ensure_zoo(preset, only=members)  # cached in $UNIVERSALITY_HOME; not part of the figure
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        argv = ["demo", "--out", out, "--quiet"] + (["--quick"] if quick else [])
        cold = _demo_seconds(argv)
        warm = _demo_seconds(argv)
    return [Figure(name=f"demo{' --quick' if quick else ''} with the zoo cached (wall s)", value=cold, unit="s",
                   baseline="rerun of the same command, every stage skipped", baseline_value=warm,
                   higher_is_better=False, goal_value=120.0)]
