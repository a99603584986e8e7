"""The plain-language summary: a few sentences saying what the numbers show and how sure they are.

Every sentence is derived from results.json by a rule stated next to it, so the
summary never claims more than the confidence intervals support.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping


def _ci(s: Mapping) -> str:
    return f"{s['mean']:.2f} (95% CI {s['ci'][0]:.2f}–{s['ci'][1]:.2f}, {s['n']} live features)"


def _floor_and_skylines(pair: Mapping) -> tuple[tuple[str, Mapping] | None, list[tuple[str, Mapping]]]:
    floor, skies = None, []
    for label, s in (pair.get("references") or {}).items():
        if not s:
            continue
        if "floor" in label.lower() or "random" in label.lower():
            floor = (label, s)
        else:
            skies.append((label, s))
    return floor, skies


def pair_sentence(pair: Mapping) -> str:
    """One sentence on a pair: its mean MPPC, whether it clears the floor, and how much of the floor→skyline gap it closes.

    Rules: "above the floor" only when the pair's CI lies wholly above the floor's;
    "indistinguishable" when the intervals overlap. The gap fraction is
    (pair − floor) / (skyline − floor) on means, stated for the highest skyline.
    """
    s = pair["a_to_b"]
    text = f"{pair['a']} → {pair['b']}: mean MPPC {_ci(s)}"
    floor, skies = _floor_and_skylines(pair)
    if floor:
        f = floor[1]
        if s["ci"][0] > f["ci"][1]:
            text += f", clearly above the {floor[0]} ({f['mean']:.2f})"
        elif s["ci"][1] < f["ci"][0]:
            text += f", below the {floor[0]} ({f['mean']:.2f}), which means these features match worse than chance structure"
        else:
            text += f", statistically indistinguishable from the {floor[0]} ({f['mean']:.2f})"
        if skies:
            label, top = max(skies, key=lambda kv: kv[1]["mean"])
            gap = top["mean"] - f["mean"]
            if gap > 1e-9:
                frac = (s["mean"] - f["mean"]) / gap
                text += f"; it closes {100 * frac:.0f}% of the gap from the floor to the {label} ({top['mean']:.2f})"
    elif skies:
        label, top = max(skies, key=lambda kv: kv[1]["mean"])
        text += f"; the {label} reaches {top['mean']:.2f}"
    return text + "."


def findings(res: Mapping) -> list[str]:
    """The summary as a list of sentences, in the report's section order."""
    out: list[str] = []
    pairs = res.get("pairs") or []
    for p in pairs:
        out.append(pair_sentence(p))
    for p in pairs:
        g = p.get("grid")
        if g and len(g["layers_a"]) > 1 and len(g["layers_b"]) > 1:
            import numpy as np

            vals = np.asarray(g["values"], dtype=float)
            best = [int(np.nanargmax(row)) for row in vals]
            rel = [b / max(1, len(g["layers_b"]) - 1) for b in best]
            depth = [i / max(1, len(g["layers_a"]) - 1) for i in range(len(best))]
            mono = all(x <= y for x, y in zip(best, best[1:]))
            closeness = 1 - sum(abs(a - b) for a, b in zip(depth, rel)) / len(rel)
            out.append(
                f"Depth map {p['a']} × {p['b']}: each layer's best-matching layer is "
                f"{', '.join(str(g['layers_b'][b]) for b in best)} "
                f"({'monotone in depth' if mono else 'not monotone in depth'}; relative-depth agreement {closeness:.2f} on a 0–1 scale)."
            )
    fam = res.get("families")
    if fam and fam.get("n_families"):
        n_all = fam["by_size"].get(str(len(fam["hosts"])), 0)
        n_one = fam["by_size"].get("1", 0)
        out.append(
            f"N-way: of {fam['n_families']} feature families across {len(fam['hosts'])} hosts, {n_all} appear in all of them "
            f"and {n_one} in one host only (mutual best match above r = {fam.get('threshold', '?')})."
        )
    so = res.get("seed_overlap") or []
    if so:
        parts = [f"{e['kind']} on {e['model']} shares {100 * e['shared_fraction']:.0f}% of latents between seeds"
                 + (f" (±{100 * e['shared_fraction_std']:.0f} pts over seed pairs)" if e.get("shared_fraction_std") is not None else "")
                 for e in so]
        line = "Seed stability at cosine 0.7: " + "; ".join(parts) + "."
        kinds = {e["kind"]: e["shared_fraction"] for e in so}
        if "relu" in kinds and "topk" in kinds:
            by = {e["kind"]: e for e in so}
            spread = max(by["relu"].get("shared_fraction_std") or 0.0, by["topk"].get("shared_fraction_std") or 0.0, 0.01)
            if abs(kinds["relu"] - kinds["topk"]) <= spread:
                line += " TopK and ReLU-L1 are equally stable within the spread over seed pairs."
            else:
                more = "ReLU-L1" if kinds["relu"] > kinds["topk"] else "TopK"
                line += f" {more} dictionaries were the more stable here."
        out.append(line)
    for e in res.get("induction") or []:
        scores = e["layer_scores"]
        if not scores:
            continue
        best = max(range(len(scores)), key=lambda i: scores[i])
        line = f"Induction in {e['model']} ({e.get('arch', '?')}) peaks at layer {best} (score {scores[best]:.2f})"
        comps = e.get("components") or []
        if comps:
            top = max(comps, key=lambda c: abs(c.get("normalised_effect", c.get("effect", 0.0))))
            line += f"; the largest patching effect is {top['component']} at {top.get('position', '?')} ({top.get('normalised_effect', top.get('effect', 0.0)):.2f} normalised)"
        out.append(line + ".")
    for e in res.get("write_lag") or []:
        peaks = Counter(layer["peak"] for layer in e["layers"])
        if not peaks:
            continue
        lag, count = peaks.most_common(1)[0]
        out.append(f"Write lag in {e['model']} ({e.get('arch', '?')}): {count} of {len(e['layers'])} layers write a token's information "
                   f"at lag δ={lag}" + (" (one position late: the Off-by-One pattern)." if lag == 1 else "."))
    corpus = res.get("corpus") or {}
    if corpus.get("n_tokens"):
        out.append(f"How sure: all statistics come from {corpus['n_tokens']:,} tokens of {corpus.get('name', 'the corpus')}; "
                   "intervals are 95% bootstrap intervals; small zoo models and short corpora give wide intervals, "
                   "so read differences smaller than the intervals as no difference.")
    for m in res.get("missing") or []:
        out.append(f"Not run: {m}.")
    return out
