"""Partners through a joint dictionary on the feature cards: planted decoder directions with a known map from
per-host latents to joint latents, and the browser card in headless Chromium (escaped, no console errors)."""

from __future__ import annotations

import pytest
import torch

from universality import UniversalityError
from universality.interp.joint_partners import joint_partners, summarise
from universality.sae import registry
from universality.sae.joint import CrosscoderConfig, JointDictionary

WIDTHS = {"a": 12, "b": 16, "c": 10}
CARRIERS = [("a", "b", "c")] * 6 + [("a",)] * 2 + [("a", "b")] + [("a", "b", "c")]  # J0-5 shared, J6-7 a only, J8 a+b, J9 dead
N_RANDOM = {"a": 5, "b": 4, "c": 3}


def planted_joint(names=("a", "b", "c"), seed=0) -> tuple[JointDictionary, dict[str, torch.Tensor]]:
    """A crosscoder whose decoder is set by hand (one random unit direction per carrying model; a non-carrier's block
    is 1e-3 of that) and the true directions ``[n_joint, d_m]`` per model."""
    g = torch.Generator().manual_seed(seed)
    widths = [WIDTHS[n] for n in ("a", "b", "c")]
    cfg = CrosscoderConfig(widths=widths, model_names=list(names), n_latents=len(CARRIERS), k=2, model_scales=[0.5, 2.0, 1.3])
    coder = registry.coder_class("crosscoder")(cfg)
    dirs = {}
    with torch.no_grad():
        for m, (n, sl) in enumerate(zip(("a", "b", "c"), cfg.blocks())):
            d = torch.randn(len(CARRIERS), WIDTHS[n], generator=g)
            d /= d.norm(dim=1, keepdim=True)
            dirs[n] = d
            scale = torch.tensor([1.0 if n in c else 1e-3 for c in CARRIERS])[:, None]
            coder.W_dec[:, sl] = d * scale
    freq = torch.ones(len(CARRIERS))
    freq[9] = 0.0
    return JointDictionary(coder, freq), dirs


def planted_hosts(dirs, seed=1) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, int]]]:
    """Per-host decoders: every joint latent a model carries appears at a shuffled index (times a positive factor, plus
    small noise), among ``N_RANDOM`` random latents. Returns the decoders and joint latent → host latent per model."""
    g = torch.Generator().manual_seed(seed)
    decs, where = {}, {}
    for n in ("a", "b", "c"):
        mine = [J for J, c in enumerate(CARRIERS) if n in c and J != 9]
        rows = [dirs[n][J] * (0.5 + 3 * torch.rand(1, generator=g)) for J in mine]
        rows += [torch.randn(WIDTHS[n], generator=g) for _ in range(N_RANDOM[n])]
        perm = torch.randperm(len(rows), generator=g).tolist()  # row r goes to host latent perm[r]
        w = torch.zeros(len(rows), WIDTHS[n])
        for r, row in enumerate(rows):
            w[perm[r]] = row + 0.01 * torch.randn(WIDTHS[n], generator=g) * row.norm()
        decs[n], where[n] = w, {J: perm[r] for r, J in enumerate(mine)}
    return decs, where


def test_planted_host_latents_find_their_joint_latents_and_partners():
    jd, dirs = planted_joint()
    labels = jd.classify()
    assert labels[:6] == ["shared"] * 6 and labels[6:8] == [("a",)] * 2 and labels[8] == ("a", "b") and labels[9] == "dead"
    decs, where = planted_hosts(dirs)
    names = jd.names
    parts = joint_partners(decs, {n: jd.decoder(m) for m, n in enumerate(names)}, labels, top=2, chunk=3)
    for n in names:
        assert len(parts[n]) == decs[n].shape[0]
        for J, i in where[n].items():
            best = parts[n][i][0]
            assert best["J"] == J and best["c"] > 0.99
            assert best["cls"] == {6: "exclusive to a", 7: "exclusive to a", 8: "shared by a+b"}.get(J, "shared")
            for o in best["o"]:
                if o["m"] in CARRIERS[J]:
                    assert o["j"] == where[o["m"]][J] and o["c"] > 0.99
                else:
                    assert o["j"] is None and o["c"] is None  # that model does not carry J
        # never a dead joint latent, nor one the model does not carry (b and c never get J6/J7; c never J8)
        for rows in parts[n]:
            assert all(e["J"] != 9 and n in CARRIERS[e["J"]] for e in rows)
        planted = {i for i in where[n].values()}
        worst_planted = min(parts[n][i][0]["c"] for i in planted)
        assert all(parts[n][i][0]["c"] < worst_planted for i in range(decs[n].shape[0]) if i not in planted)
    s = summarise(parts, threshold=0.99)
    assert s["a"]["frac_matched"] == pytest.approx(len(where["a"]) / decs["a"].shape[0])
    assert s["a"]["frac_matched_shared"] == pytest.approx(6 / 9) and s["c"]["frac_matched_shared"] == 1.0


def test_joint_partners_bad_input_is_one_sentence():
    jd, dirs = planted_joint()
    decs, _ = planted_hosts(dirs)
    blocks = {n: jd.decoder(m) for m, n in enumerate(jd.names)}
    with pytest.raises(UniversalityError, match="must read the same hook"):
        joint_partners({**decs, "b": torch.randn(5, 7)}, blocks, jd.classify())
    with pytest.raises(UniversalityError, match="give one host dictionary per model"):
        joint_partners({"a": decs["a"], "b": decs["b"]}, blocks, jd.classify())


def test_joint_partner_card_in_headless_chromium_is_escaped(tmp_path):
    from test_interp_job import _body, _dump

    from universality.interp.browser import feature_card, write_browser
    import numpy as np

    evil = "<img src=x onerror=document.title='pwned'>"
    jd, dirs = planted_joint(names=("a", evil, "c"))
    decs, where = planted_hosts(dirs)
    decs = {("a", evil, "c")[k]: decs[n] for k, n in enumerate(("a", "b", "c"))}
    parts = joint_partners(decs, {n: jd.decoder(m) for m, n in enumerate(jd.names)}, jd.classify())
    i = where["a"][8]  # carried by a and the hostile model only
    cards = []
    for j in range(decs["a"].shape[0]):
        c = feature_card(j, "e", {}, 0.1, np.array([1.0]), [], None)
        c["jp"] = parts["a"][j]
        cards.append(c)
    lone = feature_card(0, "e", {}, 0.1, np.array([1.0]), [], None)
    page = write_browser(tmp_path / "f.html", "t", [
        {"name": "a-dict", "model": "a", "hook": "h", "kind": "topk", "explainer": "token-statistics", "features": cards,
         "joint": {"kind": "crosscoder", "models": jd.names, "note": None}},
        {"name": "lone", "model": "z", "hook": "h", "kind": "topk", "explainer": "token-statistics", "features": [lone],
         "joint": {"kind": None, "models": [], "note": "this run has no joint dictionary"}}])
    assert evil not in page.read_text()
    dom, log = _dump(page, f"d=0&latent={i}")
    assert 'data-ready="yes"' in _body(dom) and "data-errors" not in _body(dom) and "CONSOLE" not in log
    table = dom.split('id="joint-partners"')[1].split("</table>")[0]
    assert "Partners through the joint dictionary (crosscoder)" in dom
    assert f"<td>#8</td><td>shared by a+{evil.replace('<', '&lt;').replace('>', '&gt;')}</td>" in table
    assert f"#{where['b'][8]} (1.00)" in table and "not carried" in table  # the hostile model's partner; c does not carry J8
    assert "<img" not in table and "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    dom, log = _dump(page, "d=1&latent=0")
    assert "Not available: this run has no joint dictionary." in dom and "CONSOLE" not in log
