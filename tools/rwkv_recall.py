"""Train one RWKV-4 on the circuits preset's recipe with some levers changed, and say how many pairs it recalls.

    python tools/rwkv_recall.py [--width 64] [--blocks 2] [--channels 64] [--embedding-std 0] [--lr 4e-3] [--batch 16]
                                [--curriculum-steps 2250] [--copy-len 32] [--hold 1000] [--double-every 250]
                                [--language-steps 600] [--prior none|last|all] [--tie-rk] [--key-gain 1]
                                [--decay-range -7 -3] [--bonus -2]

The experiments behind docs/zoo.md's "Third round" and "Fourth round" (RWKV-4's recall). ``--prior all --tie-rk
--key-gain 2 --embedding-std 0.125`` is :func:`universality.zoo.models.init_rwkv_for_recall` as the circuits preset
uses it. It uses the circuits zoo's tokenizer and training data (building the untrained RWKV member if needed),
one thread, and the zoo's own training loop (:func:`universality.zoo.train.train_model`: batch makers, schedule,
optimizer), so with the preset's flags it reproduces the build's member. It prints the mean training loss of every
``--every`` steps, then the zoo's probe (:func:`universality.zoo.train.evaluate`) and recall of 64-id rows by
period (:func:`universality.zoo.recall_by_period`) as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path


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

    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:  # the zoo's own training loop; its checkpoints are thrown away
        losses = zt.train_model(host, data, p, args.seed, Path(work), tag="rwkv-recall", desc="rwkv recall")
    warm, every = cur.steps, max(1, args.every)
    for end in [*range(every, len(losses), every), len(losses)]:
        window = losses[max(0, (end - 1) // every * every):end]
        phase = f"ids {cur.ids_at(end - 1, data.vocab_size - data.n_special)}" if end <= warm else "language"
        print(f"step {end}/{len(losses)} ({phase}): loss {sum(window) / len(window):.3f}")
    recall = zoo.recall_by_period(host, data.n_special, 64)
    ev = zt.evaluate(host, data)
    print(json.dumps({**vars(args), **ev.as_dict(), "recall_64_ids": {r.period: [round(r.loss, 3), round(r.top1, 3)] for r in recall},
                      "cpu_seconds": round(time.process_time() - c0), "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
