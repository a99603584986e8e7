"""Worker process of a parallel zoo build: ``python -m universality.zoo._worker SPEC.json``.

A fresh interpreter (not multiprocessing) so that a user's script needs no
``if __name__ == "__main__"`` guard. SPEC holds the zoo folder, the preset, the
member name, the build fingerprint and the torch thread count; the result is
the member's ``zoo_model.json``.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from .build import _build_member
    from .presets import ModelSpec, ZooPreset

    spec = json.loads(open(argv[0]).read())
    pd = dict(spec["preset"])
    pd["models"] = tuple(ModelSpec(**m) for m in pd["models"])
    preset = ZooPreset(**pd)
    member = next(m for m in preset.models if m.name == spec["member"])
    _build_member(spec["root"], preset, member, spec["build_fp"], None, spec["threads"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
