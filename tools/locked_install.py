"""Run pip with the repository's lock and turn an unsatisfiable pin into one sentence.

Usage (from the Makefile): ``python tools/locked_install.py LOCK PIP_ARGS...``. pip's own output is
shown as it comes; when pip fails because a pinned release has no distribution for this Python or
platform, the last line names the package, the pin, the Python and what to do.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys

_MISSING = (re.compile(r"requested \(constraint\) ([A-Za-z0-9_.\-]+)=="),  # a pin no release satisfies
            re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)"),
            re.compile(r"Could not find a version that satisfies the requirement ([A-Za-z0-9_.\-\[\]]+)"),
            re.compile(r"Cannot install ([A-Za-z0-9_.\-]+)"))


def pinned_version(lock: str, package: str) -> str | None:
    """The version ``lock`` pins for ``package`` (names compared case- and separator-insensitively)."""
    norm = re.sub(r"[-_.]+", "-", package.split("[")[0].split("=")[0]).lower()
    with open(lock) as f:
        for line in f:
            name, sep, version = line.strip().partition("==")
            if sep and re.sub(r"[-_.]+", "-", name).lower() == norm:
                return version
    return None


def main(argv: list[str]) -> int:
    """Run ``pip install -c LOCK ARGS`` and explain a failed pin; returns pip's exit status (2 when explained)."""
    lock, args = argv[0], argv[1:]
    cmd = [sys.executable, "-m", "pip", "install", "--constraint", lock, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        sys.stdout.write(line)
        seen.append(line)
    if proc.wait() == 0:
        return 0
    text = "".join(seen)
    for pattern in _MISSING:
        m = pattern.search(text)
        if m:
            package = m.group(1).split("==")[0]
            pin = pinned_version(lock, package)
            what = f"{package}=={pin}" if pin else package
            print(f"\nuniversality: the lock ({lock}) pins {what}, which pip cannot install for Python "
                  f"{platform.python_version()} on {platform.machine()}; use Python 3.11 or 3.12 "
                  f"(make PYTHON=python3.11 setup), or install the newest compatible releases instead with "
                  f"'make setup-latest'.", file=sys.stderr)
            return 2
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
