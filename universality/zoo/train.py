"""Training and evaluating one zoo model through its host (differentiable ``run_with_hooks`` logits).

Batches are windows of the tokenized training split, with a share of rows
replaced by repeated segments (random tokens or text, tiled) so that induction
can form. Training checkpoints (weights, AdamW state, batch-generator state) are
written atomically every few steps; a rerun continues from the last one and
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._io import atomic_save_tensors, atomic_write_json, load_tensors
from .._progress import progress
from .presets import CopyCurriculum, ZooPreset


class EvalResult(NamedTuple):
    """What a zoo model reaches."""

    heldout_loss: float
    """Mean next-token cross-entropy (nats) on held-out text, EOS targets excluded."""
    unigram_loss: float
    """Cross-entropy of the add-one unigram model of the training tokens on the same targets."""
    induction_first: float
    """Mean loss on the first copy of repeated random sequences (no induction possible)."""
    induction_second: float
    """Mean loss on the second copy (excluding its first token)."""
    induction_accuracy: float
    """Top-1 accuracy on the second copy."""

    @property
    def induction_score(self) -> float:
        """Loss drop from the first copy to the second (nats); ~0 without induction."""
        return self.induction_first - self.induction_second

    def as_dict(self) -> dict:
        d = {k: round(float(v), 4) for k, v in self._asdict().items()}
        d["induction_score"] = round(self.induction_score, 4)
        return d


@dataclass
class TrainData:
    """Token material shared by every model of a zoo build."""

    pool: torch.Tensor
    """LongTensor [N]: EOS-joined training-split tokens."""
    heldout: torch.Tensor
    """LongTensor [n, seq_len]: held-out evaluation sequences."""
    heldout_mask: torch.Tensor
    """BoolTensor [n, seq_len]: counted positions of ``heldout``."""
    repeats: torch.Tensor
    """LongTensor [n, 2L]: random sequences of L tokens, each repeated once (induction probe)."""
    vocab_size: int
    """Vocabulary size."""
    n_special: int
    """Ids below this are special (never sampled as random tokens)."""

    def unigram_logprobs(self) -> torch.Tensor:
        """Add-one-smoothed log-frequencies [vocab] of the training pool."""
        counts = torch.bincount(self.pool, minlength=self.vocab_size).double() + 1.0
        return (counts / counts.sum()).log()


def make_batch(data: TrainData, p: ZooPreset, gen: torch.Generator) -> torch.Tensor:
    """One training batch [batch_size, seq_len] drawn with ``gen`` (windows + repeated segments)."""
    b, t = p.batch_size, p.seq_len
    starts = torch.randint(0, data.pool.numel() - t, (b,), generator=gen)
    batch = torch.stack([data.pool[s:s + t] for s in starts.tolist()])
    is_rep = torch.rand(b, generator=gen) < p.repeat_fraction
    lengths = torch.randint(4, t // 2 + 1, (b,), generator=gen)
    use_text = torch.rand(b, generator=gen) >= p.repeat_random_share
    random_rows = torch.randint(data.n_special, data.vocab_size, (b, t), generator=gen)
    tiled = tile_segments(torch.where(use_text.unsqueeze(1), batch, random_rows), lengths)
    return torch.where(is_rep.unsqueeze(1), tiled, batch)


def make_copy_batch(data: TrainData, p: ZooPreset, gen: torch.Generator, arch: str = "gpt_neox", step: int = 0) -> torch.Tensor:
    """One copy warm-up batch [batch, seq_len] of ``arch``'s curriculum (:meth:`ZooPreset.curriculum`) at warm-up
    step ``step``: each row a uniform-random segment of 4 to seq_len/2 tokens tiled over the row (nothing but
    in-context copying can predict it), its tokens drawn from the curriculum's id range at that step."""
    cur = p.curriculum(arch) or p.curriculum("gpt_neox") or CopyCurriculum(1, p.copy_warmup_seq_len, p.copy_warmup_batch)
    b, t = cur.batch, cur.seq_len
    n_ids = cur.ids_at(step, data.vocab_size - data.n_special)
    rows = torch.randint(data.n_special, data.n_special + n_ids, (b, t), generator=gen)
    return tile_segments(rows, torch.randint(4, t // 2 + 1, (b,), generator=gen))


def tile_segments(rows: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """[b, t]: row i of ``rows`` [b, t] with its first ``periods[i]`` tokens repeated over the whole row."""
    cols = torch.arange(rows.shape[1], device=rows.device)
    return rows.gather(1, cols.unsqueeze(0) % periods.unsqueeze(1))


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits`` [b, t, V] for ``tokens`` [b, t] (targets where ``mask[:, 1:]``)."""
    per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1), reduction="none")
    if mask is None:
        return per.mean()
    m = mask[:, 1:].reshape(-1).to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1)


def copy_warmup_steps(p: ZooPreset, arch: str) -> int:
    """Copy warm-up steps a trained member of architecture ``arch`` gets under ``p`` (0 without a curriculum)."""
    cur = p.curriculum(arch)
    return cur.steps if cur else 0


def total_steps(p: ZooPreset, arch: str) -> int:
    """Optimizer steps of one trained member: its copy warm-up, then the language mix."""
    return copy_warmup_steps(p, arch) + p.steps


def tokens_per_member(p: ZooPreset, arch: str) -> int:
    """Training tokens one trained member sees (copy warm-up included)."""
    cur = p.curriculum(arch)
    return (cur.steps * cur.batch * cur.seq_len if cur else 0) + p.steps * p.batch_size * p.seq_len


def _lr(step: int, p: ZooPreset, warmup: int) -> float:
    """Learning rate at ``step``: the ``warmup`` copy steps ramp up over 30 steps then hold the peak; the language
    phase has its own schedule (linear warm-up over 5 % of ``p.steps``, cosine decay to 10 %)."""
    if step < warmup:
        return p.lr * min(1.0, (step + 1) / 30)
    step -= warmup
    warm = max(1, p.steps // 20)
    if step < warm:
        return p.lr * (step + 1) / warm
    frac = (step - warm) / max(1, p.steps - warm)
    return p.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def evaluate(host: Any, data: TrainData, batch: int = 16) -> EvalResult:
    """Held-out loss, unigram loss and the induction probe for ``host`` (eval mode, no grad)."""
    host.model.eval()
    total, count = 0.0, 0.0
    for i in range(0, data.heldout.shape[0], batch):
        toks, mask = data.heldout[i:i + batch], data.heldout_mask[i:i + batch]
        logits = host.run_with_hooks(toks.to(host.device), {}).float().cpu()
        m = mask[:, 1:].reshape(-1).double()
        per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), toks[:, 1:].reshape(-1), reduction="none").double()
        total += float((per * m).sum())
        count += float(m.sum())
    uni = data.unigram_logprobs()
    targets = data.heldout[:, 1:].reshape(-1)
    m = data.heldout_mask[:, 1:].reshape(-1)
    unigram = float(-uni[targets[m]].mean())
    L = data.repeats.shape[1] // 2
    firsts, seconds, correct = [], [], []
    for i in range(0, data.repeats.shape[0], batch):
        toks = data.repeats[i:i + batch]
        logits = host.run_with_hooks(toks.to(host.device), {}).float().cpu()
        per = F.cross_entropy(logits[:, :-1].transpose(1, 2), toks[:, 1:], reduction="none")  # [b, 2L-1]
        firsts.append(per[:, :L - 1])
        seconds.append(per[:, L:])
        correct.append((logits[:, L:-1].argmax(-1) == toks[:, L + 1:]).float())
    return EvalResult(total / max(count, 1.0), unigram, float(torch.cat(firsts).mean()), float(torch.cat(seconds).mean()),
                      float(torch.cat(correct).mean()))


def _save_checkpoint(path: Path, model, opt, gen: torch.Generator, step: int, losses: list[float], tag: str) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}  # tied weights share memory
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"opt.{idx}.{key}"] = val if isinstance(val, torch.Tensor) else torch.tensor(val)
    tensors["gen_state"] = gen.get_state()
    atomic_save_tensors(path / "ckpt.safetensors", tensors)
    atomic_write_json(path / "ckpt.json", {"step": step, "losses": losses, "param_groups": sd["param_groups"], "tag": tag})


def _load_checkpoint(path: Path, model, opt, gen: torch.Generator, tag: str) -> tuple[int, list[float]]:
    meta_file, tens_file = path / "ckpt.json", path / "ckpt.safetensors"
    if not meta_file.is_file() or not tens_file.is_file():
        return 0, []
    meta = json.loads(meta_file.read_text())
    if meta.get("tag") != tag:
        return 0, []
    t = load_tensors(tens_file)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    gen.set_state(t["gen_state"])
    return int(meta["step"]), list(meta["losses"])


def train_model(host: Any, data: TrainData, p: ZooPreset, seed: int, work: Path, tag: str, desc: str = "") -> list[float]:
    """Train ``host.model`` in place: its copy warm-up steps (:func:`copy_warmup_steps`), then ``p.steps`` steps of the
    language mix (each phase with its own learning-rate schedule, :func:`_lr`); checkpoints under ``work``. Returns the loss per step."""
    model = host.model
    decay = [q for q in model.parameters() if q.dim() >= 2]
    other = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=p.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(10_000 + seed)
    work.mkdir(parents=True, exist_ok=True)
    start, losses = _load_checkpoint(work, model, opt, gen, tag)
    model.train()
    arch = model.config.model_type
    warmup, n = copy_warmup_steps(p, arch), total_steps(p, arch)
    bar = progress(range(start, n), total=n, initial=start, desc=desc or "training", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, p, warmup)
        tokens = (make_copy_batch(data, p, gen, arch, step) if step < warmup else make_batch(data, p, gen)).to(host.device)
        with autocast(host, p):
            logits = host.run_with_hooks(tokens, {})
        loss = lm_loss(logits, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(round(float(loss.detach()), 4))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if (step + 1) % p.checkpoint_every == 0 and step + 1 < n:
            _save_checkpoint(work, model, opt, gen, step + 1, losses, tag)
    model.eval()
    return losses


AUTOCAST_ARCHS = ("gpt_neox", "rwkv")
"""Architectures whose training pass runs under bfloat16 autocast when the preset asks for it (the Mamba
hosts' fused CPU ops are float32 autograd functions, and their scans run in float32 anyway)."""


def training_precision(p: ZooPreset, model_type: str) -> str:
    """``"bfloat16-autocast"`` or ``"float32"``: how a member of ``model_type`` trains under preset ``p``.

    ``p.bf16`` must already be resolved for this machine (:func:`~universality.zoo.presets.resolve_precision`).
    """
    return "bfloat16-autocast" if p.bf16 and model_type in AUTOCAST_ARCHS else "float32"


def autocast(host: Any, p: ZooPreset):
    """bfloat16 mixed precision for a training forward (weights, optimizer state and loss stay float32), or a no-op.

    On for hosts of :data:`AUTOCAST_ARCHS` when the resolved ``p.bf16`` is set: with AMX the block
    matmuls run about 1.3-1.5x faster at width 192 (step timings in docs/zoo.md); on AVX2-only CPUs
    bfloat16 is emulated and hundreds of times slower, so the precision probe leaves it off there.
    """
    on = training_precision(p, host.model.config.model_type) != "float32"
    return torch.autocast(host.device.type, dtype=torch.bfloat16, enabled=on)


def clock() -> float:
    """Wall-clock seconds (kept in one place so builds report consistent times)."""
    return time.perf_counter()


def cpu_seconds() -> float:
    """CPU seconds used by this process so far (all threads)."""
    return time.process_time()

