"""The report's sections, one module each, in page order (see :mod:`.base` for what a section is).

Importing this package registers the built-in sections; a new analysis adds one module here (or anywhere)
that defines a :class:`Section` and calls :func:`register`.
"""

from .base import Section, register, registered, unregister
from . import overview, pairs, grid, matches, families, seed_overlap, induction, write_lag, lens, steering, paper_findings, circuits, timings  # noqa: E402,F401  (order = page order)
from . import induction_match  # noqa: E402,F401  (placed after the paper's findings, before Circuits)
from . import evaluation  # noqa: E402,F401  (placed before Timings)
from . import explanations  # noqa: E402,F401  (placed before the run's timings)
from . import joint  # noqa: E402,F401  (placed before Timings)

__all__ = ["Section", "register", "registered", "unregister"]
