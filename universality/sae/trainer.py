"""The trainer: several dictionaries fitted from the same batches in one pass over the data.

Per step, every dictionary sees the same normalised batch; each has its own
Adam optimiser. Decoder rows are kept at unit norm (the gradient component
parallel to each row is removed before the step, rows renormalised after);
``b_dec`` starts at the geometric median (or mean) of the first batch; the
learning rate warms up linearly and decays linearly to zero at the end.
Checkpoints (optional) hold every parameter, optimiser moment and counter, and
a restarted run replays the data stream to the saved step and continues.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .._device import resolve_device
from .._errors import UniversalityError
from .._io import atomic_save_tensors, atomic_write_json, fingerprint, load_tensors, sha256_file
from .._progress import progress
from .coder import SparseCoder, build_coder
from .config import CoderConfig, TrainerConfig
from .metrics import Metrics, evaluate
from .registry import kind_settings
from .source import BatchStream


class TrainResult(NamedTuple):
    """What :meth:`Trainer.fit` returns."""

    coders: list[SparseCoder]
    """The trained dictionaries, in the order of ``TrainerConfig.coders``."""
    metrics: list[Metrics]
    """Final evaluation of each dictionary (on held-back rows of a tensor input, else on the last batches)."""
    history: list[dict[str, float]]
    """Logged training statistics: one dict per log interval and dictionary."""
    n_steps: int
    """Optimisation steps taken (including those of a resumed run)."""


def geometric_median(x: torch.Tensor, iters: int = 50, tol: float = 1e-6) -> torch.Tensor:
    """Geometric median of the rows of ``x`` [n, d] by Weiszfeld's iterations → [d]."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-8)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * y.norm().clamp_min(1e-12):
            y = y_new
            break
        y = y_new
    return y.float()


def lr_factor(step: int, total: int | None, warmup: float, decay: float) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, flat, linear decay to 0."""
    if total is None:
        return min(1.0, (step + 1) / 50)
    w = max(1, int(warmup * total)) if warmup > 0 else 0
    d = int(decay * total)
    if w and step < w:
        return (step + 1) / w
    if d and step >= total - d:
        return max(0.0, (total - step) / d)
    return 1.0


def default_lr(n_latents: int) -> float:
    """Adam learning rate scaled with dictionary size: ``2e-4 / sqrt(n_latents / 16384)``."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with betas (0.9, 0.999) over ``params``; torch's fused kernel where it has one (~3x faster on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


class Trainer:
    """Trains the dictionaries of a :class:`TrainerConfig` from one stream of activations."""

    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        dist = torch.distributed
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1

    # ----- data parallelism (torchrun) -----------------------------------------------------
    def _local_rows(self, t: torch.Tensor | None, step: int) -> torch.Tensor | None:
        """This rank's equal share of a global batch (every rank reads the same stream)."""
        if t is None or not self.distributed:
            return t
        if t.shape[0] % self.world:
            raise UniversalityError(
                f"the batch at step {step} has {t.shape[0]} rows, not divisible by the {self.world} processes; use a batch_size that is a multiple of the world size"
            )
        return t.chunk(self.world)[self.rank]

    def _average_gradients(self, coder: SparseCoder) -> None:
        """All-reduce every gradient to its mean over processes (what DistributedDataParallel does)."""
        if not self.distributed:
            return
        for p in coder.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(self.world)

    def _sync_after_step(self, coder: SparseCoder, fired: torch.Tensor) -> torch.Tensor:
        """Average floating buffers (BatchTopK threshold) and take the union of fired latents over processes."""
        if not self.distributed:
            return fired
        for b in coder.buffers():
            if b.is_floating_point():
                torch.distributed.all_reduce(b)
                b.div_(self.world)
        mask = torch.zeros(coder.cfg.n_latents, dtype=torch.int32, device=fired.device)
        mask[fired] = 1
        torch.distributed.all_reduce(mask, op=torch.distributed.ReduceOp.MAX)
        return mask.nonzero().squeeze(1)

    # ----- checkpoints -----------------------------------------------------------------
    def _ckpt_paths(self) -> tuple[Path, Path] | None:
        if not self.cfg.checkpoint_dir:
            return None
        d = Path(self.cfg.checkpoint_dir)
        return d / "checkpoint.json", d / "checkpoint.safetensors"

    def _run_key(self) -> str:
        d = self.cfg.to_dict()
        for k in ("checkpoint_dir", "checkpoint_every", "log_every", "device"):
            d.pop(k)
        return fingerprint(d)

    def _save_checkpoint(self, step, coders, opts, since_fired, history) -> None:
        paths = self._ckpt_paths()
        tensors: dict[str, torch.Tensor] = {}
        adam_steps = []
        for i, (c, o) in enumerate(zip(coders, opts)):
            for k, v in c.state_dict().items():
                tensors[f"coder{i}.{k}"] = v
            names = {id(p): n for n, p in c.named_parameters()}
            steps = {}
            for p in c.parameters():
                st = o.state.get(p)
                if st:
                    tensors[f"adam{i}.{names[id(p)]}.exp_avg"] = st["exp_avg"]
                    tensors[f"adam{i}.{names[id(p)]}.exp_avg_sq"] = st["exp_avg_sq"]
                    steps[names[id(p)]] = float(st["step"])
            adam_steps.append(steps)
            tensors[f"since_fired{i}"] = since_fired[i]
        atomic_save_tensors(paths[1], tensors)
        atomic_write_json(paths[0], {
            "step": step, "run": self._run_key(), "adam_steps": adam_steps, "history": history,
            "coders": [c.cfg.to_dict() for c in coders], "tensors_sha256": sha256_file(paths[1]),
        })

    def _load_checkpoint(self) -> dict[str, Any] | None:
        paths = self._ckpt_paths()
        if paths is None or not paths[0].is_file():
            return None
        import json

        meta = json.loads(paths[0].read_text())
        if meta.get("run") != self._run_key():
            raise UniversalityError(
                f"checkpoint folder '{self.cfg.checkpoint_dir}' holds a run with a different configuration; use a fresh folder or the same configuration"
            )
        if sha256_file(paths[1]) != meta["tensors_sha256"]:
            raise UniversalityError(f"checkpoint '{paths[1]}' does not match its checksum; delete the folder to start again")
        meta["tensors"] = load_tensors(paths[1], device=str(self.device))
        return meta

    # ----- training --------------------------------------------------------------------
    def fit(self, x: Any, target: torch.Tensor | None = None) -> TrainResult:
        """Train every configured dictionary on ``x`` (tensor [n, d_in], store, callable, iterable or :class:`BatchStream`).

        ``target`` [n, d_out] is a transcoder's target for a tensor ``x``
        (streams yield ``(x, y)`` pairs instead). Returns a :class:`TrainResult`.
        """
        cfg = self.cfg
        held_out = None
        if isinstance(x, BatchStream):
            stream = x
        else:
            if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] >= 20:
                n_eval = min(max(x.shape[0] // 10, 1), 32768)
                held_out = (x[-n_eval:], target[-n_eval:] if target is not None else None)
                x, target = x[:-n_eval], (target[:-n_eval] if target is not None else None)
            stream = BatchStream(x, cfg.batch_size, seed=cfg.seed, target=target, n_tokens=cfg.n_tokens)
        x0, y0 = stream.first()
        d_in, d_out = cfg.coders[0].d_in, cfg.coders[0].d_out
        if x0.shape[-1] != d_in:
            raise UniversalityError(f"the activations have width {x0.shape[-1]} but the dictionaries were configured with d_in={d_in}")
        if y0 is not None and y0.shape[-1] != d_out:
            raise UniversalityError(f"the target activations have width {y0.shape[-1]} but the dictionaries were configured with d_out={d_out}")
        if y0 is None and cfg.coders[0].transcoder:
            raise UniversalityError("the dictionaries are transcoders but the activations carry no target; pass target= or yield (x, y) pairs")
        dev = self.device
        total = stream.total_steps
        window = cfg.dead_window_tokens
        if stream.n_tokens is not None:
            window = min(window, max(stream.n_tokens // 5, stream.batch_size))

        # normalisation and b_dec from the first batch
        x0f = x0.to(dev, torch.float32)
        y0f = x0f if y0 is None else y0.to(dev, torch.float32)
        self._check_finite(x0f, 0)
        in_scale = math.sqrt(d_in / float(x0f.pow(2).sum(1).mean().clamp_min(1e-12))) if cfg.normalize else 1.0
        out_scale = in_scale if y0 is None else (math.sqrt(d_out / float(y0f.pow(2).sum(1).mean().clamp_min(1e-12))) if cfg.normalize else 1.0)
        yn0 = y0f * out_scale
        if cfg.b_dec_init == "geometric_median":
            b_dec0 = geometric_median(yn0[:4096])
        elif cfg.b_dec_init == "mean":
            b_dec0 = yn0.mean(0)
        else:
            b_dec0 = torch.zeros(d_out, device=dev)

        coders: list[SparseCoder] = []
        opts: list[torch.optim.Adam] = []
        base_lrs: list[float] = []
        for c in cfg.coders:
            c = CoderConfig.from_dict({**c.to_dict(), "input_scale": in_scale, "output_scale": out_scale, "hook": c.hook or cfg.hook})
            coder = build_coder(c).to(dev)
            with torch.no_grad():
                coder.b_dec.copy_(b_dec0)
            coder.train()
            coders.append(coder)
            lr = cfg.lr if cfg.lr is not None else default_lr(c.n_latents)
            base_lrs.append(lr)
            opts.append(make_adam(coder.parameters(), lr))
        since_fired = [torch.zeros(c.cfg.n_latents, dtype=torch.long, device=dev) for c in coders]
        history: list[dict[str, float]] = []
        start = 0

        ck = self._load_checkpoint()
        if ck is not None:
            start = int(ck["step"])
            history = list(ck["history"])
            t = ck["tensors"]
            for i, (c, o) in enumerate(zip(coders, opts)):
                c.cfg = CoderConfig.from_dict(ck["coders"][i])
                c.load_state_dict({k.split(".", 1)[1]: v for k, v in t.items() if k.startswith(f"coder{i}.")})
                for name, p in c.named_parameters():
                    if f"adam{i}.{name}.exp_avg" in t:
                        o.state[p] = {
                            "step": torch.tensor(ck["adam_steps"][i][name], dtype=torch.float32, device=p.device if o.defaults.get("fused") else "cpu"),
                            "exp_avg": t[f"adam{i}.{name}.exp_avg"].clone(),
                            "exp_avg_sq": t[f"adam{i}.{name}.exp_avg_sq"].clone(),
                        }
                since_fired[i] = t[f"since_fired{i}"].clone()

        tail: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        log_acc = [dict(sq=0.0, var=0.0, l0=0.0, aux=0.0, n=0) for _ in coders]
        bar = progress(total=total, desc="sae", unit="step", initial=start)
        step = 0
        try:
            for step, (xb, yb) in enumerate(stream):
                if step < start:
                    continue
                xb = self._local_rows(xb, step).to(dev, torch.float32, non_blocking=True)
                yb = self._local_rows(yb, step)
                self._check_finite(xb, step)
                xn = xb * in_scale
                if yb is None:
                    yn = xn
                else:
                    yb = yb.to(dev, torch.float32, non_blocking=True)
                    self._check_finite(yb, step, what="target")
                    yn = yb * out_scale
                if held_out is None:
                    tail = (tail + [(xb, yb)])[-4:]
                f = lr_factor(step, total, cfg.warmup_fraction, cfg.decay_fraction)
                sp = min(1.0, (step + 1) / max(1.0, cfg.sparsity_warmup_fraction * total)) if total else min(1.0, (step + 1) / 100)
                var_b = float((yn - yn.mean(0)).pow(2).sum())
                for i, (coder, opt) in enumerate(zip(coders, opts)):
                    dead = since_fired[i] >= window
                    out = coder.training_step(xn, yn, dead, sp)
                    if not torch.isfinite(out.loss):
                        raise UniversalityError(
                            f"training diverged at step {step} (dictionary {i}, hook {cfg.hook or 'unnamed'}): the loss is not finite; lower lr"
                        )
                    opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    self._average_gradients(coder)
                    coder.before_step()
                    for g in opt.param_groups:
                        g["lr"] = base_lrs[i] * f
                    opt.step()
                    coder.after_step()
                    fired = self._sync_after_step(coder, out.fired)
                    since_fired[i] += xb.shape[0] * self.world
                    since_fired[i][fired] = 0
                    acc = log_acc[i]
                    acc["sq"] += float(out.sq_err)
                    acc["var"] += var_b
                    acc["l0"] += out.l0
                    acc["aux"] += out.aux
                    acc["n"] += 1
                done = step + 1
                if done % cfg.log_every == 0 or done == total:
                    for i, acc in enumerate(log_acc):
                        n = max(acc["n"], 1)
                        rec = {
                            "step": done, "coder": i, "fvu": acc["sq"] / max(acc["var"], 1e-12), "l0": acc["l0"] / n,
                            "dead": float((since_fired[i] >= window).float().mean()), "auxk": acc["aux"] / n,
                        }
                        history.append(rec)
                        log_acc[i] = dict(sq=0.0, var=0.0, l0=0.0, aux=0.0, n=0)
                    r = history[-len(coders)]
                    bar.set_postfix(fvu=f"{r['fvu']:.3f}", l0=f"{r['l0']:.1f}", dead=f"{r['dead']:.2f}", auxk=f"{r['auxk']:.3f}")
                bar.update(1)
                if self._ckpt_paths() is not None and done % cfg.checkpoint_every == 0 and self.rank == 0:
                    self._save_checkpoint(done, coders, opts, since_fired, history)
        finally:
            bar.close()
        n_steps = max(step + 1, start)
        for c in coders:
            c.eval()
        if held_out is not None:
            metrics = [evaluate(c, held_out[0], held_out[1]) for c in coders]
        else:
            xs = torch.cat([t[0] for t in tail]) if tail else x0
            ys = torch.cat([t[1] for t in tail]) if tail and tail[0][1] is not None else None
            metrics = [evaluate(c, xs, ys) for c in coders]
        return TrainResult(coders=coders, metrics=metrics, history=history, n_steps=n_steps)

    def _check_finite(self, t: torch.Tensor, step: int, what: str = "activations") -> None:
        if not bool(torch.isfinite(t).all()):
            raise UniversalityError(
                f"the {what} batch at step {step} (hook {self.cfg.hook or 'unnamed'}) contains NaN or infinite values; clean the activations first"
            )


def fit(
    x: Any,
    kind: str = "topk",
    n_latents: int = 4096,
    k: int = 32,
    seed: int = 0,
    *,
    target: torch.Tensor | None = None,
    skip: bool = False,
    batch_size: int = 4096,
    n_tokens: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    hook: str | None = None,
    data_seed: int | None = None,
    **coder_options: Any,
) -> SparseCoder:
    """Train one dictionary with sensible defaults and return it.

    ``x``: tensor [n, d_in], activation store (``.batches``), callable or iterable
    of [batch, d_in] tensors (or ``(x, y)`` pairs). ``target`` [n, d_out] makes a
    transcoder (``skip=True`` adds the affine skip). ``kind``: any registered
    kind (built in: ``"topk"``, ``"batchtopk"``, ``"relu"``, ``"jumprelu"``);
    ``k`` goes to the kinds whose config has a ``k`` setting and is ignored by
    the others. Other settings of the kind's config (``l1_coefficient``,
    ``aux_k``, ...) pass through ``coder_options``; one the kind does not have
    is an error. ``data_seed`` sets the data order (default: ``seed``). The
    final metrics are in ``coder.metrics``.
    """
    own = {"k": k} if "k" in kind_settings(kind) else {}
    stream = BatchStream(x, batch_size, seed=seed if data_seed is None else data_seed, target=target, n_tokens=n_tokens)
    x0, y0 = stream.first()
    transcoder = y0 is not None
    if skip and not transcoder:
        raise UniversalityError("skip=True needs a target (a transcoder); pass target= or yield (x, y) pairs")
    ccfg = CoderConfig(
        kind=kind, d_in=int(x0.shape[-1]), n_latents=n_latents, d_out=int(y0.shape[-1]) if transcoder else None,
        transcoder=transcoder, skip=skip, seed=seed, hook=hook, **own, **coder_options,
    )
    tcfg = TrainerConfig(coders=[ccfg], batch_size=batch_size, n_tokens=n_tokens, lr=lr, seed=stream.seed, device=device, hook=hook)
    trainer = Trainer(tcfg)
    if isinstance(x, torch.Tensor):
        result = trainer.fit(x, target)
    else:
        result = trainer.fit(stream)
    coder = result.coders[0]
    coder.metrics = result.metrics[0]
    return coder


__all__ = ["Trainer", "TrainResult", "fit", "geometric_median", "default_lr", "lr_factor"]
