"""Checkpoint/resume: a training process killed with SIGKILL mid-run and started again ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_dist import worker_env

from universality import UniversalityError, sae

WORKER = r'''
import sys, time, json, torch
from universality import sae

def data():
    # a replayable stream (called again on restart); the sleep makes the run slow enough to kill mid-way
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48 * 128, 16, generator=g) @ torch.randn(16, 16, generator=g)
    for chunk in x.split(128):
        time.sleep(float(sys.argv[3]))
        yield chunk

cfg = sae.TrainerConfig(
    coders=[sae.CoderConfig(kind="topk", d_in=16, n_latents=48, k=4, seed=0),
            sae.CoderConfig(kind="relu", d_in=16, n_latents=32, seed=1)],
    batch_size=128, n_tokens=48 * 128, device="cpu", log_every=4,
    checkpoint_dir=sys.argv[1] or None, checkpoint_every=4)
res = sae.Trainer(cfg).fit(data)
for i, c in enumerate(res.coders):
    c.save(f"{sys.argv[2]}/coder{i}")
json.dump({"metrics": [m.as_dict() for m in res.metrics], "n_steps": res.n_steps}, open(f"{sys.argv[2]}/result.json", "w"))
'''


def _run(script: Path, ckpt: str, out: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), ckpt, str(out), str(delay)], env=worker_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_minus_9_then_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ckpt = tmp_path / "ckpt"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    proc = _run(script, str(ckpt), tmp_path / "a", 0.05)
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and proc.poll() is None:
        meta = ckpt / "checkpoint.json"
        if meta.is_file():
            try:
                step = json.loads(meta.read_text())["step"]
            except (json.JSONDecodeError, KeyError):
                step = 0
            if step >= 12:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the worker finished before it could be killed: " + proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "a" / "result.json").exists()
    killed_at = json.loads((ckpt / "checkpoint.json").read_text())["step"]
    assert 12 <= killed_at < 48

    resumed = _run(script, str(ckpt), tmp_path / "a", 0.0)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-3000:]
    straight = _run(script, "", tmp_path / "b", 0.0)
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out.decode()[-3000:]

    ra = json.loads((tmp_path / "a" / "result.json").read_text())
    rb = json.loads((tmp_path / "b" / "result.json").read_text())
    assert ra["n_steps"] == rb["n_steps"] == 48
    for ma, mb in zip(ra["metrics"], rb["metrics"]):
        for key in ("fvu", "l0", "dead_fraction"):
            assert abs(ma[key] - mb[key]) <= 1e-4 * max(1.0, abs(mb[key])), (key, ma, mb)
    for i in range(2):
        a, b = sae.load(tmp_path / "a" / f"coder{i}"), sae.load(tmp_path / "b" / f"coder{i}")
        for name, t in b.state_dict().items():
            torch.testing.assert_close(a.state_dict()[name], t, rtol=1e-4, atol=1e-5)
    print(f"\nkilled at step {killed_at}/48; resumed FVU {ra['metrics'][0]['fvu']:.4f} vs uninterrupted {rb['metrics'][0]['fvu']:.4f}")


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    x = torch.randn(600, 8)
    base = dict(batch_size=100, n_tokens=400, device="cpu", checkpoint_dir=str(tmp_path), checkpoint_every=2)
    sae.Trainer(sae.TrainerConfig(coders=[sae.CoderConfig(d_in=8, n_latents=16, k=2)], **base)).fit(x)
    assert (tmp_path / "checkpoint.json").is_file()
    with pytest.raises(UniversalityError, match="different configuration"):
        sae.Trainer(sae.TrainerConfig(coders=[sae.CoderConfig(d_in=8, n_latents=16, k=3)], **base)).fit(x)
