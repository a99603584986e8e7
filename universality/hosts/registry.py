"""model_type → host class. Each architecture registers once; loading dispatches on the config."""

from __future__ import annotations

from typing import Callable, TypeVar

from .._errors import UniversalityError

_HOSTS: dict[str, type] = {}
H = TypeVar("H", bound=type)


def register_host(*model_types: str) -> Callable[[H], H]:
    """Class decorator: make ``cls`` the host for each Hugging Face ``model_type`` given."""

    def deco(cls: H) -> H:
        for mt in model_types:
            _HOSTS[mt] = cls
        return cls

    return deco


def supported_model_types() -> list[str]:
    """Sorted list of every ``config.model_type`` :func:`load_host` accepts."""
    _import_builtin_hosts()
    return sorted(_HOSTS)


def host_class(model_type: str) -> type:
    """The registered host class for ``model_type``; a clear error listing the supported ones otherwise."""
    _import_builtin_hosts()
    try:
        return _HOSTS[model_type]
    except KeyError:
        raise UniversalityError(
            f"model_type '{model_type}' is not supported; supported model types: {', '.join(sorted(_HOSTS))}"
        ) from None


_BUILTIN = ("transformer", "mamba", "rwkv")


def _import_builtin_hosts() -> None:
    """Import the built-in host modules once; each registers its model types on import."""
    import importlib

    for mod in _BUILTIN:
        name = f"{__package__}.{mod}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # a host module not present in this build
            if e.name != name:
                raise
