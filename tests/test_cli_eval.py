"""``universality eval``: dictionaries of two layouts on one model, results.json with SAEBench files, the report, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_transformer
from safetensors.torch import save_file

from universality import sae
from universality.cli import main
from universality.data.bpe import train_byte_bpe
from universality.sae.code_labels import CLASSES


SNIPPET = '''"""Module {i}."""
import os  # comment {i}


def f{i}(x):
    """Doc {i}."""
    return "s{i}" + str(x)  # trailing
'''


@pytest.fixture
def corpus_dir(tmp_path):
    """Sixty small Python files: enough for a held-out split with labelled windows."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(60):
        (folder / f"m{i}.py").write_text(SNIPPET.format(i=i) * 6)
    return folder


@pytest.fixture
def model_dir(tmp_path):
    tok = train_byte_bpe(['def f(x):\n    """Doc."""\n    return "s"  # c\n'] * 20, vocab_size=300)
    model = tiny_transformer("gpt2", vocab_size=len(tok))
    path = tmp_path / "tiny-gpt2"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_command_writes_results_saebench_and_report(tmp_path, model_dir, corpus_dir, capsys):
    ours = sae.build_coder(sae.CoderConfig(kind="relu", d_in=32, n_latents=64, hook="blocks.1.resid_post"))
    ours.save(tmp_path / "ours")
    folder = tmp_path / "h.2"  # a sparsify folder named by GPT-2's module: translated to blocks.2.resid_post
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(48, 32, generator=g) * 0.3, "encoder.bias": torch.zeros(48),
               "W_dec": torch.randn(48, 32, generator=g) * 0.3, "b_dec": torch.zeros(32)}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": 48, "d_in": 32}))
    out = tmp_path / "run"
    rc = main(["eval", str(tmp_path / "ours"), str(folder), "--host", str(model_dir), "--n-sequences", "10", "--seq-len", "24",
               "--corpus", str(corpus_dir), "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    evs = {e["dictionary"]: e for e in res["evaluations"]}
    assert set(evs) == {"ours", "h.2"} and evs["h.2"]["hook"] == "blocks.2.resid_post"
    assert evs["h.2"]["core"]["l0"] == pytest.approx(4.0) and evs["ours"]["core"]["n_tokens"] == 240
    assert {p["task"] for p in evs["ours"]["probing"]} <= set(CLASSES) and evs["ours"]["probing"]
    core = json.loads((out / "eval-h.2" / "saebench_core.json").read_text())
    assert core["eval_type_id"] == "core" and (out / "eval-ours" / "saebench_sparse_probing.json").is_file()
    html = (out / "report.html").read_text()
    assert "Dictionary evaluation" in html and "blocks.2.resid_post" in html
    assert "CE loss score" in (out / "summary.md").read_text()
    # a rerun reuses every stage
    assert main(["eval", str(tmp_path / "ours"), str(folder), "--host", str(model_dir), "--n-sequences", "10", "--seq-len", "24",
                 "--corpus", str(corpus_dir), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    timings = json.loads((out / "results.json").read_text())["timings"]
    assert all(t["status"] == "skipped" for name, t in timings.items() if name.startswith("eval-"))


def test_eval_bad_input_is_one_sentence(tmp_path, model_dir, capsys):
    assert main(["eval", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "needs --host" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), "--host", str(model_dir), "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "not a known dictionary format; layouts tried:" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
