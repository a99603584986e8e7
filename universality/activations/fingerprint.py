"""Fingerprint of a host, as the activation cache and run directories record it."""

from __future__ import annotations

from typing import Any

from ..hosts.fingerprint import compute_fingerprint


def host_fingerprint(host: Any) -> str:
    """16-hex hash of ``host``'s model type, config and weights (names, dtypes, shapes, bytes).

    Equal fingerprints mean the same function of the tokens, whatever the path it
    was loaded from; any changed weight changes it. A :class:`~universality.hosts.Host`
    answers from its cached :attr:`~universality.hosts.base.Host.fingerprint`
    (the weights are hashed once); any other object with ``.model`` and
    ``.config`` is hashed on every call.
    """
    cached = getattr(type(host), "fingerprint", None)
    if isinstance(cached, property):
        return host.fingerprint
    return compute_fingerprint(host)
