"""The comparison report: files, escaping, schema errors, the plain-language rules, and a real browser render."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from universality import UniversalityError, reports
from universality.reports.findings import pair_sentence
from universality.reports.render import CSP

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    res = reports.example_results(seed=3, n_features=128)
    files = reports.write_report(run, res)
    return run, res, files


def _expected_figures(res) -> int:
    # one bar chart + one distribution per pair, one grid per pair, families, two seed plots,
    # one induction heatmap + one component chart per model, one write-lag panel figure
    n_pairs = len(res["pairs"])
    return 1 + n_pairs + sum(1 for p in res["pairs"] if p.get("grid")) + 1 + 2 + 1 + len(res["induction"]) + 1


def test_files_written_and_figures_embedded(rendered):
    run, res, files = rendered
    assert files.html.is_file() and files.markdown.is_file() and files.results.is_file()
    assert len(files.figures) == _expected_figures(res)
    html = files.html.read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == len(files.figures)
    # the inline images are byte-identical to the PNG files beside summary.md
    assert sorted(base64.b64decode(b) for b in embedded) == sorted(p.read_bytes() for p in files.figures)
    for png in files.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # self-contained: no URL that would need a network, and a CSP forbidding fetches
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html)
    assert CSP in html
    # results.json kept as given
    assert json.loads(files.results.read_text()) == json.loads(json.dumps(res))
    md = files.markdown.read_text()
    for ref in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (run / ref).is_file()
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", md)) == len(files.figures)
    mppc_csv = (run / "tables" / "mppc.csv").read_text().splitlines()
    assert len(mppc_csv) == 1 + sum(2 + len(p["references"]) for p in res["pairs"])


def test_token_text_is_escaped(tmp_path):
    res = reports.example_results(seed=1, n_features=64)
    evil = "<img src=x onerror=alert(1)>"
    res["pairs"][0]["top_matches"][0]["contexts"]["a"][0]["tokens"][1] = evil
    res["models"][0]["path"] = "<b>bold</b>"
    html = reports.write_report(tmp_path, res).html.read_text()
    assert evil not in html and "<b>bold</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script" not in html.lower()


def test_summarize_values_against_numpy():
    rng = np.random.default_rng(0)
    v = rng.uniform(-0.1, 0.95, size=1000)
    v[:7] = np.nan  # dead features are dropped
    s = reports.summarize_values(v, n_boot=400, seed=1)
    live = v[np.isfinite(v)]
    assert s["n"] == live.size
    assert s["mean"] == pytest.approx(float(np.mean(live)), abs=1e-12)
    assert s["median"] == pytest.approx(float(np.median(live)), abs=1e-12)
    assert s["frac_above"]["0.7"] == pytest.approx(float(np.mean(live > 0.7)))
    assert sum(s["hist"]["counts"]) == live.size
    lo, hi = s["ci"]
    se = np.std(live, ddof=1) / np.sqrt(live.size)
    assert lo < s["mean"] < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)  # bootstrap CI width ≈ normal-theory width


def test_floor_rule_follows_the_intervals():
    rng = np.random.default_rng(5)
    above = reports.summarize_values(rng.normal(0.6, 0.1, 500))
    floor = reports.summarize_values(rng.normal(0.3, 0.1, 500))
    same = reports.summarize_values(rng.normal(0.3, 0.1, 500))
    sky = reports.summarize_values(rng.normal(0.8, 0.1, 500))
    s1 = pair_sentence({"a": "A", "b": "B", "a_to_b": above, "references": {"random-init floor": floor, "SAE-seed skyline": sky}})
    assert "clearly above" in s1
    gap = round(100 * (above["mean"] - floor["mean"]) / (sky["mean"] - floor["mean"]))
    assert f"closes {gap}%" in s1
    s2 = pair_sentence({"a": "A", "b": "B", "a_to_b": same, "references": {"random-init floor": floor}})
    assert "indistinguishable" in s2


def test_schema_errors_are_one_sentence(tmp_path):
    res = reports.example_results(n_features=32)
    del res["corpus"]
    with pytest.raises(UniversalityError, match="results.corpus"):
        reports.write_report(tmp_path / "a", res)
    assert not (tmp_path / "a" / "results.json").exists()  # nothing half-written
    res = reports.example_results(n_features=32)
    res["write_lag"][0]["layers"][0]["effect"] = [0.5, 0.6, 0.0, 0.0]
    with pytest.raises(UniversalityError, match="sum to 1"):
        reports.validate_results(res)
    res = reports.example_results(n_features=32)
    res["pairs"][0]["b"] = "nope"
    with pytest.raises(UniversalityError, match="'nope'"):
        reports.validate_results(res)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(UniversalityError, match="not valid JSON"):
        reports.load_results(tmp_path / "bad")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=600)
        except (subprocess.TimeoutExpired, OSError):
            return None
        return shutil.which("chromium")
    return None


_PROBE = """<script>
window.__errs=[];
const __ce=console.error;console.error=function(...a){__errs.push('console.error: '+a.join(' '));__ce.apply(console,a)};
window.addEventListener('error',e=>{__errs.push('error: '+(e.message||(e.target&&e.target.tagName)||'?'))},true);
document.addEventListener('securitypolicyviolation',e=>{__errs.push('csp: '+e.violatedDirective+' '+e.blockedURI)});
window.addEventListener('load',()=>{const im=[...document.images];const p=document.createElement('pre');p.id='probe';
p.textContent='PROBE'+JSON.stringify({errors:__errs,n:im.length,ok:im.filter(i=>i.complete&&i.naturalWidth>100).length})+'EBORP';
document.body.appendChild(p)});
</script>"""


def test_renders_in_headless_chromium(rendered, tmp_path):
    chrome = _chromium()
    if chrome is None:
        pytest.skip("headless Chromium is not installed and could not be installed with apt-get (needs root and Debian's 'chromium')")
    run, res, files = rendered
    flags = [chrome, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    # 1) the page as shipped: a screenshot, and no console message at all (the page has no scripts,
    #    so any CONSOLE line is a load error or a CSP violation)
    shot = tmp_path / "report.png"
    out = subprocess.run([*flags, "--window-size=1200,4000", f"--screenshot={shot}", files.html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, out.stderr[-2000:]
    assert not [line for line in out.stderr.splitlines() if "CONSOLE" in line], out.stderr[-2000:]
    if os.environ.get("UNIVERSALITY_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["UNIVERSALITY_SCREENSHOT_DIR"]) / "report.png")
    # 2) a probe copy (same page, inline script allowed) reports errors and counts decoded images
    html = files.html.read_text().replace(CSP, CSP + "; script-src 'unsafe-inline'")
    probe = run / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + _PROBE, 1))
    dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r"PROBE(\{.*?\})EBORP", dom.stdout)
    assert m, dom.stderr[-2000:]
    info = json.loads(m.group(1))
    assert info["errors"] == []
    assert info["n"] == len(files.figures) and info["ok"] == info["n"]
