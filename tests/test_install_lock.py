"""The lock the README's commands install from, and the sentence an unsatisfiable pin produces."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints" / "lock.txt"


def _tool():
    spec = importlib.util.spec_from_file_location("locked_install", ROOT / "tools" / "locked_install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lock_pins_every_runtime_dependency_exactly():
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"lock line {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for dep in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "pot", "matplotlib", "numba",
                "tqdm", "pyyaml", "pytest"):
        assert dep in pins, f"the lock does not pin {dep}"
    assert "+" not in pins["torch"]  # no local label: the same pin serves CPU and CUDA builds
    assert "universality" not in pins


@pytest.mark.skipif(os.environ.get("UNIVERSALITY_UNLOCKED") == "1",
                    reason="make test-latest runs on releases newer than the lock, on purpose")
def test_installed_versions_are_the_locked_ones():
    """The suite runs on exactly what the lock says (make setup installs from it)."""
    from importlib import metadata

    tool = _tool()
    for dist in ("transformers", "tokenizers", "numpy", "scipy", "numba", "safetensors"):
        assert metadata.version(dist) == tool.pinned_version(str(LOCK), dist), dist
    assert metadata.version("torch").split("+")[0] == tool.pinned_version(str(LOCK), "torch")


def test_unsatisfiable_pin_is_one_sentence_naming_package_and_remedy(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# test lock\nnumpy==0.0.1\n")
    empty = tmp_path / "wheels"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "locked_install.py"), str(lock), "--no-index",
                           "--find-links", str(empty), "--dry-run", "numpy"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert re.search(r"the lock \(.*lock\.txt\) pins numpy==0\.0\.1, which pip cannot install for Python "
                     r"\d+\.\d+\.\d+ on \w+; use Python 3\.11 or 3\.12", proc.stderr), proc.stderr
    assert "make setup-latest" in proc.stderr
