"""The command line: bad input gives one sentence and a non-zero exit with nothing written; config files; run-dir stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from universality import UniversalityError, reports
from universality.cli import main
from universality.jobs import RunDir


def _one_sentence_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("universality: error: "), err
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["compare", "a", "b", "--frob"], "unrecognized arguments: --frob"),
    (["seeds", "m", "--seeds", "0,x"], "comma-separated list of integers"),
    ([], "no command given"),
    (["compare", "a", "--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_usage_errors(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in _one_sentence_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_invalid_settings_name_the_input(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["compare", "only-one", "--out", str(out)]) == 2
    assert "at least two models" in _one_sentence_error(capsys)
    assert main(["compare", "a", "b", "--kind", "dense", "--out", str(out)]) == 2
    assert "kind 'dense' is not valid" in _one_sentence_error(capsys)
    assert main(["seeds", "m", "--seeds", "1,1", "--out", str(out)]) == 2
    assert "two or more distinct" in _one_sentence_error(capsys)
    assert not out.exists()


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", "a", "b", "--out", str(blocker / "run")]) == 2
    assert "is a file" in _one_sentence_error(capsys)
    if os.geteuid() != 0:  # root can write anywhere, so only a file in the way blocks it there
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["compare", "a", "b", "--out", str(ro / "run")]) == 2
        assert "not writable" in _one_sentence_error(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'n_tokens = 100\nfrobnicate = 3\nzeta = "x"\n'),
    (".yaml", "n_tokens: 100\nfrobnicate: 3\nzeta: x\n"),
])
def test_config_with_unknown_keys(suffix, text, capsys, tmp_path):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    out = tmp_path / "run"
    assert main(["compare", "a", "b", "--config", str(cfg), "--out", str(out)]) == 2
    err = _one_sentence_error(capsys)
    assert "unknown key(s) frobnicate, zeta" in err and "n_tokens" in err  # names the bad keys and lists valid ones
    assert not out.exists()


def test_bad_config_files(capsys, tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("n_tokens = = 3")
    assert main(["compare", "a", "b", "--config", str(bad)]) == 2
    assert "not valid TOML" in _one_sentence_error(capsys)
    assert main(["compare", "a", "b", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in _one_sentence_error(capsys)
    ini = tmp_path / "c.ini"
    ini.write_text("[x]")
    assert main(["compare", "a", "b", "--config", str(ini)]) == 2
    assert "must end in .toml" in _one_sentence_error(capsys)


def _tiny_neox(folder: Path) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_one_model_cannot_be_reached_writes_nothing(tmp_path):
    good = _tiny_neox(tmp_path / "good")
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", UNIVERSALITY_QUIET="1")
    proc = subprocess.run([sys.executable, "-m", "universality.cli", "compare", str(good), "nobody/no-such-model", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "nobody/no-such-model" in err[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_report_command_from_config_file(tmp_path, capsys):
    run = tmp_path / "run"
    reports.write_results(run, reports.example_results(n_features=32))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {run}\nquiet: true\n")
    assert main(["report", "--config", str(cfg)]) == 0
    assert (run / "report.html").is_file() and (run / "summary.md").is_file()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "results.json" in _one_sentence_error(capsys)


def test_run_dir_stages_skip_and_rerun(tmp_path):
    calls = []

    def work(tag):
        def fn():
            calls.append(tag)
            return {"tag": tag}
        return fn

    run = RunDir(tmp_path)
    assert run.stage("s1", {"x": 1}, work("a")) == {"tag": "a"}
    assert RunDir(tmp_path).stage("s1", {"x": 1}, work("b")) == {"tag": "a"}  # unchanged inputs: skipped
    assert RunDir(tmp_path).stage("s1", {"x": 2}, work("c")) == {"tag": "c"}  # changed inputs: rerun
    assert calls == ["a", "c"]
    # a stage interrupted before its record was written runs again on the next invocation
    with pytest.raises(KeyboardInterrupt):
        RunDir(tmp_path).stage("s2", {"y": 1}, lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert not (tmp_path / "stages" / "s2.json").exists()
    assert RunDir(tmp_path).stage("s2", {"y": 1}, work("d")) == {"tag": "d"}
    # a record whose files vanished is not trusted
    assert RunDir(tmp_path).stage("s2", {"y": 1}, work("e"), valid=lambda r: False) == {"tag": "e"}
    rec = json.loads((tmp_path / "stages" / "s1.json").read_text())
    assert rec["inputs"] == {"x": 2}
    with pytest.raises(UniversalityError):
        RunDir(tmp_path).stage("bad/name", {}, work("f"))
