"""Hand-built models with a known circuit: ground truth for the circuit analyses.

:func:`induction_mamba` sets the weights of a two-block ``MambaForCausalLM`` so that it
does induction exactly, through the mechanism the reference paper reports for trained
Mambas: a causal convolution shifts the previous token by one position, and one layer's
SSM state stores ``previous token → current token`` pairs that the last position reads back.

Residual layout (``V`` = vocabulary, ``d_model = 3V + 1``)::

    [0, V)      E: one-hot of the current token (the embedding)
    [V, 2V)     P: one-hot of the previous token (written by block 0 when prev_token_layer == 0)
    [2V, 3V)    O: the retrieved next token (written by block 1, read by the LM head)
    3V          a constant 1 (feeds the gates)

Block 1 (the induction layer), per position ``t``: ``B_t`` = one-hot of token ``t-1``,
``C_t`` = one-hot of token ``t``, ``x_t`` = one-hot of token ``t``, ``Δ = 1``, ``A ≈ 0``
(no decay) and ``D = 0``. So its state after ``t`` is ``h = Σ_{u≤t} x_u ⊗ B_u`` and its read-out
``y_T = h·C_T`` is the sum of one-hots of every token that followed an earlier copy of
token ``T``: with distinct tokens and ``V ≤ d_state`` that is exactly the induction target.
"""

from __future__ import annotations

import math

import torch

from .._errors import UniversalityError


def induction_mamba(vocab_size: int = 32, prev_token_layer: int = 0, logit_scale: float = 4.0):
    """A two-block Mamba-1 that does induction exactly, with weights set by hand.

    Args:
        vocab_size: ``V``; also the SSM state size, so keys are exact one-hots (at least 4).
        prev_token_layer: where the previous-token shift happens. ``0``: block 0's causal conv
            (tap at lag 1) copies token ``t-1`` into the residual subspace ``P`` through the
            ``D`` skip (its SSM writes nothing) and block 1's ``B`` reads ``P``. ``1``: block 0 is
            inert (``out_proj`` = 0) and block 1's own conv shifts the key channels by one
            position (the paper's "conv as previous-token mixer" in the induction layer).
        logit_scale: LM-head weight on the retrieved subspace (larger: sharper predictions).

    Returns:
        ``MambaForCausalLM`` (float32, eval mode, untied embeddings, ``d_model = 3V + 1``,
        ``d_state = V``, conv kernel 4). Whatever the host, ``logits[:, T]`` for a prompt whose
        last token appeared before at ``s`` (all other tokens distinct) peak at the token at ``s+1``.
    """
    import transformers as tf

    V = vocab_size
    if isinstance(V, bool) or not isinstance(V, int) or V < 4:
        raise UniversalityError(f"induction_mamba vocab_size must be an integer of at least 4; got {vocab_size!r}")
    if prev_token_layer not in (0, 1):
        raise UniversalityError(f"induction_mamba prev_token_layer must be 0 or 1; got {prev_token_layer!r}")
    d = 3 * V + 1
    E, P, O, one = slice(0, V), slice(V, 2 * V), slice(2 * V, 3 * V), 3 * V
    cfg = tf.MambaConfig(vocab_size=V, hidden_size=d, state_size=V, num_hidden_layers=2, expand=2, conv_kernel=4,
                         use_bias=False, use_conv_bias=True, tie_word_embeddings=False, use_cache=False,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = tf.MambaForCausalLM(cfg).float().eval()
    K = cfg.conv_kernel
    lag = lambda j: K - 1 - j  # conv weight index of the tap that reads position t - j
    eps = cfg.layer_norm_epsilon
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.backbone.embeddings.weight
        emb[:, E] = torch.eye(V)
        emb[:, one] = 1.0
        # RMS-normalised value of a unit entry: the residual holds 2 unit entries (E, 1) entering
        # block 0, and 3 (E, P, 1) entering block 1 when block 0 writes P
        r0 = 1.0 / math.sqrt(2.0 / d + eps)
        r1 = 1.0 / math.sqrt((3.0 if prev_token_layer == 0 else 2.0) / d + eps)
        gate = 4.0  # pre-activation of every gate channel
        silu = lambda v: v / (1.0 + math.exp(-v))
        g = silu(gate)
        for i, layer in enumerate(model.backbone.layers):
            layer.norm.weight.fill_(1.0)
            m = layer.mixer
            m.A_log.fill_(-30.0)  # A = -exp(-30): no decay over any prompt
            m.dt_proj.bias.fill_(math.log(math.expm1(1.0)))  # Δ = softplus(bias) = 1
            d_in = m.in_proj.weight.shape[0] // 2
            m.in_proj.weight[d_in:, one] = gate / (r0 if i == 0 else r1)  # z: constant, silu(4) on every channel
        b0, b1 = model.backbone.layers[0].mixer, model.backbone.layers[1].mixer
        n_dt = b1.dt_proj.weight.shape[1]
        if prev_token_layer == 0:
            # block 0: channels [0, V) carry token t-1 (conv tap at lag 1); y = D x; out_proj writes P = 1
            b0.in_proj.weight[:V, E] = torch.eye(V)
            b0.conv1d.weight[:V, 0, lag(1)] = 1.0
            b0.D[:V] = 1.0
            b0.out_proj.weight[P, :V] = torch.eye(V) / (silu(r0) * g)
            key_src, key_lag = P, 0
        else:
            key_src, key_lag = E, 1
        # block 1: channels [0, V) value/query (current token), [V, 2V) key (previous token)
        b1.in_proj.weight[:V, E] = torch.eye(V)
        b1.in_proj.weight[V:2 * V, key_src] = torch.eye(V)
        b1.conv1d.weight[:V, 0, lag(0)] = 1.0
        b1.conv1d.weight[V:2 * V, 0, lag(key_lag)] = 1.0
        unit = silu(r1)  # conv_out of a one-hot entry
        b1.x_proj.weight[n_dt:n_dt + V, V:2 * V] = torch.eye(V) / unit  # B: one-hot of the previous token
        b1.x_proj.weight[n_dt + V:n_dt + 2 * V, :V] = torch.eye(V) / unit  # C: one-hot of the current token
        b1.out_proj.weight[O, :V] = torch.eye(V) / (unit * g)  # O = count of each retrieved token
        model.backbone.norm_f.weight.fill_(1.0)
        model.lm_head.weight[:, O] = torch.eye(V) * logit_scale
    return model
