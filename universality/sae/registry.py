"""Dictionary kinds: each name maps to its coder class and its config class.

A kind is registered once, by decorating its coder class with
:func:`register_kind`; the class names its ``kind`` and its ``config_class``
(a :class:`~universality.sae.config.CoderConfig` subclass holding the kind's own
settings). Everything that needs to know about kinds asks here: building a
config (:meth:`CoderConfig.__new__ <universality.sae.config.CoderConfig>`),
building a coder, loading a saved folder, validating a pipeline option.

This module imports nothing from the package at run time except the leaf
``_errors`` (and the standard library), so any module may import it without creating an import cycle.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .._errors import UniversalityError

if TYPE_CHECKING:
    from .coder import SparseCoder
    from .config import CoderConfig


class Kind:
    """One registered kind: its ``name``, ``coder_class``, ``config_class`` and whether it is ``joint``.

    A joint kind (``coder_class.joint`` true: crosscoders, universal SAEs, see
    :mod:`universality.sae.joint`) reads and writes several models at once; it is
    looked up like any kind but listed apart (:func:`registered_kinds` with ``joint=True``).
    """

    __slots__ = ("name", "coder_class", "config_class", "joint")

    def __init__(self, name: str, coder_class: type["SparseCoder"], config_class: type["CoderConfig"], joint: bool = False):
        self.name = name
        self.coder_class = coder_class
        self.config_class = config_class
        self.joint = joint

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, {self.coder_class.__name__}, {self.config_class.__name__})"


_KINDS: dict[str, Kind] = {}


def register_kind(cls: type["SparseCoder"]) -> type["SparseCoder"]:
    """Class decorator: make coder class ``cls`` the implementation of kind ``cls.kind``, configured by ``cls.config_class``.

    A kind registers once; a second class claiming the same name is a ``TypeError``
    (a programming error, not a user mistake). Returns ``cls`` unchanged.
    """
    name = getattr(cls, "kind", "")
    config_class = getattr(cls, "config_class", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no kind name; set the class attribute kind = '<name>'")
    fields = {f.name: f for f in dataclasses.fields(config_class)} if isinstance(config_class, type) and dataclasses.is_dataclass(config_class) else {}
    if "kind" not in fields:
        raise TypeError(f"{cls.__name__}.config_class must be a CoderConfig subclass (a dataclass with a kind field)")
    if name in _KINDS:
        raise TypeError(f"kind '{name}' is already registered by {_KINDS[name].coder_class.__name__}")
    default = fields["kind"].default
    if default != name:
        raise TypeError(f"{config_class.__name__}.kind defaults to {default!r}; it must default to the kind it configures, {name!r}")
    _KINDS[name] = Kind(name, cls, config_class, joint=bool(getattr(cls, "joint", False)))
    return cls


def unregister_kind(name: str) -> None:
    """Forget kind ``name`` (for tests that register a kind of their own); unknown names are ignored."""
    _KINDS.pop(name, None)


def lookup(name: str) -> Kind:
    """The registered :class:`Kind` called ``name``; a :class:`UniversalityError` lists the valid names otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise UniversalityError(f"kind {name!r} is not a known dictionary kind; use one of {', '.join(registered_kinds() + registered_kinds(joint=True))}") from None


def coder_class(name: str) -> type["SparseCoder"]:
    """The coder class of kind ``name`` (see :func:`lookup` for the error)."""
    return lookup(name).coder_class


def config_class(name: str) -> type["CoderConfig"]:
    """The config class of kind ``name`` (see :func:`lookup` for the error)."""
    return lookup(name).config_class


def registered_kinds(joint: bool = False) -> tuple[str, ...]:
    """Names of every registered single-model kind, sorted; with ``joint=True`` the joint (multi-model) kinds instead."""
    return tuple(sorted(n for n, k in _KINDS.items() if k.joint == joint))


def kind_settings(name: str) -> tuple[str, ...]:
    """Every config field of kind ``name`` (the shared ones and the kind's own), in declaration order."""
    return tuple(f.name for f in dataclasses.fields(lookup(name).config_class))


__all__ = ["Kind", "register_kind", "unregister_kind", "lookup", "coder_class", "config_class", "registered_kinds", "kind_settings"]
