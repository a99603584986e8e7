"""Tuned-lens training time on a 4-layer zoo model, and the forwards steering costs.

Goals (issue 18): training a tuned lens for a 4-layer zoo model (the default preset's Transformer; RWKV is also
timed) takes ≤ 2 minutes on 2 cores, with the ``lens`` command's default settings (65,536 training tokens,
250 steps of 512 tokens). Baseline: one pass of both lenses' curves over 4,096 held-out tokens in the same
process. Steering adds at most one forward per prompt and multiplier: forwards are counted on the host while a
dose-response runs; the baseline is the one plain forward per prompt.
"""

from __future__ import annotations

import time

from common import Figure


def _lens_figures(path: str, label: str, n_tokens: int, steps: int) -> list[Figure]:
    from universality import load_host
    from universality.analysis.lens import TunedLensConfig, collect_streams, lens_curves, train_tuned_lens
    from universality.data import StreamConfig, context_length, load_corpus, make_stream

    host = load_host(path, device="cpu")
    corpus = load_corpus("default")
    seq = min(64, context_length(host) or 64)
    train = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(n_tokens, seq_len=seq, split="train"))
    held = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(4096, seq_len=seq, split="heldout"))
    t0 = time.perf_counter()
    lens = train_tuned_lens(host, train.tokens, train.mask, TunedLensConfig(steps=steps))
    trained = time.perf_counter() - t0
    t0 = time.perf_counter()
    lens_curves(host, held.tokens, held.mask, tuned=lens, streams=collect_streams(host, held.tokens, held.mask), n_boot=50)
    curves = time.perf_counter() - t0
    return [Figure(name=f"tuned lens training, {label} ({host.n_layers} blocks, {n_tokens} tokens, {steps} steps) (wall s)",
                   value=trained, unit="s", baseline="curves of both lenses on 4,096 held-out tokens", baseline_value=curves,
                   higher_is_better=False, goal_value=120.0)]


def _steering_figure() -> Figure:
    """Forwards per prompt and multiplier of a dose-response on tiny constructed RWKV and Mamba hosts (residual, RWKV
    state, Mamba SSM state and conv state)."""
    import torch
    import transformers as tf

    from universality.analysis.steer import PromptSet, contrast_vector, dose_response, token_class_mass
    from universality.hosts.mamba import MambaHost
    from universality.hosts.rwkv import RwkvHost

    torch.manual_seed(0)
    rwkv = RwkvHost(tf.RwkvForCausalLM(tf.RwkvConfig(vocab_size=64, hidden_size=32, attention_hidden_size=32,
                                                     intermediate_size=64, num_hidden_layers=2, rescale_every=0,
                                                     context_length=64)).eval())
    mamba = MambaHost(tf.MambaForCausalLM(tf.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2,
                                                         expand=2, conv_kernel=4)).eval())
    g = torch.Generator().manual_seed(1)
    make = lambda n: PromptSet([torch.randint(0, 64, (int(torch.randint(6, 20, (1,), generator=g)),), generator=g).tolist()
                                for _ in range(n)])
    pos, neg, prompts = make(16), make(16), make(40)
    mults = [0.0, 1.0, 2.0, 4.0]
    steered = 0
    for host, hooks in ((rwkv, ("blocks.1.resid_post", "blocks.1.att.state")),
                        (mamba, ("blocks.1.resid_post", "blocks.1.ssm.state", "blocks.1.ssm.conv_state"))):
        rows = {"n": 0}
        forward = host._forward

        def counted(tokens, run, forward=forward, rows=rows):
            rows["n"] += tokens.shape[0]
            return forward(tokens, run)

        host._forward = counted
        for hook in hooks:
            sv = contrast_vector(host, pos, neg, hook)
            rows["n"] = 0
            dose_response(host, sv, prompts, mults, token_class_mass([1, 2, 3]), "m", batch=16)
            steered = max(steered, rows["n"])
    per = steered / (len(prompts.prompts) * len(mults))
    return Figure(name="steering forwards per prompt and multiplier (dose-response: residual, RWKV state, Mamba SSM and "
                       "conv state)", value=per, unit="forwards", baseline="a plain forward: one per prompt",
                  baseline_value=1.0, higher_is_better=False, goal_value=1.0)


def run(quick: bool) -> list[Figure]:
    """Tuned-lens training time (test preset and fewer steps with ``quick``) and steering's forward count."""
    from universality import zoo

    preset = "test" if quick else "default"
    paths = zoo.ensure_zoo(preset, only=["transformer", "rwkv"])
    n_tokens, steps = (2048, 30) if quick else (65536, 250)
    figs = []
    for name in ("transformer", "rwkv"):
        figs += _lens_figures(str(paths[name]), f"{preset} zoo {name}", n_tokens, steps)
    figs.append(_steering_figure())
    return figs
