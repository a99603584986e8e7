"""Joint dictionary (crosscoder) training speed on CPU: ours vs our single SAE of the same encoder width and a dense torch crosscoder.

Setting (issue 14): two models of width 512 each, 16384 latents, k=64 (BatchTopK),
batches of 2048 aligned rows. The two models' rows are sparse mixtures of shared
atoms (each with its own random embedding in each model) plus noise, generated
from a fixed seed so every implementation sees the same batches.

Figures (all in one process, steps interleaved batch by batch and the order
alternated, so a change of load on the machine hits every implementation alike):

1. our crosscoder (``kind="crosscoder"``, the trainer's step body including the
   per-model scaling and concatenation) vs our single BatchTopK SAE on the
   already concatenated rows (d_in = 1024, the same encoder width): goal ≥ 0.8×;
2. the same crosscoder vs a plain dense-decoder torch crosscoder (dense
   pre-activations, BatchTopK by a dense top-k, dense ``codes @ W_dec`` per model,
   plain autograd): goal ≥ 2×;
3. ``sae.fit_joint`` end to end (data reading, scaling, held-out metrics) vs
   ``sae.fit(kind="batchtopk")`` on the concatenated tensor, same tokens (informational).
"""

from __future__ import annotations

import time

import torch

from common import Figure

D, N_LATENTS, K = 512, 16384, 64
N_ATOMS, ACTIVE = 4096, 32
BATCH = 2048
LR = 1e-3


class PlantedPair:
    """Deterministic aligned batches of two models: the same sparse atom codes, a different embedding per model."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(4321)
        self.atoms = [torch.nn.functional.normalize(torch.randn(N_ATOMS, D, generator=g), dim=1) for _ in range(2)]
        self.seed = seed

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        idx = torch.randint(0, N_ATOMS, (BATCH, ACTIVE), generator=g)
        mags = torch.empty(BATCH, ACTIVE).exponential_(1.0, generator=g)
        return tuple(torch.nn.functional.embedding_bag(idx, a, per_sample_weights=mags, mode="sum") + 0.05 * torch.randn(BATCH, D, generator=g)
                     for a in self.atoms)


class _Stepper:
    """One implementation's training state; ``step(xa, xb)`` trains on one aligned batch and adds its seconds."""

    def __init__(self, name, loss_fn, params, before, after, opt=None):
        self.name, self.loss_fn, self.before, self.after = name, loss_fn, before, after
        self.opt = opt or torch.optim.Adam(params, lr=LR)
        self.seconds = 0.0

    def step(self, xa, xb):
        t0 = time.perf_counter()
        loss = self.loss_fn(xa, xb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.before()
        self.opt.step()
        self.after()
        self.seconds += time.perf_counter() - t0


def _ours_joint(first):
    from universality import sae
    from universality.sae.trainer import make_adam

    cfg = sae.CoderConfig(kind="crosscoder", widths=[D, D], n_latents=N_LATENTS, k=K, seed=0, aux_coefficient=0.0)
    coder = sae.build_coder(cfg)
    scales = [(D / float(x.pow(2).sum(1).mean())) ** 0.5 for x in first]  # equal energy per model, as fit_joint does

    def loss(xa, xb):
        xn = torch.cat([xa * scales[0], xb * scales[1]], dim=1)
        return coder.training_step(xn, xn, None, 1.0).loss

    return _Stepper("ours crosscoder", loss, None, coder.before_step, coder.after_step, make_adam(coder.parameters(), LR))


def _ours_single(first):
    from universality import sae
    from universality.sae.trainer import make_adam

    coder = sae.build_coder(sae.CoderConfig(kind="batchtopk", d_in=2 * D, n_latents=N_LATENTS, k=K, seed=0, aux_coefficient=0.0))
    scale = (2 * D / float(torch.cat(first, 1).pow(2).sum(1).mean())) ** 0.5

    def loss(xa, xb):
        xn = torch.cat([xa, xb], dim=1) * scale  # the SAE reads rows that are already one tensor: concatenation not timed
        return coder.training_step(xn, xn, None, 1.0).loss

    stepper = _Stepper("ours single SAE", loss, None, coder.before_step, coder.after_step, make_adam(coder.parameters(), LR))
    return stepper


class _DenseCrosscoder(torch.nn.Module):
    """The textbook crosscoder: one dense encoder over both models, BatchTopK by a dense top-k, a dense decoder per model."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.nn.functional.normalize(torch.randn(N_LATENTS, 2 * D, generator=g), dim=1)
        self.W_enc = torch.nn.Parameter(w.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(N_LATENTS))
        self.W_dec = torch.nn.ParameterList([torch.nn.Parameter(w[:, :D].clone()), torch.nn.Parameter(w[:, D:].clone())])
        self.b_dec = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(D)) for _ in range(2)])

    def loss(self, xa, xb):
        x = torch.cat([xa - self.b_dec[0], xb - self.b_dec[1]], dim=1)
        pre = torch.relu(x @ self.W_enc.T + self.b_enc)
        v, i = pre.reshape(-1).topk(K * pre.shape[0], sorted=False)
        codes = torch.zeros_like(pre).reshape(-1).scatter(0, i, v).reshape(pre.shape)
        ra, rb = codes @ self.W_dec[0] + self.b_dec[0], codes @ self.W_dec[1] + self.b_dec[1]
        return ((ra - xa).pow(2).sum() + (rb - xb).pow(2).sum()) / (xa.shape[0] * 2 * D)

    def renorm(self, before: bool):
        with torch.no_grad():
            wa, wb = self.W_dec[0], self.W_dec[1]
            norm = (wa.pow(2).sum(1, keepdim=True) + wb.pow(2).sum(1, keepdim=True)).sqrt().clamp_min(1e-8)
            if before:
                dot = (wa.grad * wa).sum(1, keepdim=True) + (wb.grad * wb).sum(1, keepdim=True)
                wa.grad.sub_(dot * wa)
                wb.grad.sub_(dot * wb)
            else:
                wa.div_(norm)
                wb.div_(norm)


def _end_to_end(n_batches: int) -> tuple[float, float]:
    """Tokens/s of ``fit_joint`` on two [n, 512] tensors and of ``sae.fit`` on their [n, 1024] concatenation."""
    from universality import sae
    from universality._progress import set_quiet

    set_quiet(True)
    data = PlantedPair(seed=5)
    parts = [data.batch(i) for i in range(n_batches)]
    xa, xb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    n = xa.shape[0]
    tokens = (n - n // 10) // BATCH * BATCH  # what remains after the held-out tenth, in whole batches
    t0 = time.perf_counter()
    sae.fit_joint([xa, xb], kind="crosscoder", n_latents=N_LATENTS, k=K, seed=0, batch_size=BATCH, n_tokens=tokens, lr=LR,
                  device="cpu", aux_coefficient=0.0)
    joint = tokens / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    sae.fit(torch.cat([xa, xb], 1), kind="batchtopk", n_latents=N_LATENTS, k=K, seed=0, batch_size=BATCH, n_tokens=tokens, lr=LR,
            device="cpu", aux_coefficient=0.0)
    single = tokens / (time.perf_counter() - t0)
    return joint, single


def run(quick: bool) -> list[Figure]:
    """Interleaved training steps of the three implementations, then the end-to-end calls."""
    n_batches = 4 if quick else 12
    data = PlantedPair()
    first = data.batch(0)
    dense = _DenseCrosscoder()
    impls = [_ours_joint(first), _ours_single(first),
             _Stepper("dense torch crosscoder", dense.loss, dense.parameters(), lambda: dense.renorm(True), lambda: dense.renorm(False))]
    data.batch(0)
    for impl in impls:  # one untimed warm-up step each
        impl.step(*first)
        impl.seconds = 0.0
    for i in range(1, n_batches + 1):
        xa, xb = data.batch(i)
        for impl in (impls if i % 2 else impls[::-1]):
            impl.step(xa, xb)
    tps = {impl.name: BATCH * n_batches / impl.seconds for impl in impls}
    setting = f"d {D}+{D}, {N_LATENTS} latents, k={K}, batch {BATCH}"
    figs = [
        Figure(f"crosscoder training tokens/s ({setting})", tps["ours crosscoder"], "tokens/s",
               "our single BatchTopK SAE, d_in 1024 (same encoder width)", tps["ours single SAE"], goal_ratio=0.8),
        Figure(f"crosscoder training tokens/s ({setting})", tps["ours crosscoder"], "tokens/s",
               "plain dense-decoder torch crosscoder", tps["dense torch crosscoder"], goal_ratio=2.0),
    ]
    joint, single = _end_to_end(6 if quick else 12)
    figs.append(Figure(f"fit_joint end to end tokens/s ({setting})", joint, "tokens/s", "sae.fit batchtopk on the concatenation", single))
    return figs
