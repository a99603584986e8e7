"""Data-parallel training: 2 torchrun processes (gloo, CPU) match 1 process on the same global batches."""

from __future__ import annotations

import torch
from test_dist import _torchrun, needs_torchrun, run_retrying_gloo_abort, worker_env

from universality import sae

WORKER = r'''
import sys, torch
import torch.distributed as dist
from universality import sae

dist.init_process_group("gloo")
g = torch.Generator().manual_seed(3)
x = torch.randn(24 * 64, 12, generator=g) @ torch.randn(12, 12, generator=g)
cfg = sae.TrainerConfig(coders=[sae.CoderConfig(kind="topk", d_in=12, n_latents=40, k=3, seed=0),
                                sae.CoderConfig(kind="relu", d_in=12, n_latents=24, seed=1)],
                        batch_size=64, n_tokens=24 * 64, device="cpu", dead_window_tokens=256)
res = sae.Trainer(cfg).fit(list(x.split(64)))
if dist.get_rank() == 0:
    for i, c in enumerate(res.coders):
        c.save(f"{sys.argv[1]}/coder{i}")
dist.barrier()
dist.destroy_process_group()
'''


@needs_torchrun
def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        out.mkdir()
        run_retrying_gloo_abort([_torchrun(), "--standalone", f"--nproc_per_node={n}", str(script), str(out)], worker_env(), [out])
        runs[n] = [sae.load(out / f"coder{i}") for i in range(2)]
    for one, two in zip(runs[1], runs[2]):
        for name, t in one.state_dict().items():
            torch.testing.assert_close(two.state_dict()[name], t, rtol=1e-4, atol=1e-5, msg=name)
    # and the run really trained (parameters moved away from the initialisation)
    init = sae.build_coder(runs[1][0].cfg)
    assert (runs[1][0].W_enc - init.W_enc).abs().max() > 1e-2
