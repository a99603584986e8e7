"""A constructed two-step circuit: token X -> layer-0 neuron -> layer-1 neuron -> logit Y.

A 2-block GPT-2 with ReLU MLPs and silenced attention; its MLPs *are* ReLU transcoders, so the
dictionaries below are exact (error nodes ~ 0). Block 0's neuron 0 reads direction a (written by
X's embedding) and writes b; block 1's neuron 0 reads b and writes c; the unembedding row of Y is c.
The graph's top path from the Y logit must be exactly that chain, and nearly all influence must
flow through features (replacement score ~ 1).
"""

from __future__ import annotations

import torch
import transformers as tf

import universality as uv
from universality import sae
from universality.analysis.attribution import attribution_graph

X, Y, D, D_MLP, VOCAB = 5, 7, 32, 16, 97


def _directions(gen: torch.Generator) -> torch.Tensor:
    """Three orthonormal directions [3, D], each orthogonal to the all-ones vector (LayerNorm keeps them)."""
    m = torch.randn(D, 3, generator=gen)
    m = m - m.mean(0, keepdim=True)
    q, _ = torch.linalg.qr(m)
    return q.t()


def _planted_gpt2(path) -> tuple[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=2, n_head=4, n_inner=D_MLP, n_positions=32,
                        activation_function="relu", tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    model = tf.GPT2LMHeadModel(cfg).eval()
    a, b, c = _directions(gen)
    with torch.no_grad():
        base = model.transformer
        base.wte.weight.copy_(0.1 * torch.randn(VOCAB, D, generator=gen))
        base.wte.weight[X] += 4 * a
        base.wpe.weight.zero_()
        for blk, (read, write) in zip(base.h, ((a, b), (b, c))):
            blk.attn.c_proj.weight.zero_()
            blk.attn.c_proj.bias.zero_()
            blk.mlp.c_fc.weight.copy_(0.1 * torch.randn(D, D_MLP, generator=gen))
            blk.mlp.c_fc.weight[:, 0] = 3 * read
            blk.mlp.c_fc.bias.copy_(-0.05 * torch.rand(D_MLP, generator=gen))
            blk.mlp.c_fc.bias[0] = -1.0
            blk.mlp.c_proj.weight.copy_(0.1 * torch.randn(D_MLP, D, generator=gen))
            blk.mlp.c_proj.weight[0] = 3 * write
            blk.mlp.c_proj.bias.zero_()
        model.lm_head.weight.copy_(0.1 * torch.randn(VOCAB, D, generator=gen))
        model.lm_head.weight[Y] = 5 * c
    model.save_pretrained(path)
    prompt = torch.tensor([11, 23, 42, 17, 60, 33, X])
    return str(path), prompt


def _exact_transcoders(host) -> list:
    out = []
    for i, blk in enumerate(host.model.transformer.h):
        cfg = sae.CoderConfig(kind="relu", d_in=D, n_latents=D_MLP, d_out=D, transcoder=True,
                              hook=f"blocks.{i}.mlp_in", target_hook=f"blocks.{i}.mlp_out")
        coder = sae.build_coder(cfg)
        with torch.no_grad():
            coder.W_enc.copy_(blk.mlp.c_fc.weight.t())
            coder.b_enc.copy_(blk.mlp.c_fc.bias)
            coder.W_dec.copy_(blk.mlp.c_proj.weight)
            coder.b_dec.copy_(blk.mlp.c_proj.bias)
        out.append(coder)
    return out


def test_top_path_is_the_planted_two_step_circuit(tmp_path):
    path, prompt = _planted_gpt2(tmp_path / "planted")
    host = uv.load_host(path)
    g = attribution_graph(host, prompt, _exact_transcoders(host))
    last = len(prompt) - 1
    assert int(g.logit_tokens[0]) == Y and float(g.logit_probabilities[0]) > 0.9
    expected = [g.logit_index(0), g.feature_index(1, last, 0), g.feature_index(0, last, 0), g.token_index(last)]
    assert -1 not in expected
    assert g.top_path() == expected
    assert float(g.error_norms.max()) < 1e-4  # the transcoders are the MLPs
    replacement, completeness = g.scores()
    assert replacement > 0.99 and completeness > 0.99
    kept = g.prune()
    assert all(bool(kept.node_mask[i]) for i in expected)
    for dst, src in zip(expected[:-1], expected[1:]):
        assert bool(kept.edge_mask[dst, src])
