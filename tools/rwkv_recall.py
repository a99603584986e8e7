"""Train one RWKV-4 on the circuits preset's recipe with some levers changed, and say how many pairs it recalls.

    python tools/rwkv_recall.py [--width 64] [--blocks 2] [--channels 64] [--embedding-std 0] [--lr 4e-3] [--batch 16]
                                [--curriculum-steps 2250] [--copy-len 32] [--hold 1000] [--double-every 250]
                                [--language-steps 600] [--prior none|last|all] [--tie-rk] [--key-gain 1]
                                [--decay-range -7 -3] [--bonus -2]

The experiments behind docs/zoo.md's "Third round" and "Fourth round" (RWKV-4's recall). ``--prior all --tie-rk
--key-gain 2 --embedding-std 0.125`` is :func:`universality.zoo.models.init_rwkv_for_recall` as the circuits preset
uses it. It uses the circuits zoo's tokenizer,
training data, batch makers and learning-rate schedule (builds the untrained RWKV member if needed), one thread,
and prints the copy loss every ``--every`` steps, then the zoo's probe (:func:`universality.zoo.train.evaluate`)
and recall of 64-id rows by period (:func:`universality.zoo.recall_by_period`) as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time


def _count(text: str) -> int:
    """argparse type: a non-negative integer, or one sentence saying what is valid."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; use a non-negative integer")
    return value


def main(argv: list[str] | None = None) -> int:
    from universality import UniversalityError

    try:
        return _run(argv)
    except UniversalityError as err:  # a bad flag value: one sentence, no traceback
        print(f"rwkv_recall.py: {err}", file=sys.stderr)
        return 2


def _run(argv: list[str] | None) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from universality import zoo
    from universality.data.tokenizing import special_ids
    from universality.hosts.registry import host_class
    from universality.zoo import train as zt
    from universality.zoo.build import training_data
    from universality.zoo.models import hf_config, init_rwkv_for_recall

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=_count, default=64, help="residual width (hidden_size)")
    ap.add_argument("--blocks", type=_count, default=0, help="RWKV blocks; 0: the preset's (2)")
    ap.add_argument("--channels", type=_count, default=0, help="WKV channels (attention_hidden_size); 0: the width")
    ap.add_argument("--embedding-std", type=float, default=0.0, help="normal init std of the tied embeddings; 0: transformers' RWKV-4 init")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--batch", type=_count, default=16, help="rows per curriculum step")
    ap.add_argument("--curriculum-steps", type=_count, default=2250)
    ap.add_argument("--copy-len", type=_count, default=32, help="row length of the copy curriculum")
    ap.add_argument("--hold", type=_count, default=1000)
    ap.add_argument("--double-every", type=_count, default=250)
    ap.add_argument("--language-steps", type=_count, default=600)
    ap.add_argument("--seed", type=_count, default=0)
    ap.add_argument("--prior", choices=("none", "last", "all"), default="none",
                    help="recall prior in the last block or every block: key from the previous token, value and receptance "
                         "from the current one, slow decays, a negative bonus")
    ap.add_argument("--decay-range", type=float, nargs=2, default=(-7.0, -3.0), help="time_decay range under --prior")
    ap.add_argument("--bonus", type=float, default=-2.0, help="time_first under --prior")
    ap.add_argument("--tie-rk", action="store_true", help="receptance weights start as a copy of the key weights (prior blocks)")
    ap.add_argument("--key-gain", type=float, default=1.0, help="scale of the key weights at init (prior blocks)")
    ap.add_argument("--every", type=_count, default=250, help="steps between progress lines")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    base = zoo.get_preset("circuits")
    cur = zoo.CopyCurriculum(steps=args.curriculum_steps, seq_len=args.copy_len, batch=args.batch, start_ids=64, hold=args.hold,
                             double_every=args.double_every)
    p = dataclasses.replace(base, lr=args.lr, steps=args.language_steps, copy_warmup_by_arch=(("rwkv", cur),))
    folder = zoo.ensure_zoo(base, only=["rwkv-untrained"])["rwkv-untrained"]
    tok = AutoTokenizer.from_pretrained(folder)
    data = training_data(base, tok)
    ids = special_ids(tok)
    config = hf_config("rwkv", dataclasses.replace(base, d_model=args.width, n_layers=args.blocks or base.n_layers), len(tok), ids.eos, ids.pad)
    config.attention_hidden_size = args.channels or args.width
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config).float()
    if args.prior != "none":
        init_rwkv_for_recall(model, args.embedding_std or None, last_blocks=1 if args.prior == "last" else None,
                             tie_receptance=args.tie_rk, key_gain=args.key_gain, decay_range=tuple(args.decay_range),
                             bonus=args.bonus)
    elif args.embedding_std:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, args.embedding_std)
    host = host_class("rwkv")(model, tok, name_or_path="rwkv-recall")

    decay = [q for q in model.parameters() if q.dim() >= 2]
    other = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=p.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    warm, n = cur.steps, cur.steps + p.steps
    t0, c0, window = time.perf_counter(), time.process_time(), []
    model.train()
    for step in range(n):
        for group in opt.param_groups:
            group["lr"] = zt._lr(step, p, warm)
        tokens = zt.make_copy_batch(data, p, gen, "rwkv", step) if step < warm else zt.make_batch(data, p, gen)
        loss = zt.lm_loss(host.run_with_hooks(tokens, {}), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(float(loss.detach()))
        if (step + 1) % max(1, args.every) == 0 or step + 1 == n:
            phase = f"ids {cur.ids_at(step, data.vocab_size - data.n_special)}" if step < warm else "language"
            print(f"step {step + 1}/{n} ({phase}): loss {sum(window) / len(window):.3f}, "
                  f"{time.process_time() - c0:.0f} CPU s", flush=True)
            window = []
    model.eval()
    recall = zoo.recall_by_period(host, data.n_special, 64)
    ev = zt.evaluate(host, data)
    print(json.dumps({**vars(args), **ev.as_dict(), "recall_64_ids": {r.period: [round(r.loss, 3), round(r.top1, 3)] for r in recall},
                      "cpu_seconds": round(time.process_time() - c0), "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
