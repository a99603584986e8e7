"""The feature browser: one self-contained HTML page (no network) listing every dictionary's features.

Each feature's card shows its top-activating contexts with token-level highlighting, its activation histogram,
the logits its decoder direction promotes and suppresses (where the hook lives in the residual stream), its
explanation and scores, and its partners in the other models (MPPC partner and best explanation match). The list
is sortable (MPPC, frequency, score, index) and searchable (explanation text and context tokens).

The data travel inside the page as JSON in a ``<script type="application/json">`` element with ``<``, ``>`` and
``&`` written as ``\\u003c``-style escapes, and the script puts every string on the page through ``textContent``:
token text cannot become markup. The page's Content-Security-Policy forbids every fetch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._io import atomic_write_text

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
N_CONTEXTS = 5
N_LOGITS = 6
N_BINS = 12


def feature_card(latent: int, explanation: str | None, scores: Mapping[str, Mapping], frequency: float,
                 values: np.ndarray, contexts: Sequence[tuple[Sequence[str], Sequence[float]]],
                 logits: tuple[list, list] | None) -> dict:
    """One feature's card data.

    Args:
        values: the latent's non-zero activations ``[m]`` (for the histogram and the maximum).
        contexts: top-activating windows as (token texts, activations).
        logits: (promoted, suppressed) lists of ``[token text, value]``, or ``None`` where the hook allows none.
    """
    mx = float(values.max()) if values.size else 0.0
    hist = np.histogram(values, bins=N_BINS, range=(0.0, mx or 1.0))[0].tolist() if values.size else [0] * N_BINS
    return {"i": int(latent), "e": explanation or "", "f": float(frequency), "m": round(mx, 4), "h": hist,
            "s": {k: [v.get("balanced_accuracy"), v.get("auc")] for k, v in scores.items()},
            "c": [[list(t), [round(float(a), 3) for a in acts]] for t, acts in contexts[:N_CONTEXTS]],
            "lp": logits[0] if logits else None, "ln": logits[1] if logits else None, "p": []}


def top_logits(direction: Any, unembed: Any, texts: Sequence[str], n: int = N_LOGITS) -> tuple[list, list]:
    """Tokens whose logit the decoder ``direction`` ``[d]`` raises / lowers most through ``unembed`` ``[vocab, d]``."""
    import torch

    v = torch.as_tensor(unembed, dtype=torch.float32) @ torch.as_tensor(direction, dtype=torch.float32)
    k = min(n, v.numel())
    up, down = torch.topk(v, k), torch.topk(-v, k)
    name = lambda i: texts[i] if i < len(texts) else f"<{i}>"  # noqa: E731
    return ([[name(int(i)), round(float(x), 3)] for x, i in zip(up.values, up.indices)],
            [[name(int(i)), round(float(-x), 3)] for x, i in zip(down.values, down.indices)])


def _json_for_html(obj: Any) -> str:
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def write_browser(path: str | os.PathLike, title: str, dictionaries: Sequence[Mapping]) -> Path:
    """Write the browser page.

    Args:
        dictionaries: one ``{"name", "model", "hook", "kind", "explainer", "features": [card, ...]}`` each, a card
            being :func:`feature_card`'s dict with ``"p"`` filled with ``{"d": other dictionary, "j": partner,
            "r": MPPC, "ej": explanation match, "ec": its cosine}`` entries and, optionally, ``"jp"`` with the
            feature's partners through a joint dictionary (:func:`~universality.interp.joint_partners.joint_partners`'
            entries); a dictionary's optional ``"joint": {"kind", "models", "note"}`` names the joint dictionary, or
            says in ``note`` why there is none (the card then says so).
    """
    data = {"title": title, "dictionaries": list(dictionaries)}
    page = _PAGE.replace("__CSP__", CSP).replace("__TITLE__", _esc(title)).replace("__DATA__", _json_for_html(data))
    return atomic_write_text(path, page)


def _esc(s: str) -> str:
    import html

    return html.escape(s, quote=True)


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ — features</title>
<style>
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;display:grid;grid-template-columns:minmax(420px,46%) 1fr;height:100vh}
#left{border-right:1px solid #ddd;display:flex;flex-direction:column;min-height:0}
#controls{padding:.6em;border-bottom:1px solid #ddd;display:flex;gap:.5em;flex-wrap:wrap;align-items:center}
#controls input{flex:1;min-width:10em;padding:.25em}
#list{overflow:auto;flex:1}
table{border-collapse:collapse;width:100%;font-size:.82em}td,th{border-bottom:1px solid #eee;padding:.2em .4em;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0;cursor:pointer;user-select:none}th.on::after{content:' \25BE'}
tr.feat{cursor:pointer}tr.feat:hover{background:#f6f9ff}tr.sel{background:#e4eeff}
#card{overflow:auto;padding:1em 1.4em}h1{font-size:1.15em;margin:.2em 0}h3{font-size:.95em;margin:1.1em 0 .3em}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8em;white-space:pre-wrap;word-break:break-word;margin:.3em 0;padding:.2em;border:1px solid #eee}
.tok{border-radius:2px}.muted{color:#777}.expl{background:#fafafa;border-left:3px solid #8ab;padding:.4em .6em}
.lg{display:grid;grid-template-columns:1fr 1fr;gap:1em;font-size:.82em}.lg td{font-family:ui-monospace,Menlo,monospace}
</style></head>
<body data-ready="no">
<div id="left"><div id="controls">
<select id="dict" aria-label="dictionary"></select>
<input id="q" type="search" placeholder="search explanations and tokens" aria-label="search">
<span id="count" class="muted"></span></div>
<div id="list"><table><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table></div></div>
<div id="card"><p class="muted">Pick a feature on the left.</p></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
window.onerror = function (msg) { document.body.setAttribute("data-errors", String(msg)); };
const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function fmt(x, d) { return (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d === undefined ? 3 : d); }
function vis(t) { return String(t).replace(/\n/g, "\u23CE").replace(/\t/g, "\u2192"); }
function bestR(f) { let r = null; for (const p of f.p) { if (p.r !== null && p.r !== undefined && (r === null || p.r > r)) r = p.r; } return r; }
function brief(e) { return e.replace(/^Token statistics \(not a language-model explanation\)\. (Over-represented where the latent fires: )?/, ""); }
function score(f) { const s = f.s.detection || f.s.fuzz; return s ? s[0] : null; }
const COLS = [["i", "#", (f) => f.i], ["f", "frequency", (f) => f.f], ["score", "detection", score], ["mppc", "best MPPC", bestR], ["e", "explanation", (f) => f.e]];
let state = { d: 0, sort: "mppc", q: "", sel: null };
function rowsOf() {
  const d = DATA.dictionaries[state.d]; if (!d) return [];
  const q = state.q.toLowerCase();
  let fs = d.features.filter((f) => !q || f.e.toLowerCase().includes(q) || f.c.some((c) => c[0].join("").toLowerCase().includes(q)));
  const col = COLS.find((c) => c[0] === state.sort);
  const key = col ? col[2] : ((f) => f.i);
  fs = fs.slice().sort((a, b) => { const x = key(a), y = key(b);
    if (state.sort === "i" || state.sort === "e") return x < y ? -1 : x > y ? 1 : 0;
    return (y === null ? -Infinity : y) - (x === null ? -Infinity : x) || a.i - b.i; });
  return fs;
}
function renderList() {
  const head = $("head"); head.replaceChildren();
  for (const [k, name] of COLS) { const th = el("th", name, state.sort === k ? "on" : ""); th.dataset.sort = k;
    th.addEventListener("click", () => { state.sort = k; renderList(); }); head.appendChild(th); }
  const body = $("rows"); body.replaceChildren();
  const fs = rowsOf();
  $("count").textContent = fs.length + " features";
  for (const f of fs) {
    const tr = el("tr", null, "feat" + (state.sel === f.i ? " sel" : "")); tr.id = "f-" + f.i; tr.dataset.latent = f.i;
    tr.appendChild(el("td", f.i)); tr.appendChild(el("td", fmt(f.f, 4))); tr.appendChild(el("td", fmt(score(f), 2)));
    tr.appendChild(el("td", fmt(bestR(f), 2))); const b = brief(f.e); tr.appendChild(el("td", b.length > 90 ? b.slice(0, 90) + "…" : b));
    tr.addEventListener("click", () => { state.sel = f.i; for (const r of body.querySelectorAll("tr.sel")) r.classList.remove("sel"); tr.classList.add("sel"); renderCard(f); });
    body.appendChild(tr);
  }
}
function histogram(f) {
  const ns = "http://www.w3.org/2000/svg", W = 300, H = 70, n = f.h.length, mx = Math.max(1, ...f.h);
  const svg = document.createElementNS(ns, "svg"); svg.setAttribute("width", W); svg.setAttribute("height", H + 14); svg.setAttribute("role", "img");
  f.h.forEach((c, k) => { const r = document.createElementNS(ns, "rect"); const h = H * c / mx;
    r.setAttribute("x", k * W / n + 1); r.setAttribute("y", H - h); r.setAttribute("width", W / n - 2); r.setAttribute("height", h); r.setAttribute("fill", "#6a8caf");
    const t = document.createElementNS(ns, "title"); t.textContent = c + " tokens"; r.appendChild(t); svg.appendChild(r); });
  const lab = document.createElementNS(ns, "text"); lab.setAttribute("x", 0); lab.setAttribute("y", H + 12); lab.setAttribute("font-size", "10"); lab.textContent = "0 … " + fmt(f.m, 2); svg.appendChild(lab);
  return svg;
}
function renderCard(f) {
  const d = DATA.dictionaries[state.d]; const card = $("card"); card.replaceChildren();
  card.appendChild(el("h1", d.name + " · feature " + f.i));
  card.appendChild(el("p", "fires on " + fmt(100 * f.f, 3) + "% of tokens · max activation " + fmt(f.m, 3) + " · " + d.explainer, "muted"));
  card.appendChild(el("h3", "Explanation")); card.appendChild(el("div", f.e || "(none: too rare to explain)", "expl"));
  const sc = el("p"); sc.textContent = Object.keys(f.s).map((k) => k + ": balanced accuracy " + fmt(f.s[k][0], 2) + ", AUC " + fmt(f.s[k][1], 2)).join(" · ") || "not scored"; card.appendChild(sc);
  card.appendChild(el("h3", "Top-activating contexts"));
  for (const [toks, acts] of f.c) { const box = el("div", null, "ctx"); const mx = Math.max(1e-9, ...acts);
    toks.forEach((t, k) => { const s = el("span", vis(t), "tok"); const a = acts[k] / mx; if (a > 0) s.style.background = "rgba(255,140,0," + (0.15 + 0.85 * a).toFixed(2) + ")"; s.title = "activation " + acts[k]; box.appendChild(s); });
    card.appendChild(box); }
  card.appendChild(el("h3", "Activation histogram (non-zero values)")); card.appendChild(histogram(f));
  card.appendChild(el("h3", "Logits the decoder direction promotes / suppresses"));
  if (f.lp) { const g = el("div", null, "lg");
    for (const [name, list] of [["promotes", f.lp], ["suppresses", f.ln]]) { const t = el("table"); const hr = el("tr"); hr.appendChild(el("th", name)); hr.appendChild(el("th", "logit")); t.appendChild(hr);
      for (const [tok, v] of list) { const r = el("tr"); r.appendChild(el("td", vis(tok))); r.appendChild(el("td", fmt(v, 3))); t.appendChild(r); } g.appendChild(t); }
    card.appendChild(g); } else card.appendChild(el("p", "Not available for this hook (it does not live in the residual stream) or without the model.", "muted"));
  card.appendChild(el("h3", "Partners in other models"));
  if (!f.p.length) card.appendChild(el("p", "No other dictionary compared.", "muted"));
  else { const t = el("table"); const hr = el("tr"); for (const h of ["dictionary", "MPPC partner", "r", "explanation match", "cosine"]) hr.appendChild(el("th", h)); t.appendChild(hr);
    for (const p of f.p) { const r = el("tr"); for (const v of [p.d, p.j === null ? "–" : "#" + p.j, fmt(p.r, 2), p.ej === null || p.ej === undefined ? "–" : "#" + p.ej, fmt(p.ec, 2)]) r.appendChild(el("td", v)); t.appendChild(r); }
    card.appendChild(t); }
  renderJoint(d, f, card);
  card.setAttribute("data-latent", f.i);
}
function renderJoint(d, f, card) {
  const j = d.joint || { kind: null, models: [], note: "no joint-dictionary data in this page" };
  const h = el("h3", "Partners through the joint dictionary" + (j.kind ? " (" + j.kind + ")" : "")); h.id = "joint-head"; card.appendChild(h);
  if (j.note) { const p = el("p", "Not available: " + j.note + ".", "muted"); p.id = "joint-note"; card.appendChild(p); return; }
  const jp = f.jp || [];
  if (!jp.length) { card.appendChild(el("p", "No joint latent carried by " + d.model + " matches this feature.", "muted")); return; }
  const others = j.models.filter((m) => m !== d.model);
  const t = el("table"); t.id = "joint-partners"; const hr = el("tr");
  for (const x of ["joint latent", "class", "cosine in " + d.model, ...others.map((m) => m + " partner (cosine)")]) hr.appendChild(el("th", x));
  t.appendChild(hr);
  for (const e of jp) { const r = el("tr", null, "jrow");
    for (const v of ["#" + e.J, e.cls, fmt(e.c, 2)]) r.appendChild(el("td", v));
    for (const m of others) { const o = (e.o || []).find((x) => x.m === m);
      r.appendChild(el("td", !o ? "–" : o.j === null || o.j === undefined ? "not carried" : "#" + o.j + " (" + fmt(o.c, 2) + ")")); }
    t.appendChild(r); }
  card.appendChild(t);
  card.appendChild(el("p", "Joint latents matched by the cosine of decoder directions in " + d.model + "; each names, in every other model that carries it, that model's own latent whose decoder direction matches it best.", "muted"));
}
function start() {
  const sel = $("dict");
  DATA.dictionaries.forEach((d, k) => { const o = el("option", d.name + " (" + d.features.length + ")"); o.value = k; sel.appendChild(o); });
  sel.addEventListener("change", () => { state.d = Number(sel.value); state.sel = null; renderList(); });
  $("q").addEventListener("input", () => { state.q = $("q").value; renderList(); });
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("d")) { state.d = Number(h.get("d")); sel.value = String(state.d); }
  if (h.has("q")) { state.q = h.get("q"); $("q").value = state.q; }
  if (h.has("sort")) state.sort = h.get("sort");
  renderList();
  if (h.has("latent")) { const row = $("f-" + h.get("latent")); if (row) row.click(); }
  document.body.setAttribute("data-ready", "yes");
}
start();
</script></body></html>
"""
