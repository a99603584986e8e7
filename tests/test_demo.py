"""End to end: ``universality demo --quick`` on a test-size zoo, its numbers against an independent float64 recomputation,
resume-by-fingerprint on rerun, and the ``cache`` → ``train`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from universality import reports, sae
from universality.activations import ActivationStore
from universality.cli import main
from universality.jobs.demo import DEMO_MODELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    home, out = root / "zoo", root / "run"
    cfg = root / "demo.toml"
    cfg.write_text(f'quick = true\nzoo_home = "{home}"\nn_latents = 64\nn_tokens = 2048\n')
    assert main(["demo", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(["demo", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    second = json.loads((out / "results.json").read_text())
    return home, out, first, second


def test_demo_writes_a_complete_report(demo_run):
    home, out, res, _ = demo_run
    reports.validate_results(res)
    for name in ("report.html", "summary.md", "results.json", "config.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["command"] == "demo" and saved["quick"] is True and saved["n_latents"] == 64  # config file values kept
    models = {m["name"]: m for m in res["models"]}
    assert {m["arch"] for m in res["models"]} == {"transformer", "mamba", "rwkv"}
    assert {f"{n}-random-init" for n in DEMO_MODELS} <= set(models)
    assert [(p["a"], p["b"]) for p in res["pairs"]] == [("transformer", "mamba"), ("transformer", "rwkv"), ("mamba", "rwkv")]
    for p in res["pairs"]:
        assert {"random-init floor", "SAE-seed skyline"} <= set(p["references"])
        n_a, n_b = models[p["a"]]["n_layers"], models[p["b"]]["n_layers"]
        assert np.asarray(p["grid"]["values"]).shape == (n_a, n_b)
    assert "model-seed skyline" in res["pairs"][0]["references"]
    assert res["families"]["hosts"] == list(DEMO_MODELS)
    assert sorted(e["kind"] for e in res["seed_overlap"]) == ["relu", "topk"]
    assert res["joint"]["kind"] == "crosscoder" and res["joint"]["models"] == list(DEMO_MODELS)  # docs/joint.md
    assert sum(c["count"] for c in res["joint"]["classes"].values()) + res["joint"]["n_dead"] + res["joint"].get("n_unresolved", 0) == res["joint"]["n_latents"]
    lm = res["joint"]["lm_loss"]  # every host's LM loss with the joint and the independent dictionary spliced in
    assert set(lm) == set(DEMO_MODELS) and all(v["clean"] > 0 and v["joint"] > 0 and v["independent"] > 0 for v in lm.values())
    assert [e["model"] for e in res["induction"]] == list(DEMO_MODELS)
    pf = {e["model"]: e for e in res["paper_findings"]}
    im = res["induction_match"]  # the induction rows of the depth map: the Transformer against the others
    assert [(m["a"], m["b"]) for m in im] == [("transformer", n) for n in DEMO_MODELS[1:]]
    for m in im:  # a localised pair only where both hosts have ≥ 1 nat of induction, and then paper_findings' layers
        both = all(pf[x]["icl_score"] >= 1 for x in (m["a"], m["b"]))
        assert (m["layer_a"], m["layer_b"]) == ((pf[m["a"]]["induction_layer"], pf[m["b"]]["induction_layer"]) if both else (None, None))
        assert [r["latents"] for r in m["rows"]] == ["all", "induction"]
        assert np.asarray(m["rows"][0]["values"], dtype=float).shape == (models[m["a"]]["n_layers"], models[m["b"]]["n_layers"])
    assert list(pf) == list(DEMO_MODELS) and {e["mixer"] for e in pf.values()} == {"attention heads", "conv", "token shift"}
    for e in res["induction"]:  # the induction layer is the one with the largest layer score
        f = pf[e["model"]]
        assert f["induction_layer"] == int(np.argmax(e["layer_scores"])) and f["model"] in f["verdict"]
        assert len(f["off_by_one"]["change"]) == 4 and all(lo <= c <= hi for lo, c, hi in
                                                          zip(f["off_by_one"]["low"], f["off_by_one"]["change"], f["off_by_one"]["high"]))
    assert (pf["transformer"]["mixer_gain_lost"] is None) and pf["mamba"]["mixer_gain_lost"] is not None
    assert "circuit findings, per architecture" in (out / "report.html").read_text()
    for e in res["write_lag"]:
        assert len(e["layers"]) == models[e["model"]]["n_layers"]
        for layer in e["layers"]:
            assert min(layer["effect"]) >= 0 and abs(sum(layer["effect"]) - 1) < 1e-6
            assert layer["peak"] == int(np.argmax(layer["effect"]))
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png")))
    ex = res["explanations"]  # the offline explanations of the compared dictionaries and their browser
    assert ex["explainer"] == "token-statistics" and len(ex["dictionaries"]) == 3 and len(ex["cross"]) == 3
    assert (out / ex["browser"]).is_file() and f"href='{ex['browser']}'" in html
    # every card lists its partners through the demo's crosscoder (docs/interp.md)
    assert ex["joint"]["kind"] == "crosscoder" and ex["joint"]["note"] is None and set(ex["joint"]["summary"]) == set(DEMO_MODELS)
    assert '"jp":[{"J":' in (out / ex["browser"]).read_text().replace(" ", "")


def _pearson_mppc_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    live_a, live_b = na > 0, nb > 0
    r = (a[:, live_a].T @ b[:, live_b]) / np.outer(na[live_a], nb[live_b])
    return r.max(axis=1)


def test_demo_mppc_matches_float64_reference(demo_run):
    _, out, res, _ = demo_run
    p = res["pairs"][0]
    codes = []
    for name, layer in ((p["a"], p["layer_a"]), (p["b"], p["layer_b"])):
        hook = f"blocks.{layer}.resid_post"
        store = ActivationStore(out / "stages" / f"acts-{name}")
        coder = sae.load(out / "stages" / f"sae-{name}-{hook}-topk-s0")
        rows = store.mask.reshape(-1).nonzero().squeeze(1)
        with torch.no_grad():
            codes.append(coder.encode(store.read(hook)[rows]).double().numpy())
    ref = _pearson_mppc_f64(*codes)
    assert p["a_to_b"]["n"] == ref.size
    assert p["a_to_b"]["mean"] == pytest.approx(float(ref.mean()), abs=1e-6)
    assert p["a_to_b"]["median"] == pytest.approx(float(np.median(ref)), abs=1e-6)


def test_rerun_skips_every_stage_and_gives_the_same_numbers(demo_run):
    _, _, first, second = demo_run
    assert first["timings"] and all(v["status"] == "ran" for v in first["timings"].values() if v["status"] != "skipped")
    assert {v["status"] for v in second["timings"].values()} == {"skipped"}
    for key in ("pairs", "families", "seed_overlap", "induction", "write_lag", "paper_findings", "induction_match", "evaluations", "explanations"):
        assert second[key] == first[key]


def test_cache_and_train_commands(demo_run, tmp_path):
    home, _, _, _ = demo_run
    model = next(home.rglob("transformer/config.json")).parent
    store_dir, sae_dir = tmp_path / "store", tmp_path / "sae"
    assert main(["cache", str(model), "--hook", "blocks.0.resid_post", "--tokens", "256", "--seq-len", "32",
                 "--out", str(store_dir), "--quiet"]) == 0
    store = ActivationStore(store_dir)
    assert store.n_rows >= 256
    assert main(["train", str(store_dir), "--hook", "blocks.0.resid_post", "--n-latents", "32", "--k", "4",
                 "--n-tokens", "1024", "--batch-size", "128", "--out", str(sae_dir), "--quiet"]) == 0
    coder = sae.load(sae_dir)
    x = store.read("blocks.0.resid_post", masked=True)
    with torch.no_grad():
        codes = coder.encode(x[:50])
    assert codes.shape == (50, 32)
    assert int((codes != 0).sum(1).max()) <= 4  # TopK keeps at most k active latents


def test_compare_command_with_random_init_floor(demo_run, tmp_path):
    home, _, _, _ = demo_run
    a = next(home.rglob("transformer/config.json")).parent
    b = next(home.rglob("transformer-seed1/config.json")).parent
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--names", "t0,t1", "--n-tokens", "1024", "--n-latents", "32", "--k", "4",
                 "--n-boot", "0", "--sae-epochs", "1", "--layers", "1", "--out", str(out), "--quiet"]) == 0
    res = reports.load_results(out)
    (pair,) = res["pairs"]
    assert (pair["a"], pair["b"]) == ("t0", "t1")
    assert set(pair["references"]) == {"random-init floor", "SAE-seed skyline"}
    assert (out / "stages" / "random-init-t1" / "config.json").is_file()
    roles = {m["name"]: m["role"] for m in res["models"]}
    assert roles == {"t0": "model", "t1": "model", "t1-random-init": "random-init floor"}
    # the random-init copy has the architecture of t1 but other weights
    fps = {m["name"]: m["fingerprint"] for m in res["models"]}
    assert fps["t1-random-init"] != fps["t1"]
    assert json.loads((out / "config.json").read_text())["names"] == ["t0", "t1"]


def _shared_at(enc_a, enc_b, dec_a, dec_b, t):
    from scipy.optimize import linear_sum_assignment

    def matched_cos(x, y):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        sim = x @ y.T
        r, c = linear_sum_assignment(-sim)
        out = np.full(x.shape[0], np.nan)
        out[r] = sim[r, c]
        return out

    e, d = matched_cos(enc_a, enc_b), matched_cos(dec_a, dec_b)
    return float(np.mean((e > t) & (d > t)))


def test_seeds_command_against_scipy_hungarian(demo_run, tmp_path):
    home, _, _, _ = demo_run
    model = next(home.rglob("transformer/config.json")).parent
    out = tmp_path / "seeds"
    assert main(["seeds", str(model), "--seeds", "0,1", "--kinds", "topk", "--n-latents", "32", "--k", "4", "--n-tokens", "1024",
                 "--sae-epochs", "2", "--out", str(out), "--quiet"]) == 0
    res = reports.load_results(out)
    (entry,) = res["seed_overlap"]
    assert sum(entry["n_seed_hist"]) == 32
    coders = [sae.load(out / "stages" / f"sae-{model.name}-{entry['hook']}-topk-n32-s{s}") for s in (0, 1)]
    mats = [(c.W_enc.detach().double().numpy(), c.W_dec.detach().double().numpy()) for c in coders]
    for t, got in zip(entry["curve"]["thresholds"], entry["curve"]["shared_fraction"]):
        assert got == pytest.approx(_shared_at(mats[0][0], mats[1][0], mats[0][1], mats[1][1], t), abs=1e-9)
    assert entry["shared_fraction"] == pytest.approx(_shared_at(mats[0][0], mats[1][0], mats[0][1], mats[1][1], 0.7), abs=1e-9)


def test_demo_lens_and_steering(demo_run):
    _, _, res, second = demo_run
    models = {m["name"]: m for m in res["models"]}
    lens = {e["model"]: e for e in res["lens_steer"]["lens"]}
    assert list(lens) == list(DEMO_MODELS)
    for name, e in lens.items():
        assert len(e["depths"]) == models[name]["n_layers"] and e["depths"][-1] == 1.0
        logit, tuned = (next(c for c in e["curves"] if c["lens"] == k) for k in ("logit", "tuned"))
        assert logit["kl"][-1] == pytest.approx(0, abs=1e-5) and logit["top1"][-1] == 1.0
        assert tuned["kl"][0] < logit["kl"][0]  # even a short training beats the logit lens at the first block
    methods = {(e["model"], e["method"]) for e in res["lens_steer"]["steering"]}
    assert methods == {("transformer", "residual"), ("mamba", "residual"), ("mamba", "state"), ("rwkv", "residual"),
                       ("rwkv", "state")}
    hooks = {e["hook"].split(".", 2)[-1] for e in res["lens_steer"]["steering"] if e["model"] == "mamba"}
    assert hooks == {"resid_post", "ssm.state", "ssm.conv_state"}
    for e in res["lens_steer"]["steering"]:
        assert e["n_forwards"] == len(e["multipliers"])  # one forward of the prompt batch per multiplier
        assert e["multipliers"][0] == 0.0
    assert second["lens_steer"] == res["lens_steer"]


def test_lens_and_steer_commands(demo_run, tmp_path, capsys):
    home, _, _, _ = demo_run
    model = next(home.rglob("rwkv/config.json")).parent
    out = tmp_path / "lens"
    assert main(["lens", str(model), "--n-tokens", "512", "--eval-tokens", "256", "--steps", "5", "--seq-len", "32",
                 "--out", str(out), "--quiet"]) == 0
    from universality.analysis.lens import TunedLens

    lens = TunedLens.load(out / "stages" / "lens-rwkv")
    assert lens.n_layers == json.loads((model / "config.json").read_text())["num_hidden_layers"]
    assert reports.load_results(out)["lens_steer"]["lens"][0]["model"] == "rwkv"
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("x = f(a, b)\nreturn [i for i in y]\n")
    neg.write_text("Return the number of items.\nThis class holds a list of names.\n")
    out = tmp_path / "steer"
    assert main(["steer", str(model), "--positive", str(pos), "--negative", str(neg), "--multipliers", "0,1",
                 "--out", str(out), "--quiet"]) == 0
    curves = reports.load_results(out)["lens_steer"]["steering"]
    assert [c["method"] for c in curves] == ["residual", "state"] and curves[1]["hook"].endswith("att.state")
    assert main(["steer", str(model), "--positive", str(pos), "--negative", str(neg), "--multipliers", "0,1",
                 "--methods", "state", "--out", str(tmp_path / "steer-state"), "--quiet"]) == 0
    assert [c["hook"] for c in reports.load_results(tmp_path / "steer-state")["lens_steer"]["steering"]] == [curves[1]["hook"]]
    capsys.readouterr()
    assert main(["steer", str(model), "--positive", str(pos), "--negative", str(neg), "--methods", "conv-state",
                 "--out", str(tmp_path / "steer-conv")]) == 2  # the conv state is Mamba-1's
    assert "none of the steering methods conv-state applies to this rwkv host" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    capsys.readouterr()
    assert main(["steer", str(model), "--positive", str(empty), "--negative", str(neg), "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("universality: error: the positive prompts (empty.txt) are empty") and "\n" not in err
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps({"tokenizer": "someothertokenizer", "prompts": [[1, 2, 3]]}))
    assert main(["steer", str(model), "--positive", str(ids), "--negative", str(neg), "--out", str(tmp_path / "s3")]) == 2
    assert "tokenized with another tokenizer than this model" in capsys.readouterr().err
