"""TopK dictionary training speed on CPU: ours vs EleutherAI sparsify and a plain dense TopK in torch.

Setting (issue 4): d_in=512, 8192 latents, k=32, planted-mixture activations
(sparse non-negative combinations of random unit atoms plus noise), batches of
2048 tokens generated on the fly from a fixed seed, so every implementation sees
the same batches. Each trainer runs the same number of tokens with Adam at the
same learning rate; we report tokens/s and FVU on held-out activations after
equal tokens.

sparsify (``eai-sparsify``) is used when importable: put it on ``PYTHONPATH`` or
set ``SAE_BENCH_PEERS`` to a folder holding it (installed there with
``pip install --target DIR --no-deps eai-sparsify einops natsort simple-parsing accelerate``,
torch pinned). Its package ``__init__`` needs ``datasets``; we import its
``sparse_coder`` module directly instead.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import torch

from common import Figure

D_IN, N_LATENTS, K = 512, 8192, 32
N_ATOMS, ACTIVE = 4096, 24
BATCH = 2048
LR = 1e-3


class Planted:
    """Deterministic stream of planted-mixture batches [BATCH, D_IN]."""

    def __init__(self, n_batches: int, seed: int = 0):
        g = torch.Generator().manual_seed(1234)
        self.atoms = torch.randn(N_ATOMS, D_IN, generator=g)
        self.atoms /= self.atoms.norm(dim=1, keepdim=True)
        self.n_batches = n_batches
        self.seed = seed

    def batch(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        idx = torch.randint(0, N_ATOMS, (BATCH, ACTIVE), generator=g)
        mags = torch.empty(BATCH, ACTIVE).exponential_(1.0, generator=g)
        x = torch.nn.functional.embedding_bag(idx, self.atoms, per_sample_weights=mags, mode="sum")
        return x + 0.05 * torch.randn(BATCH, D_IN, generator=g)

    def __call__(self):
        return (self.batch(i) for i in range(self.n_batches))


def _fvu(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def _ours(data: Planted, held: torch.Tensor) -> tuple[float, float]:
    from universality import sae

    # AuxK off: sparsify's trainer default (auxk_alpha=0) and the dense baseline have none either
    cfg = sae.TrainerConfig(coders=[sae.CoderConfig(kind="topk", d_in=D_IN, n_latents=N_LATENTS, k=K, seed=0, aux_coefficient=0.0)],
                            batch_size=BATCH, n_tokens=BATCH * data.n_batches, lr=LR, device="cpu",
                            warmup_fraction=0.0, decay_fraction=0.0, b_dec_init="mean")
    t0 = time.perf_counter()
    res = sae.Trainer(cfg).fit(data)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        return BATCH * data.n_batches / dt, _fvu(res.coders[0](held), held)


class _DenseTopK(torch.nn.Module):
    """The textbook TopK autoencoder: dense pre-activations, dense codes, dense decoder matmul, plain autograd."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(N_LATENTS, D_IN, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        self.W_enc = torch.nn.Parameter(w.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(N_LATENTS))
        self.W_dec = torch.nn.Parameter(w.clone())
        self.b_dec = torch.nn.Parameter(torch.zeros(D_IN))

    def forward(self, x):
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        v, i = pre.topk(K, dim=1, sorted=False)
        codes = torch.zeros_like(pre).scatter(1, i, v)
        return codes @ self.W_dec + self.b_dec


def _renorm_for(W_dec):
    def renorm(before: bool):
        with torch.no_grad():
            if before:
                W_dec.grad.sub_((W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec)
            else:
                W_dec.div_(W_dec.norm(dim=1, keepdim=True))
    return renorm


def _import_sparsify():
    extra = os.environ.get("SAE_BENCH_PEERS")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    for base in sys.path:
        pkg_dir = Path(base or ".") / "sparsify"
        if (pkg_dir / "sparse_coder.py").is_file():
            break
    else:
        return None
    if "sparsify" not in sys.modules:
        pkg = types.ModuleType("sparsify")
        pkg.__path__ = [str(pkg_dir)]
        sys.modules["sparsify"] = pkg
    try:
        from sparsify.config import SparseCoderConfig
        from sparsify.sparse_coder import SparseCoder
    except ImportError:
        return None
    return SparseCoder, SparseCoderConfig


class _Interleaved:
    """One implementation's training state; ``step(x)`` trains on one batch and adds its seconds."""

    def __init__(self, name, model, loss_fn, renorm, opt=None):
        self.name, self.model, self.loss_fn, self.renorm = name, model, loss_fn, renorm
        self.opt = opt or torch.optim.Adam(model.parameters(), lr=LR)
        self.seconds = 0.0

    def step(self, x):
        t0 = time.perf_counter()
        loss = self.loss_fn(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.renorm(before=True)
        self.opt.step()
        self.renorm(before=False)
        self.seconds += time.perf_counter() - t0


def _ours_interleaved(first: torch.Tensor):
    """Our TopK coder driven by the trainer's step body (normalise, training_step, parallel-gradient removal, Adam, renormalise)."""
    from universality import sae
    from universality.sae.trainer import make_adam

    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=D_IN, n_latents=N_LATENTS, k=K, seed=0, aux_coefficient=0.0))
    scale = (D_IN / float(first.pow(2).sum(1).mean())) ** 0.5
    coder.cfg.input_scale = coder.cfg.output_scale = scale
    with torch.no_grad():
        coder.b_dec.copy_(first.mean(0) * scale)

    def loss(x):
        xn = x * scale
        return coder.training_step(xn, xn, None, 1.0).loss

    def renorm(before):
        coder.before_step() if before else coder.after_step()

    # ours steps with the trainer's own optimiser (fused Adam where torch has it); the peers with torch's default Adam
    return _Interleaved("ours", coder, loss, renorm, make_adam(coder.parameters(), LR)), lambda h: coder(h)


def run(quick: bool) -> list[Figure]:
    """Train each implementation on the same planted batches; report tokens/s and held-out FVU.

    Two measurements: (1) steps of the three implementations interleaved batch by
    batch in one process (robust to a machine whose load changes over time; ours
    runs the trainer's step body); (2) our full ``Trainer.fit`` end to end, next
    to the interleaved figure of the peers.
    """
    n_batches = 12 if quick else 40
    data = Planted(n_batches)
    held = torch.cat([Planted(1, seed=99).batch(0) for _ in range(2)])
    first = data.batch(0)
    ours, ours_fwd = _ours_interleaved(first)
    dense = _DenseTopK()
    with torch.no_grad():
        dense.b_dec.copy_(first.mean(0))
    impls = [ours, _Interleaved("dense torch TopK", dense, lambda x: (dense(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum(),
                                _renorm_for(dense.W_dec))]
    forwards = {"ours": ours_fwd, "dense torch TopK": dense}
    lib = _import_sparsify()
    if lib is not None:
        SparseCoder, SparseCoderConfig = lib
        torch.manual_seed(0)
        sp = SparseCoder(D_IN, SparseCoderConfig(num_latents=N_LATENTS, k=K))
        with torch.no_grad():
            sp.b_dec.copy_(first.mean(0))
        impls.append(_Interleaved("sparsify", sp, lambda x: sp(x).fvu, _renorm_for(sp.W_dec)))
        forwards["sparsify"] = lambda h: sp.decode(*sp.encode(h)[:2])
    for i, x in enumerate(data()):
        for impl in (impls if i % 2 == 0 else impls[::-1]):  # alternate the order too
            impl.step(x)
    tokens = BATCH * n_batches
    results = {}
    for impl in impls:
        with torch.no_grad():
            results[impl.name] = (tokens / impl.seconds, _fvu(forwards[impl.name](held), held))
        print(f"  [interleaved] {impl.name}: {results[impl.name][0]:,.0f} tokens/s, held-out FVU {results[impl.name][1]:.3f} after {tokens:,} tokens", flush=True)
    full_tps, full_fvu = _ours(data, held)
    print(f"  [end to end] ours Trainer.fit: {full_tps:,.0f} tokens/s, held-out FVU {full_fvu:.3f}", flush=True)

    ours_tps, ours_fvu = results["ours"]
    peer = max((n for n in results if n != "ours"), key=lambda n: results[n][0])
    figs = [Figure("sae topk train tokens/s (d=512, 8K latents, k=32) vs fastest peer, interleaved", ours_tps, "tokens/s",
                   peer, results[peer][0], goal_ratio=1.5, goal_value=12_000),
            Figure("sae topk Trainer.fit tokens/s end to end vs fastest peer (interleaved)", full_tps, "tokens/s", peer, results[peer][0])]
    for name, (tps, fvu) in results.items():
        if name != "ours":
            figs.append(Figure(f"sae topk tokens/s vs {name}, interleaved", ours_tps, "tokens/s", name, tps))
            figs.append(Figure(f"sae topk held-out FVU after equal tokens vs {name}", ours_fvu, "FVU", name, fvu,
                               higher_is_better=False, goal_ratio=1.0 if name == "sparsify" else None))
    return figs
