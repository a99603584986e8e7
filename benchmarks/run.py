"""The one benchmark runner: imports every ``benchmarks/bench_*.py`` and prints its figures.

Each bench module defines ``run(quick: bool) -> list[Figure]``; a figure is
measured together with its baseline *in the same process*, and the runner prints
the ratio next to the goal. Usage::

    python benchmarks/run.py [--quick] [--only NAME ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Figure  # noqa: E402

from universality.precision import cpu_capability, cpu_description  # noqa: E402


def _machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_description(),
        "capability": cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the recorded figures)")
    ap.add_argument("--only", nargs="*", default=None, help="bench module names (e.g. mamba sae) to run")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the goals are stated for 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mods = sorted(HERE.glob("bench_*.py"))
    if args.only:
        mods = [m for m in mods if m.stem.removeprefix("bench_") in args.only]
    print(f"machine: {_machine()}")
    print(f"cpu: {cpu_description()}")
    figures: list[Figure] = []
    for path in mods:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"\n== {path.stem} ==", flush=True)
        for fig in mod.run(quick=args.quick):
            print(fig.line(), flush=True)
            figures.append(fig)
        print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": _machine(), "figures": [f.as_dict() for f in figures]}, indent=2))
    failed = [f for f in figures if f.met is False]
    print(f"\n{len(figures)} figures, {len(failed)} below goal" + (": " + ", ".join(f.name for f in failed) if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
