"""``python -m universality.about``: the versions and the CPU facts a run's figures depend on.

CI prints this first, and every benchmark prints :func:`universality.precision.cpu_description`,
so a figure can always be traced to the packages and the instruction set that produced it.
"""

from __future__ import annotations

import platform
from importlib import metadata

KEY_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "numba", "POT",
                "matplotlib", "tqdm", "PyYAML")
"""Distributions whose versions are printed (the lock in ``constraints/lock.txt`` pins them all)."""


def package_versions() -> dict[str, str]:
    """Installed version of each of :data:`KEY_PACKAGES` (``"missing"`` when not installed)."""
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def report() -> str:
    """Several lines: universality, Python and platform, package versions, the CPU and the bf16 decision."""
    from . import __version__
    from .precision import cpu_description

    versions = " ".join(f"{k}=={v}" for k, v in package_versions().items())
    return "\n".join([f"universality {__version__}; Python {platform.python_version()} on {platform.platform()}",
                      f"packages: {versions}", f"cpu: {cpu_description()}"])


if __name__ == "__main__":
    print(report())
