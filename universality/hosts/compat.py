"""Guards for what the hosts read from transformers' model objects.

Hosts run their own forward over the weights of Hugging Face modules, so they depend on module and
attribute names that transformers may rename in a release. :func:`require_attributes` checks them
once, when a host is built, and turns a rename into one sentence naming the transformers version,
the class and the attribute, instead of an ``AttributeError`` deep inside a forward.
"""

from __future__ import annotations

from typing import Any, Iterable

from .._errors import UniversalityError

TESTED_TRANSFORMERS = "5.23 to 5.25"
"""The transformers releases the hosts' test suite has passed (the lock pins the newest)."""


def require_attributes(obj: Any, paths: Iterable[str], host: str) -> None:
    """Raise :class:`UniversalityError` unless every dotted attribute path in ``paths`` exists on ``obj``.

    ``host`` names the host in the message (for example ``"RWKV"``).
    """
    for path in paths:
        target = obj
        for part in path.split("."):
            if not hasattr(target, part):
                import transformers

                raise UniversalityError(
                    f"the {host} host reads '{path}' of {type(obj).__name__}, which transformers "
                    f"{transformers.__version__} does not have; install a tested release ({TESTED_TRANSFORMERS}, "
                    f"`make setup` installs the locked one) or report this version")
            target = getattr(target, part)
