"""A constructed host whose blocks are known affine maps: ``resid_post_i = resid_pre_i @ A_i.T + b_i``.

Its final norm is a LayerNorm with affine parameters and its unembedding a plain matrix, so every lens
and steering effect has a closed form the tests compute independently (in float64).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from universality.hosts.base import Host


class _Model(torch.nn.Module):
    def __init__(self, n_layers: int, d: int, vocab: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(num_hidden_layers=n_layers, hidden_size=d, model_type="affine")
        self.embed = torch.nn.Embedding(vocab, d)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, d, generator=g))
        # well-conditioned invertible maps: rotation-like plus a scaled identity
        self.A = torch.nn.Parameter(torch.stack([torch.linalg.qr(torch.randn(d, d, generator=g))[0] * 1.3
                                                 + 0.2 * torch.eye(d) for _ in range(n_layers)]))
        self.b = torch.nn.Parameter(0.5 * torch.randn(n_layers, d, generator=g))
        self.norm = torch.nn.LayerNorm(d)
        with torch.no_grad():
            self.norm.weight.copy_(1 + 0.2 * torch.randn(d, generator=g))
            self.norm.bias.copy_(0.1 * torch.randn(d, generator=g))
        self.W_U = torch.nn.Parameter(torch.randn(vocab, d, generator=g) * 0.7)

    def get_input_embeddings(self):
        return self.embed


class AffineHost(Host):
    """``embed → (affine block) × n_layers → LayerNorm → W_U``; tokens mix nothing across positions."""

    arch = "affine"
    block_points = ("resid_pre", "resid_post")

    def __init__(self, n_layers: int = 3, d: int = 8, vocab: int = 11, seed: int = 0):
        super().__init__(_Model(n_layers, d, vocab, seed), None, "affine")

    def _forward(self, tokens, run):
        m = self.model
        x = run("embed", m.embed(tokens))
        for i in range(self.n_layers):
            x = run(f"blocks.{i}.resid_pre", x)
            x = run(f"blocks.{i}.resid_post", x @ m.A[i].T + m.b[i])
            if self._stop_after(run, i):
                return None
        return run("final_norm", m.norm(x)) @ m.W_U.T

    def _unembed(self, stream):
        return self.model.norm(stream) @ self.model.W_U.T

    def to_final(self, layer: int):
        """``(M, c)`` float64 with ``final_stream = M @ resid_post_layer + c`` (the composed later blocks)."""
        d = self.d_model
        M, c = torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        for j in range(layer + 1, self.n_layers):
            A, b = self.model.A[j].detach().double(), self.model.b[j].detach().double()
            M, c = A @ M, A @ c + b
        return M, c
