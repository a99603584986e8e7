"""``universality explain`` on a real (tiny) compare run directory, the report section, the feature browser in
headless Chromium, and the bad inputs the issue lists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from interp_helpers import free_port
from universality.cli import main
from universality.data.bpe import train_byte_bpe

pytestmark = pytest.mark.slow

TEXT = "\n\n".join(f"def f_{i}(x, y):\n    return (x + y) * {i} - x // {i + 1}\n" for i in range(300))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tmp = tmp_path_factory.mktemp("explainrun")
    (tmp / "corpus.txt").write_text(TEXT)
    tok = train_byte_bpe([TEXT], vocab_size=300)
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
        GPTNeoXForCausalLM(cfg).save_pretrained(tmp / f"m{seed}")
        tok.save_pretrained(tmp / f"m{seed}")
        paths.append(str(tmp / f"m{seed}"))
    out = tmp / "run"
    assert main(["compare", *paths, "--names", "a,b", "--n-latents", "32", "--k", "4", "--n-boot", "0", "--sae-epochs", "1",
                 "--layers", "1", "--no-floor", "--no-sae-seed-skyline", "--top-matches", "1", "--n-tokens", "1024",
                 "--corpus", str(tmp / "corpus.txt"), "--out", str(out), "--quiet"]) == 0
    assert main(["explain", str(out), "--window", "16", "--n-train", "10", "--n-test", "6", "--n-random", "3",
                 "--n-neighbour", "3", "--quiet"]) == 0
    return out


def test_explain_writes_results_report_delphi_files_and_browser(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    ex = res["explanations"]
    assert ex["explainer"] == "token-statistics" and ex["browser"] == "features.html"
    names = [d["name"] for d in ex["dictionaries"]]
    assert len(names) == 2 and all(d["n_explained"] + d["n_skipped"] == 32 for d in ex["dictionaries"])
    assert "Open the feature browser" in (run_dir / "report.html").read_text()
    assert "href='features.html'" in (run_dir / "report.html").read_text()
    assert (run_dir / "tables" / "explanations.csv").is_file()
    for n in names:
        files = list((run_dir / "explain" / "explanations").glob(f"{n}_latent*.txt"))
        assert len(files) == next(d["n_explained"] for d in ex["dictionaries"] if d["name"] == n)
        assert len(list((run_dir / "explain" / "scores" / "detection").glob(f"{n}_latent*.txt"))) == len(files)
    cross = ex["cross"][0]
    assert set(cross["swap"]["a_on_b"]) >= {"mean_own", "mean_swap", "mean_random"}
    page = (run_dir / "features.html").read_text()
    assert "Content-Security-Policy" in page and "http://" not in page.split("<script")[0].replace("http://www.w3.org", "")


def test_rerun_is_cached(run_dir, capsys):
    assert main(["explain", str(run_dir), "--window", "16", "--n-train", "10", "--n-test", "6", "--n-random", "3",
                 "--n-neighbour", "3"]) == 0
    err = capsys.readouterr().err
    assert err.count("unchanged, skipped") == 3  # two dictionaries and their pair


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not path:
        pytest.skip("no Chromium on this machine: the browser page is not checked in a real browser")
    return path


def _dump(page: Path, fragment: str) -> tuple[str, str]:
    """Headless Chromium's DOM of ``page#fragment`` after its scripts ran, and its log (console lines included)."""
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
                        "--no-first-run", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
                        "--dump-dom", f"{page.resolve().as_uri()}#{fragment}"], capture_output=True, text=True, timeout=120)
    return r.stdout, r.stderr


def _body(dom: str) -> str:
    """The page's opening <body ...> tag after its script ran (carries data-ready, and data-errors on a script error)."""
    m = re.search(r"<body[^>]*>", dom)
    assert m, dom[:200]
    return m.group(0)


def test_browser_in_headless_chromium(run_dir):
    ex = json.loads((run_dir / "results.json").read_text())["explanations"]
    dom, log = _dump(run_dir / "features.html", "d=0&latent=3")
    assert 'data-ready="yes"' in _body(dom) and "data-errors" not in _body(dom)
    assert "CONSOLE" not in log and "Uncaught" not in log
    assert 'data-latent="3"' in dom and f"{ex['dictionaries'][0]['name']} · feature 3" in dom
    assert "Top-activating contexts" in dom and "Partners in other models" in dom


def test_browser_escapes_token_text(tmp_path):
    from universality.interp.browser import feature_card, write_browser
    import numpy as np

    evil = "</script><img src=x onerror=document.title='pwned'>"
    card = feature_card(0, f'fires on "{evil}"', {"detection": {"balanced_accuracy": 1.0, "auc": 1.0}}, 0.1,
                        np.array([0.5, 1.0]), [([" a", evil, "&amp;"], [0.0, 1.0, 0.2])], ([[evil, 2.0]], [["b", -1.0]]))
    page = write_browser(tmp_path / "f.html", "t<i>", [{"name": "d", "model": "m", "hook": "h", "kind": "topk",
                                                         "explainer": "token-statistics", "features": [card]}])
    assert evil not in page.read_text()  # not even inside the JSON
    dom, log = _dump(page, "latent=0")
    assert "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    assert "<img src=\"x\"" not in dom and "<img src=x" not in dom.split('id="data"')[0]
    assert "&lt;/script&gt;&lt;img src=x onerror=" in dom and "&amp;amp;" in dom
    assert "CONSOLE" not in log and "data-errors" not in _body(dom) and 'data-ready="yes"' in _body(dom)


def test_bad_inputs_are_one_sentence(run_dir, tmp_path, capsys, monkeypatch):
    from universality.interp.loopback import LoopbackEndpoint

    def err_of(args) -> str:
        assert main(args) == 2
        e = capsys.readouterr().err.strip()
        assert e.startswith("universality: error:") and "\n" not in e and "Traceback" not in e
        return e

    base = ["explain", str(run_dir), "--quiet", "--window", "16"]
    assert "cannot be reached" in err_of(base + ["--endpoint", f"http://127.0.0.1:{free_port()}/v1", "--llm-model", "m",
                                                 "--max-retries", "0"])
    with LoopbackEndpoint(models=("served",)) as ep:
        assert "does not serve model 'm'; it lists served" in err_of(base + ["--endpoint", ep.url, "--llm-model", "m"])
    monkeypatch.delenv("UNIV_NO_SUCH_KEY", raising=False)
    assert "$UNIV_NO_SUCH_KEY is not set" in err_of(base + ["--endpoint", "http://127.0.0.1:9/v1", "--llm-model", "m",
                                                            "--api-key-env", "UNIV_NO_SUCH_KEY", "--require-key"])
    sae_dir = next(p for p in (run_dir / "stages").glob("sae-a-*") if p.is_dir())
    assert "has no activation store to draw contexts from" in err_of(["explain", str(sae_dir), "--out", str(tmp_path / "x")])
    assert "give both --endpoint and --llm-model" in err_of(base + ["--endpoint", "http://127.0.0.1:9/v1"])
    # the offline explanations written before are all still there
    assert len(list((run_dir / "explain" / "explanations").glob("*.txt"))) > 0


def test_explain_one_dictionary_folder_and_the_python_api(run_dir, tmp_path):
    from universality import interp
    from universality.interp.tokenstats import PREFIX

    sae_dir = next(p for p in (run_dir / "stages").glob("sae-a-*") if p.is_dir())
    acts = run_dir / "stages" / "acts-a"
    model = json.loads((run_dir / "results.json").read_text())["models"][0]["path"]
    out = tmp_path / "one"
    assert main(["explain", str(sae_dir), "--store", str(acts), "--model", model, "--out", str(out), "--max-latents", "8",
                 "--window", "16", "--n-train", "10", "--n-test", "6", "--quiet"]) == 0
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["n_explained"] + summary["n_skipped"] == 8 and (out / "features.html").is_file()
    assert len(list((out / "explanations").glob("*.txt"))) == summary["n_explained"]
    res = interp.explain(sae_dir, acts, latents=range(4), context_cfg=interp.ContextConfig(window=16, n_train=10, n_test=6))
    assert 0 < len(res.latents) <= 4 and all(r.explanation.startswith(PREFIX) for r in res.latents.values())
    from universality._errors import UniversalityError

    with pytest.raises(UniversalityError, match="needs an activation store to draw contexts from"):
        interp.explain(sae_dir, None)


def test_explain_a_run_into_another_folder(run_dir, tmp_path):
    other = tmp_path / "elsewhere"
    assert main(["explain", str(run_dir), "--out", str(other), "--window", "16", "--n-train", "10", "--n-test", "6",
                 "--no-embeddings", "--quiet"]) == 0
    ex = json.loads((run_dir / "results.json").read_text())["explanations"]
    assert Path(ex["browser"]) == other / "features.html" and (other / "features.html").is_file()
    assert len(list((other / "explanations").glob("*.txt"))) == sum(d["n_explained"] for d in ex["dictionaries"])
    assert list((other / "stages").glob("explain-*.json"))  # its stage records live with its output


def test_browser_cards_show_partners_through_a_planted_joint_dictionary(run_dir):
    """First the run has no joint dictionary and the card says so; then a crosscoder planted in the run (its decoder
    made of the run's own dictionaries' rows under known permutations) gives every card its partners."""
    from universality import sae
    from universality._io import atomic_write_json
    from universality.sae import registry
    from universality.sae.joint import CrosscoderConfig, JointDictionary

    ex = json.loads((run_dir / "results.json").read_text())["explanations"]
    assert ex["joint"]["kind"] is None and "no joint dictionary" in ex["joint"]["note"]
    dom, _ = _dump(run_dir / "features.html", "d=0&latent=1")
    assert "Not available: this run has no joint dictionary (train one with compare --joint crosscoder)." in dom
    da, db = ex["dictionaries"]
    dec = {d["model"]: sae.load(next(p for p in (run_dir / "stages").glob(f"sae-{d['model']}-{d['hook']}-*") if p.is_dir())).W_dec.detach()
           for d in (da, db)}
    g = torch.Generator().manual_seed(5)
    pa, pb = torch.randperm(32, generator=g)[:6].tolist(), torch.randperm(32, generator=g)[:6].tolist()
    cfg = CrosscoderConfig(widths=[32, 32], model_names=["a", "b"], n_latents=6, k=2)
    coder = registry.coder_class("crosscoder")(cfg)
    with torch.no_grad():
        coder.W_dec[:, :32] = dec["a"][pa]
        coder.W_dec[:, 32:] = dec["b"][pb]
        coder.W_dec[4, 32:] *= 1e-3  # J4 is exclusive to a, J5 to b
        coder.W_dec[5, :32] *= 1e-3
    JointDictionary(coder, torch.ones(6)).save(run_dir / "stages" / "joint-crosscoder" / "dictionary")
    atomic_write_json(run_dir / "stages" / "joint-crosscoder.json", {"fingerprint": "planted", "result": None,
                      "inputs": {"dictionaries": [{"hook": da["hook"]}, {"hook": db["hook"]}]}})
    assert main(["explain", str(run_dir), "--window", "16", "--n-train", "10", "--n-test", "6", "--n-random", "3",
                 "--n-neighbour", "3", "--quiet"]) == 0
    ex = json.loads((run_dir / "results.json").read_text())["explanations"]
    assert ex["joint"]["kind"] == "crosscoder" and ex["joint"]["note"] is None
    assert ex["joint"]["summary"]["a"]["frac_matched"] >= 5 / 32  # at least the 5 planted rows a carries
    cards = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                 (run_dir / "features.html").read_text(), re.S).group(1))["dictionaries"]
    jp_a = {f["i"]: f["jp"] for f in cards[0]["features"]}
    for J in range(4):
        best = jp_a[pa[J]][0]
        assert best["J"] == J and best["c"] > 0.999 and best["cls"] == "shared"
        assert best["o"] == [{"m": "b", "j": pb[J], "c": pytest.approx(1.0, abs=1e-3)}]
    assert jp_a[pa[4]][0]["J"] == 4 and jp_a[pa[4]][0]["cls"] == "exclusive to a" and jp_a[pa[4]][0]["o"][0]["j"] is None
    assert all(e["J"] != 5 for rows in jp_a.values() for e in rows)  # b's exclusive latent is never a's partner
    dom, log = _dump(run_dir / "features.html", f"d=0&latent={pa[0]}")
    assert 'data-ready="yes"' in _body(dom) and "data-errors" not in _body(dom) and "CONSOLE" not in log
    assert "Partners through the joint dictionary (crosscoder)" in dom and f"#{pb[0]} (1.00)" in dom
    assert "Joint-dictionary partners" in (run_dir / "report.html").read_text()
