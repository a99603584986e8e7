"""The one check every typed result record's ``from_dict`` makes before reading a dict."""

from __future__ import annotations

from typing import Any

from ._errors import UniversalityError


def require_keys(d: Any, keys: tuple[str, ...], what: str) -> None:
    """Raise one sentence naming the missing ``keys`` when ``d`` is not a mapping holding all of them.

    ``what`` names the record (``"induction"``, ``"pair"``, ...) in the message.
    """
    missing = [k for k in keys if not isinstance(d, dict) or k not in d]
    if missing:
        raise UniversalityError(f"this {what} record lacks {', '.join(missing)}; it was not written by this version "
                                "of universality")
