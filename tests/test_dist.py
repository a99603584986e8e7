"""Scale-out under torchrun: 2 gloo processes on CPU against the same work done in 1 process.

* token-sharded MPPC (float64 sums reduced across processes) equals the one-process sparse kernel on all tokens;
* activation caching and encoding split over 2 processes write byte-identical shards and the same manifests,
  and the MPPC of those codes computed by 2 processes equals one process to 1e-12 (argmax exactly);
* processes that disagree on the token-stream fingerprint stop with one sentence and leave nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CODES = r'''
import numpy as np, scipy.sparse as sp

def codes(seed=0, t=3000, n_a=120, n_b=90, k=6):
    rng = np.random.default_rng(seed)
    def one(n):
        rows = np.repeat(np.arange(t), k)
        cols = np.concatenate([rng.choice(n, k, replace=False) for _ in range(t)])
        return sp.csr_matrix((rng.exponential(size=t * k).astype(np.float32), (rows, cols)), shape=(t, n))
    a, b = one(n_a), one(n_b).tolil()
    b[:, :10] = a[:, :10] * 1.5  # planted partners: A's first ten features reappear in B
    return a, sp.csr_matrix(b, dtype=np.float32)
'''

MPPC_WORKER = CODES + r'''
import sys
import torch.distributed as dist
from universality import _dist
from universality.matching.mppc import mppc_reduced

dist.init_process_group("gloo")
a, b = codes()
lo, hi = _dist.shard_range(a.shape[0])
r = mppc_reduced(a[lo:hi], b[lo:hi])
if _dist.is_main():
    np.savez(sys.argv[1], ab=r.a_to_b.max_r.numpy(), ab_arg=r.a_to_b.argmax.numpy(), ba=r.b_to_a.max_r.numpy(),
             ba_arg=r.b_to_a.argmax.numpy(), n=r.n_tokens, rows=np.array([lo, hi]))
dist.barrier()
dist.destroy_process_group()
'''

CACHE_WORKER = r'''
import sys, json
import torch.distributed as dist
import universality as uv
from universality import UniversalityError, _dist, sae
from universality.activations import cache_activations
from universality.activations.codes import CodeStore, encode_store
from universality.data import StreamConfig, corpus_from_texts, make_stream
from universality.matching.mppc import mppc_reduced

model, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
host = uv.load_host(model, device="cpu")
corpus = corpus_from_texts([open(model + "/corpus.txt").read()], name="dist")
# bad input first: every process builds its stream with its own length, so the fingerprints disagree
bad = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=32, n_sequences=20 + _dist.rank(), seed=0, bos="always"))
try:
    cache_activations(host, ["blocks.1.resid_post"], bad, out + "/bad")
    print("NO ERROR", flush=True)
except UniversalityError as e:
    sys.stdout.write(f"rank {_dist.rank()} error: {e}\n")  # one write per line: the two ranks share one pipe
    sys.stdout.flush()
stream = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=32, n_sequences=24, seed=0, bos="always"))
store = cache_activations(host, ["blocks.1.resid_post"], stream, out + "/acts", shard_sequences=5)
codes = encode_store(sae.load(model + "/coder"), store, "blocks.1.resid_post", out + "/codes", job={"test": 1})
rows = store.mask.reshape(-1).nonzero().squeeze(1)
lo, hi = _dist.shard_range(rows.numel())
other = encode_store(sae.load(model + "/coder2"), store, "blocks.1.resid_post", out + "/codes2", job={"test": 2})
r = mppc_reduced(codes.gather(rows[lo:hi]), other.gather(rows[lo:hi]))
if _dist.is_main():
    import numpy as np
    np.savez(out + "/mppc.npz", ab=r.a_to_b.max_r.numpy(), ab_arg=r.a_to_b.argmax.numpy(), ba=r.b_to_a.max_r.numpy(),
             ba_arg=r.b_to_a.argmax.numpy())
dist.barrier()
dist.destroy_process_group()
'''


def _torchrun() -> str | None:
    exe = Path(sys.executable).parent / "torchrun"
    return str(exe) if exe.is_file() else shutil.which("torchrun")


needs_torchrun = pytest.mark.skipif(not torch.distributed.is_available() or _torchrun() is None,
                                    reason="torch.distributed / torchrun not available")


GLOO_ABORT = "terminate called without an active exception"
"""What a gloo worker prints when the C++ runtime aborts it (SIGABRT). Seen twice in ~40 full-suite runs, only on a
loaded machine with other torchrun jobs running, never reproduced alone; such a launch is run once more."""


def worker_env() -> dict:
    """Environment of a launched worker process: this checkout importable, quiet, one OpenMP thread per process."""
    return dict(os.environ, PYTHONPATH=str(ROOT), UNIVERSALITY_QUIET="1", OMP_NUM_THREADS="1")


def run_retrying_gloo_abort(cmd: list[str], env: dict, outs: list[Path]) -> subprocess.CompletedProcess:
    """Run ``cmd``; after a :data:`GLOO_ABORT`, empty the folders ``outs`` and run it once more. Asserts success."""
    for attempt in range(2):
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        text = (p.stdout + p.stderr).decode()
        if p.returncode == 0 or GLOO_ABORT not in text or attempt:
            break
        for out in outs:  # start the retry from an empty output folder, as the first attempt did
            if out.is_dir():
                shutil.rmtree(out)
                out.mkdir()
    assert p.returncode == 0, text[-4000:]
    return p


def _launch(script: Path, n: int, *args: str) -> str:
    p = run_retrying_gloo_abort([_torchrun(), "--standalone", f"--nproc_per_node={n}", str(script), *args], worker_env(),
                                [Path(a) for a in args[1:]])
    return p.stdout.decode()


def _codes():
    ns: dict = {}
    exec(CODES, ns)
    return ns["codes"]()


@needs_torchrun
def test_token_sharded_mppc_matches_one_process(tmp_path):
    from universality import matching

    script = tmp_path / "mppc_worker.py"
    script.write_text(MPPC_WORKER)
    _launch(script, 2, str(tmp_path / "two.npz"))
    two = np.load(tmp_path / "two.npz")
    a, b = _codes()
    ref = matching.mppc(a, b, sparse=True)  # one process, all tokens, the streamed sparse kernel
    assert ref.path == "sparse" and float(two["n"]) == a.shape[0]
    assert tuple(two["rows"]) == (0, a.shape[0] // 2)  # rank 0 really held only half of the tokens
    for d in ("ab", "ba"):
        want = getattr(ref, "a_to_b" if d == "ab" else "b_to_a")
        np.testing.assert_allclose(two[d], want.max_r.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(two[d + "_arg"], want.argmax.numpy())
    assert (two["ab"][:10] > 0.99).all() and (two["ab_arg"][:10] == np.arange(10)).all()  # the planted partners
    # the check can fail: MPPC of rank 0's half alone is measurably different from all tokens
    half = matching.mppc(a[: a.shape[0] // 2], b[: a.shape[0] // 2])
    assert np.nanmax(np.abs(half.a_to_b.max_r.numpy() - two["ab"])) > 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from universality import sae
    from universality.data import default_corpus
    from universality.data.bpe import train_byte_bpe

    root = tmp_path_factory.mktemp("dist") / "m"
    docs = sorted(default_corpus().split("heldout"), key=lambda d: len(d.text))[50:80]
    text = "\n".join(d.text for d in docs)
    tok = train_byte_bpe([text], vocab_size=300)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    GPTNeoXForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    (root / "corpus.txt").write_text(text)
    sae.build_coder(sae.CoderConfig(kind="topk", d_in=32, n_latents=48, k=4, seed=0)).save(root / "coder")
    sae.build_coder(sae.CoderConfig(kind="topk", d_in=32, n_latents=40, k=3, seed=1)).save(root / "coder2")
    return root


@needs_torchrun
def test_cache_and_encode_on_two_processes_match_one(tiny, tmp_path):
    script = tmp_path / "cache_worker.py"
    script.write_text(CACHE_WORKER)
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        out.mkdir()
        outs[n] = (_launch(script, n, str(tiny), str(out)), out)
    stdout2, two = outs[2]
    _, one = outs[1]
    # bad input: both ranks stop with the same sentence; nothing was created
    lines = sorted(l for l in stdout2.splitlines() if l.startswith("rank "))
    assert len(lines) == 2 and "NO ERROR" not in stdout2, stdout2
    msgs = {l.split(" error: ", 1)[1] for l in lines}
    assert len(msgs) == 1
    msg = msgs.pop()
    assert "disagree on the token-stream fingerprint" in msg and msg.count(". ") == 0, msg
    assert not (two / "bad").exists()
    # the store: same manifest (shards with their SHA-256) and byte-identical files
    for folder in ("acts", "codes", "codes2"):
        m1 = json.loads((one / folder / "manifest.json").read_text())
        m2 = json.loads((two / folder / "manifest.json").read_text())
        assert m1 == m2, folder
        for f in sorted((one / folder).rglob("*.safetensors")):
            assert f.read_bytes() == (two / f.relative_to(one)).read_bytes(), f
    assert len(json.loads((two / "acts" / "manifest.json").read_text())["shards"]) == 5
    # MPPC of the same codes: 2 processes (token shards, reduced sums) vs 1 process
    from universality import matching
    from universality.activations import ActivationStore
    from universality.activations.codes import CodeStore

    rows = ActivationStore(one / "acts").mask.reshape(-1).nonzero().squeeze(1)
    ref = matching.mppc(CodeStore(one / "codes").gather(rows), CodeStore(one / "codes2").gather(rows))
    got = np.load(two / "mppc.npz")
    for d, want in (("ab", ref.a_to_b), ("ba", ref.b_to_a)):
        np.testing.assert_allclose(got[d], want.max_r.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(got[d + "_arg"], want.argmax.numpy())
    assert np.isfinite(got["ab"]).sum() > 10
