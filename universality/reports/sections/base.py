"""What a report section is, and the registry that orders them.

A section owns one part of results.json (usually one top-level key) end to end: it checks that part
(:meth:`Section.validate`), lays it out on the page with its figures (:meth:`Section.render`), writes its CSV
tables (:meth:`Section.tables`) and contributes sentences to the plain-language summary (:meth:`Section.findings`).
Adding an analysis to the report is one module defining a :class:`Section` and calling :func:`register`.
"""

from __future__ import annotations

from typing import Mapping

from ..._errors import UniversalityError
from ..page import Page


class Section:
    """One part of the report; subclasses override what they need (every method has a no-op default)."""

    key: str | None = None
    """The results.json key this section reads (``None`` for sections built from the top-level facts)."""

    def validate(self, res: Mapping) -> None:
        """Raise one :class:`~universality.UniversalityError` sentence when this section's part of ``res`` is malformed."""

    def render(self, res: Mapping, page: Page) -> None:
        """Add this section's headings, text, tables and figures to ``page``."""

    def tables(self, res: Mapping) -> dict[str, str]:
        """CSV file name (under ``tables/``) → its text."""
        return {}

    def findings(self, res: Mapping) -> list[str]:
        """Sentences for the summary at the top of the report, each following a stated rule."""
        return []


_REGISTRY: list[Section] = []


def register(section: Section, *, before: str | None = None) -> Section:
    """Add ``section`` to the report (at the end, or before the section whose class is named ``before``); returns it."""
    names = [type(s).__name__ for s in _REGISTRY]
    if type(section).__name__ in names:
        raise UniversalityError(f"report section {type(section).__name__} is already registered")
    if before is None:
        _REGISTRY.append(section)
    elif before in names:
        _REGISTRY.insert(names.index(before), section)
    else:
        raise UniversalityError(f"cannot place a report section before '{before}'; registered sections are {', '.join(names)}")
    return section


def registered() -> tuple[Section, ...]:
    """Every registered section, in page order."""
    return tuple(_REGISTRY)


def unregister(name: str) -> None:
    """Remove the section whose class is named ``name`` (tests and plug-ins that replace a built-in section)."""
    _REGISTRY[:] = [s for s in _REGISTRY if type(s).__name__ != name]
