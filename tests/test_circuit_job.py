"""``universality circuit``: stages, results.json, graph files, the report section, reruns, and bad options."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch

from universality.cli import main
from universality.results import RunResults


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny GPT-NeoX and a tiny Mamba sharing one small byte-BPE tokenizer."""
    import transformers as tf

    from universality.data import default_corpus
    from universality.data.bpe import train_byte_bpe

    root = tmp_path_factory.mktemp("circuit-models")
    tok = train_byte_bpe([d.text for d in default_corpus().documents][:40], vocab_size=300)
    torch.manual_seed(0)
    neox = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                  intermediate_size=64, max_position_embeddings=64, bos_token_id=0,
                                                  eos_token_id=0))
    mamba = tf.MambaForCausalLM(tf.MambaConfig(vocab_size=300, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                                               bos_token_id=0, eos_token_id=0, pad_token_id=1))
    paths = []
    for name, model in (("neox", neox), ("mamba", mamba)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths.append(str(root / name))
    return paths


def test_circuit_command_end_to_end(models, tmp_path):
    out = tmp_path / "run"
    argv = ["circuit", *models, "--task", "induction", "--half", "6", "--train-tokens", "3000", "--seq-len", "32",
            "--n-latents", "32", "--k", "4", "--train-steps", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    cg = RunResults.from_dict(res).circuit_graphs
    assert cg.task == "induction" and [g.model for g in cg.graphs] == ["neox", "mamba"]
    for g in cg.graphs:
        assert g.frozen_logit_error < 1e-4 and 0 <= g.replacement_score <= 1 and g.n_active_features > 0
        assert g.induction is not None and set(g.induction) >= {"previous_token_step", "copy_step", "chained"}
        doc = json.loads((out / g.graph_file).read_text())
        assert set(doc) == {"metadata", "qParams", "nodes", "links"}
        assert len(doc["metadata"]["prompt_tokens"]) == 11
        ET.fromstring(g.svg)  # well-formed SVG
    assert len(cg.comparisons) == 1 and 0 <= cg.comparisons[0].share_a_in_b <= 1
    html = (out / "report.html").read_text()
    assert "Feature circuits" in html and "<svg" in html
    assert "circuits.csv" in {p.name for p in (out / "tables").iterdir()}
    # the report embeds only our own drawings: an SVG carrying a script is left out
    from universality.reports import write_report

    res["circuit_graphs"]["graphs"][0]["svg"] = "<svg><script>alert(1)</script></svg>"
    write_report(tmp_path / "tampered", res)
    assert "alert(1)" not in (tmp_path / "tampered" / "report.html").read_text()
    # a rerun skips every stage
    assert main(argv) == 0
    timings = json.loads((out / "results.json").read_text())["timings"]
    assert timings and all(t["status"] == "skipped" for name, t in timings.items())


def test_circuit_bad_options_are_one_sentence(models, tmp_path, capsys):
    assert main(["circuit", models[0], "--out", str(tmp_path / "a")]) == 2
    assert "exactly one of --prompt TEXT or --task induction" in capsys.readouterr().err
    assert main(["circuit", models[0], "--prompt", "x", "--task", "induction", "--out", str(tmp_path / "b")]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["circuit", models[0], "--task", "induction", "--node-threshold", "2", "--out", str(tmp_path / "c")]) == 2
    assert "node_threshold 2.0 is not valid" in capsys.readouterr().err
    assert main(["circuit", models[0], "--prompt", "hello", "--target", "hello world", "--train-tokens", "2000",
                 "--seq-len", "32", "--n-latents", "16", "--k", "2", "--train-steps", "2", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "target 'hello world' is" in err and "Traceback" not in err
