"""Comparing a host's cache with a Hugging Face model's own ``hidden_states``, whatever the release's layout."""

from __future__ import annotations

import torch

from universality.hosts.hf_layout import hidden_states_layout


def assert_cache_matches_hidden_states(cache: dict, model, tokens: torch.Tensor, atol: float, n_layers: int) -> tuple[str, ...]:
    """Check every ``hidden_states`` entry against the cache point the model's own layout names; returns the layout.

    The layout comes from :func:`hidden_states_layout` (forward hooks on HF's blocks, not our cache), so the
    check is independent of the host. Every block's ``resid_post`` except possibly the last must be listed.
    """
    with torch.no_grad():
        hidden = model(tokens, output_hidden_states=True, use_cache=False).hidden_states
    layout = hidden_states_layout(model, tokens).names
    assert len(layout) == len(hidden) == n_layers + 1
    assert layout[-1] == "final_norm"
    assert all(f"blocks.{i}.resid_post" in layout for i in range(n_layers - 1)), layout
    for name, h in zip(layout, hidden):
        torch.testing.assert_close(cache[name], h, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    return layout
