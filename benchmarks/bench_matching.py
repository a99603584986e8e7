"""Matching benchmarks: sparse MPPC vs the dense float32 cross-product, sparse-Hungarian vs dense scipy.

Each figure's baseline is measured in the same process. The dense MPPC baseline
costs the same per token at any token count, so it is timed on a slice of the
tokens and scaled linearly to the full count (stated in the figure name).
Set ``MATCHING_BENCH_HUGE=1`` to add the 32K x 32K / 1M-token MPPC and the
131K-latent assignment figures (planted and random; minutes each, each in a child process so its peak RSS
is its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

from common import Figure, best_time

from universality.matching import assign, cosine_factors, mppc
from universality.precision import cpu_description


def random_topk_codes(rng: np.random.Generator, n_tokens: int, n_latents: int, k: int) -> sp.csr_matrix:
    """[n_tokens, n_latents] CSR codes with k active latents per token (uniform), values in (0.1, 1.1)."""
    # k distinct indices per token: a random base plus k increasing random offsets (wrapping around)
    base = rng.integers(0, n_latents, size=(n_tokens, 1))
    steps = rng.integers(1, max(2, n_latents // k), size=(n_tokens, k)).cumsum(1)
    idx = ((base + steps) % n_latents).astype(np.int32)
    val = (rng.random((n_tokens, k)) + 0.1).astype(np.float32)
    m = sp.csr_matrix((val.ravel(), idx.ravel(), np.arange(0, n_tokens * k + 1, k)), shape=(n_tokens, n_latents))
    m.sort_indices()
    return m


def dense_seconds_per_token(a: sp.csr_matrix, b: sp.csr_matrix, tokens: int) -> float:
    """Seconds per token of the published dense method: float32 Aᵀ B on dense code chunks."""
    da = torch.from_numpy(a[:tokens].toarray())
    db = torch.from_numpy(b[:tokens].toarray())
    return best_time(lambda: da.T @ db, repeat=2, warmup=0) / tokens


def reference_error(a: sp.csr_matrix, b: sp.csr_matrix, result, n_rows: int = 32) -> float:
    """Max |r − r_ref| over a sample of A's features, r_ref from centred float64 sums computed with scipy."""
    rng = np.random.default_rng(1)
    rows = rng.choice(a.shape[1], n_rows, replace=False)
    n = a.shape[0]
    sub = a[:, rows].astype(np.float64).toarray()
    sub_c = sub - sub.mean(0)
    b64 = b.astype(np.float64)
    mb = np.asarray(b64.mean(0)).ravel()
    cross = (b64.T @ sub_c).T  # Σ (a − ā) b = Σ (a − ā)(b − b̄)
    sb = np.sqrt(np.asarray(b64.multiply(b64).sum(0)).ravel() - n * mb * mb)
    sa = np.linalg.norm(sub_c, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cross / np.outer(sa, sb)
    r[:, sb == 0] = -np.inf
    return float(np.abs(r.max(1) - result.a_to_b.max_r.numpy()[rows]).max())


def mppc_figures(n_tokens: int, n_latents: int, k: int, dense_tokens: int, goal_ratio: float | None) -> list[Figure]:
    rng = np.random.default_rng(0)
    a = random_topk_codes(rng, n_tokens, n_latents, k)
    b = random_topk_codes(rng, n_tokens, n_latents, k)
    mppc(a[:2000], b[:2000], sparse=True)  # compile the kernel outside the timing
    t0 = time.perf_counter()
    res = mppc(a, b, sparse=True)
    ours = time.perf_counter() - t0
    err = reference_error(a, b, res)
    dense = dense_seconds_per_token(a, b, dense_tokens) * n_tokens
    print(f"  mppc {n_latents}x{n_latents}, {n_tokens} tokens: ours {ours:.2f} s, max |r - float64 ref| = {err:.2e}")
    return [Figure(f"MPPC {n_latents // 1024}K x {n_latents // 1024}K, k={k}, {n_tokens // 1000}K tokens (dense timed on "
                   f"{dense_tokens} tokens, scaled)", ours, "s", "dense float32 cross-product", dense,
                   higher_is_better=False, goal_ratio=goal_ratio)]


def peak_rss_kb() -> int:
    """This process's peak resident memory (kB) since it started (VmHWM). Not ``ru_maxrss``: Linux carries the
    parent's high-water mark into a forked-and-exec'd child's ``ru_maxrss``, so a child of a large parent reads high."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def _child_mppc_huge() -> None:
    """Run in a subprocess: 32K x 32K over 1M tokens; prints seconds and peak RSS."""
    rng = np.random.default_rng(0)
    a = random_topk_codes(rng, 1_000_000, 32768, 32)
    b = random_topk_codes(rng, 1_000_000, 32768, 32)
    mppc(a[:2000], b[:2000], sparse=True)
    base = peak_rss_kb()
    t0 = time.perf_counter()
    mppc(a, b, sparse=True)
    sec = time.perf_counter() - t0
    peak = peak_rss_kb()
    print(json.dumps({"seconds": sec, "peak_gb": peak / 1e6, "before_gb": base / 1e6}))


def dictionaries(n: int, d: int, cases: tuple[str, ...] = ("random", "planted")) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows of A [n, d] and B's: independent random rows, and A permuted plus noise (planted); float32,
    generated in row chunks so that no temporary as large as a dictionary is made."""
    rng = np.random.default_rng(0)
    chunks = range(0, n, 8192)

    def normal() -> np.ndarray:
        out = np.empty((n, d), dtype=np.float32)
        for s in chunks:
            out[s:s + 8192] = rng.standard_normal((min(8192, n - s), d), dtype=np.float32)
        return out

    wa = normal()
    out = {"random": normal()} if "random" in cases else {}
    if "planted" in cases:
        planted = normal()
        perm = rng.permutation(n)
        for s in chunks:
            planted[s:s + 8192] *= 0.5
            planted[s:s + 8192] += wa[perm[s:s + 8192]]
        out["planted"] = planted
    return wa, out


def warm_up_assign() -> None:
    """Load (or, on a fresh install, compile once) the numba kernels of sparse-Hungarian outside the timings."""
    wa, cases = dictionaries(3000, 256)
    for wb in cases.values():
        assign(cosine_factors(wa, wb), "sparse-hungarian", k=32)


def _child_assign_huge(case: str) -> None:
    """Run in a subprocess: sparse-Hungarian on 131K x 131K, d=768; prints seconds, peak RSS and the search."""
    warm_up_assign()
    wa, cases = dictionaries(131072, 768, (case,))
    wb = cases.pop(case)
    t0 = time.perf_counter()
    m = assign(cosine_factors(wa, wb), "sparse-hungarian", k=32)
    sec = time.perf_counter() - t0
    peak = peak_rss_kb()
    print(json.dumps({"seconds": sec, "peak_gb": peak / 1e6, "search": list(m.search.tried), "cpu": cpu_description(),
                      "recall": m.search.sampled_recall, "fallback": m.fallback, "mean_score": m.total / 131072}))


def assignment_figures(n: int, d: int, goal_ratio: float | None) -> list[Figure]:
    from scipy.optimize import linear_sum_assignment

    warm_up_assign()
    wa, cases = dictionaries(n, d)
    figs = []
    for name, wb in cases.items():
        f = cosine_factors(wa, wb)
        t0 = time.perf_counter()
        sim = f.dense().numpy()
        r, c = linear_sum_assignment(sim, maximize=True)
        dense_t = time.perf_counter() - t0
        opt = float(sim[r, c].astype(np.float64).sum())
        del sim
        times = []
        for _ in range(3):  # ours is cheap: its median over three runs
            t0 = time.perf_counter()
            m = assign(f, "sparse-hungarian", k=32)
            times.append(time.perf_counter() - t0)
        ours = float(np.median(times))
        gap = (opt - m.total) / abs(opt) * 100
        print(f"  assign {n} latents d={d} ({name}): ours {', '.join(f'{t:.3f}' for t in times)} s, dense scipy {dense_t:.2f} s, "
              f"total similarity {gap:+.5f} % below the optimum, fallback={m.fallback}, search={m.search.tried} "
              f"sampled recall={m.search.sampled_recall}")
        figs.append(Figure(f"assignment {n // 1024}K latents d={d} {name} (search {'->'.join(m.search.tried)}, "
                           f"{m.search.precision}; gap to optimum {gap:.4f} %)", ours, "s",
                           "dense scipy linear_sum_assignment", dense_t, higher_is_better=False, goal_ratio=goal_ratio))
    return figs


def run(quick: bool) -> list[Figure]:
    """Quick: small sizes (smoke). Full: the sizes of the issue's goals. Prints the CPU and bfloat16 decision first:
    the candidate search's precision (hence its speed) depends on them."""
    print(f"  cpu: {cpu_description()}", flush=True)
    if quick:
        return mppc_figures(20_000, 4096, 32, 1024, None) + assignment_figures(2048, 256, None)
    figs = mppc_figures(200_000, 16384, 32, 2048, 100.0) + assignment_figures(16384, 512, 10.0)
    if os.environ.get("MATCHING_BENCH_HUGE", "") not in ("", "0"):
        out = subprocess.run([sys.executable, __file__, "--child-mppc-huge"], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rng = np.random.default_rng(0)
        a = random_topk_codes(rng, 4096, 32768, 32)
        b = random_topk_codes(rng, 4096, 32768, 32)
        dense = dense_seconds_per_token(a, b, 1024) * 1_000_000
        figs.append(Figure("MPPC 32K x 32K, k=32, 1M tokens (dense scaled from 1024 tokens)", res["seconds"], "s",
                           "dense float32 cross-product", dense, higher_is_better=False, goal_value=30.0))
        figs.append(Figure("MPPC 32K x 32K peak RSS", res["peak_gb"], "GB", "4 GB budget", 4.0,
                           higher_is_better=False, goal_value=4.0))
        for case in ("planted", "random"):
            out = subprocess.run([sys.executable, __file__, "--child-assign-huge", case], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  assign 131K latents d=768 ({case}): {res}")
            figs.append(Figure(f"assignment 128K latents d=768 {case} (search {'->'.join(res['search'])})", res["seconds"], "s",
                               "5 min budget", 300.0, higher_is_better=False, goal_value=300.0))
            figs.append(Figure(f"assignment 128K latents d=768 {case} peak RSS", res["peak_gb"], "GB", "4 GB budget", 4.0,
                               higher_is_better=False, goal_value=4.0))
    return figs


if __name__ == "__main__" and "--child-mppc-huge" in sys.argv:
    _child_mppc_huge()
if __name__ == "__main__" and "--child-assign-huge" in sys.argv:
    _child_assign_huge(sys.argv[sys.argv.index("--child-assign-huge") + 1])
