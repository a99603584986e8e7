"""Explanation benchmarks: the offline explainer and scorers at scale, and the chat client's throughput.

1. **Offline explainer + scorers over 16,384 latents from a 1M-token store** (a *synthetic* store: Zipf tokens over a
   50,257-token vocabulary, 128-token sequences, TopK-like codes with k = 32 active latents per token; a quarter of
   the latents are planted token features, the rest fire at random). Phases timed: building the per-latent index
   (CSC), drawing contexts (with decoder-neighbour negatives), explaining, scoring (detection and fuzzing).
   Goal: ≤ 300 s on 2 cores. The planted latents' mean detection score is printed as a sanity check.
2. **Client throughput against a loopback server with a fixed latency** (50 ms, the server in its own process):
   requests/s at concurrency 1 against the ideal ``1 / latency``, and at concurrency 8 and 32 against perfect
   scaling of the measured single-request rate. Throughput that scales with the requests in flight means the
   endpoint's latency, not the client, is the bound (goal: ≥ 0.8 of perfect scaling).

``python benchmarks/run.py --only explain`` (``--quick``: 2,048 latents over 128K tokens, fewer requests).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from common import Figure

from universality.interp import ContextConfig, LatentActivations, explain_dictionary
from universality.interp.tokens import TokenTable


def synthetic_store(n_tokens: int, n_latents: int, k: int = 32, vocab: int = 50257, seq_len: int = 128, seed: int = 0):
    """Tokens ``[n_seq, seq_len]``, mask (BOS not counted), codes CSC ``[n_rows, n_latents]`` and a decoder ``[n_latents, 64]``."""
    rng = np.random.default_rng(seed)
    n_seq = n_tokens // seq_len
    p = 1.0 / np.arange(1, vocab + 1) ** 1.05
    tokens = rng.choice(vocab, size=(n_seq, seq_len), p=p / p.sum()).astype(np.int64)
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, 0] = False
    flat = tokens.reshape(-1)
    n = flat.size
    n_planted = n_latents // 4
    # planted latent j fires where the token is one of 1-3 ids drawn from the 200..20000 band
    owner = np.full(vocab, -1, dtype=np.int64)
    cand = rng.permutation(np.arange(200, 20000))
    pos = 0
    for j in range(n_planted):
        m = 1 + j % 3
        owner[cand[pos:pos + m]] = j
        pos += m
    rows_p = np.flatnonzero(owner[flat] >= 0)
    cols_p = owner[flat[rows_p]]
    # every token also gets k - 1 random latents among the unplanted ones
    rows_r = np.repeat(np.arange(n), k - 1)
    cols_r = rng.integers(n_planted, n_latents, size=rows_r.size)
    rows = np.concatenate([rows_p, rows_r])
    cols = np.concatenate([cols_p, cols_r])
    vals = (0.1 + rng.random(rows.size)).astype(np.float32)
    keep = mask.reshape(-1)[rows]
    codes = sp.csc_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n, n_latents), dtype=np.float32)
    codes.sum_duplicates()
    w_dec = rng.standard_normal((n_latents, 64)).astype(np.float32)
    return tokens, mask, codes, w_dec, n_planted


def _explainer_figure(quick: bool) -> list[Figure]:
    n_tokens, n_latents = (131_072, 2048) if quick else (1_048_576, 16_384)
    t0 = time.perf_counter()
    tokens, mask, codes, w_dec, n_planted = synthetic_store(n_tokens, n_latents)
    t_make = time.perf_counter() - t0
    table = TokenTable([f" w{i}" for i in range(50257)])
    t0 = time.perf_counter()
    acts = LatentActivations(codes, tokens, mask)
    t_index = time.perf_counter() - t0
    phases = {}
    t0 = time.perf_counter()
    res = explain_dictionary(acts, table, module="synthetic.blocks.6.resid_post", w_dec=w_dec, context_cfg=ContextConfig(),
                             log=lambda m: phases.setdefault(m, time.perf_counter() - t0))
    total = time.perf_counter() - t0 + t_index
    det = res.summary("detection")
    planted = [res.latents[j].scores["detection"]["balanced_accuracy"] for j in range(n_planted) if j in res.latents]
    rand = [res.latents[j].scores["detection"]["balanced_accuracy"] for j in range(n_planted, n_latents) if j in res.latents]
    print(f"  synthetic store built in {t_make:.1f} s (not timed); index {t_index:.1f} s; contexts done at "
          f"{next(iter(phases.values()), float('nan')):.1f} s; {len(res.latents)} latents explained, {len(res.skipped)} too rare; "
          f"detection balanced accuracy: planted {np.mean(planted):.3f}, random {np.mean(rand):.3f}, all {np.mean(det):.3f}")
    return [Figure(name=f"offline explain + detection + fuzzing, {n_latents:,} latents over {n_tokens:,} synthetic tokens (s)",
                   value=total, unit="s", baseline="the issue's budget", baseline_value=300.0 if not quick else 300.0 * n_latents / 16384,
                   higher_is_better=False, goal_value=300.0 if not quick else None)]


_SERVER = """
import sys
from universality.interp.loopback import LoopbackEndpoint
with LoopbackEndpoint(reply=lambda m: "[EXPLANATION]: ok", latency_s=float(sys.argv[1])) as ep:
    print(ep.url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
"""


def _client_figures(quick: bool) -> list[Figure]:
    import os
    import subprocess
    import sys

    from universality.interp import ChatClient, ClientConfig

    latency = 0.05
    n = 200 if quick else 800
    out = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # its own process: its own interpreter lock
    try:
        url = server.stdout.readline().strip()
        rate1 = None
        for conc in (1, 8, 32):
            chats = [[{"role": "user", "content": f"c{conc}-q{i}"}] for i in range(n if conc > 1 else n // 8)]
            with ChatClient(ClientConfig(url, "loopback-model", api_key_env=None, concurrency=conc)) as c:
                t0 = time.perf_counter()
                c.complete_many(chats)
                rate = len(chats) / (time.perf_counter() - t0)
            name = f"client requests/s, concurrency {conc}, loopback latency {latency * 1000:.0f} ms (server in its own process)"
            if conc == 1:
                rate1 = rate
                out.append(Figure(name=name, value=rate, unit="req/s", baseline="ideal 1 / latency", baseline_value=1 / latency))
            else:  # the endpoint bounds throughput when it scales with the requests in flight
                out.append(Figure(name=name, value=rate, unit="req/s", baseline=f"{conc} × the measured rate at concurrency 1",
                                  baseline_value=conc * rate1, goal_ratio=0.8))
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return out


def run(quick: bool) -> list[Figure]:
    """The explainer-at-scale figure and the client-throughput figures."""
    return _explainer_figure(quick) + _client_figures(quick)
