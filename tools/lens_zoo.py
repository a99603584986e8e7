"""Print the logit- and tuned-lens KL per block for every architecture of a zoo preset (issue 18's zoo check).

    python tools/lens_zoo.py [--preset default] [--members transformer,mamba,mamba2,rwkv] [--steps 250]

Uses the ``lens`` command's defaults (65,536 training tokens, 4,096 held-out tokens, 250 steps of 512 tokens) and
says, per model, whether the tuned lens's KL is below the logit lens's at every block but the last.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from universality import load_host, zoo
    from universality.analysis.lens import TunedLensConfig, lens_curves, train_tuned_lens
    from universality.data import StreamConfig, context_length, load_corpus, make_stream

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--members", default="transformer,mamba,mamba2,rwkv")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--n-tokens", type=int, default=65536)
    args = ap.parse_args(argv)
    names = args.members.split(",")
    paths = zoo.ensure_zoo(args.preset, only=names)
    corpus = load_corpus("default")
    all_below = True
    for name in names:
        host = load_host(str(paths[name]), device="cpu")
        seq = min(64, context_length(host) or 64)
        train = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(args.n_tokens, seq_len=seq, split="train"))
        held = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(4096, seq_len=seq, split="heldout"))
        t0 = time.perf_counter()
        lens = train_tuned_lens(host, train.tokens, train.mask, TunedLensConfig(steps=args.steps))
        seconds = time.perf_counter() - t0
        res = lens_curves(host, held.tokens, held.mask, tuned=lens, name=name)
        logit, tuned = res.curve("logit"), res.curve("tuned")
        below = all(t < g for t, g in zip(tuned.kl[:-1], logit.kl[:-1]))
        all_below &= below
        print(f"{name} ({host.arch}, {host.n_layers} blocks, trained in {seconds:.1f} s, identity kept at "
              f"{lens.info['identity_layers']}): tuned below logit at every block but the last: {below}")
        print("  block       " + " ".join(f"{i:>7d}" for i in range(host.n_layers)))
        for c in (logit, tuned):
            print(f"  {c.lens + ' KL':<11} " + " ".join(f"{k:7.3f}" for k in c.kl))
        print(f"  {'tuned top1':<11} " + " ".join(f"{k:7.3f}" for k in tuned.top1))
        print(f"  {'logit top1':<11} " + " ".join(f"{k:7.3f}" for k in logit.top1), flush=True)
        print(f"  markdown ({name}, held-back KL of the kept translators {[round(k, 4) for k in lens.info['heldback_kl']]}, "
              f"kept steps {lens.info['kept_steps']}):")
        cell = lambda m, ci: f"{m:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        for i in range(host.n_layers):
            mark = "" if i == host.n_layers - 1 else (" ✓" if tuned.kl[i] < logit.kl[i] else " ✗")
            print(f"  | {name} | {i} | {cell(logit.kl[i], logit.kl_ci[i])} | {cell(tuned.kl[i], tuned.kl_ci[i])}{mark} | "
                  f"{logit.top1[i]:.3f} / {tuned.top1[i]:.3f} |", flush=True)
    return 0 if all_below else 1


if __name__ == "__main__":
    sys.exit(main())
