"""``universality explain RUN_DIR|DICT``: explanations and scores of dictionary features, compared across models.

For a run directory (of ``compare`` or ``demo``) the stages are:

1. find the run's dictionaries (their code stores, activation stores, weights and models);
2. per dictionary, a cached stage ``explain-<module>``: contexts, explanations, detection and fuzzing scores
   (:func:`universality.interp.explain_dictionary`), delphi's layout under ``explain/``, the feature cards;
3. per compared pair, a cached stage ``explain-cross-<a>-<b>``: MPPC partners, explanation swap, explanation
   embeddings (cosine, Hungarian vs MPPC, Spearman with a bootstrap interval);
4. the feature browser ``features.html``, the ``explanations`` section of results.json and the report again.

For a dictionary folder, ``--store`` names the activation store; the same per-dictionary stage runs in ``--out``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .._errors import UniversalityError
from .._io import atomic_write_json, ensure_writable_dir, read_json_object, sha256_file
from .config import ExplainConfig
from .rundir import RunDir

RESIDUAL_POINTS = ("resid_pre", "resid_post", "mixer_out", "mlp_out", "embed", "final_norm")
"""Hooks that live in the residual stream: their decoder directions can be read through the unembedding."""


class Dictionary:
    """One dictionary of a run: where its codes, activations and weights are, and which model it reads."""

    def __init__(self, label: str, hook: str, kind: str, seed: int, codes: Path, acts: Path, weights: Path | None,
                 model_path: str | None, job_fp: str):
        self.label, self.hook, self.kind, self.seed = label, hook, kind, seed
        self.codes, self.acts, self.weights, self.model_path, self.job_fp = codes, acts, weights, model_path, job_fp

    @property
    def module(self) -> str:
        from ..interp.delphi_format import module_name

        # the seed goes into the model part: delphi selects a module's files by the glob *<module>*, so no module
        # name may be a part of another's (``x.blocks.1.mlp_out`` is inside ``x.blocks.1.mlp_out.s1``)
        return module_name(self.label if self.seed == 0 else f"{self.label}-s{self.seed}", self.hook)


def find_dictionaries(run: Path, results: dict, scope: str) -> list[Dictionary]:
    """The dictionaries of a run directory (``scope``: ``pairs`` = the compared models' middle layers, ``all``)."""
    from ..hosts.names import hook_name

    paths = {m["name"]: m.get("path") for m in results.get("models", [])}
    seed = int((results.get("config") or {}).get("seed", 0) or 0)
    wanted = set()
    for p in results.get("pairs") or []:
        wanted.add((p["a"], hook_name(int(p["layer_a"]), p["hook"])))
        wanted.add((p["b"], hook_name(int(p["layer_b"]), p["hook"])))
    out = []
    for mf in sorted((run / "stages").glob("codes-*/manifest.json")):
        try:
            man = json.loads(mf.read_text())
        except ValueError:
            continue
        job = man.get("job") or {}
        name = mf.parent.name[len("codes-"):]
        suffix = f"-{job.get('hook')}-{job.get('kind')}-s{job.get('seed')}"
        if not man.get("complete") or not name.endswith(suffix):
            continue
        label = name[: -len(suffix)]
        if scope == "pairs" and ((label, job["hook"]) not in wanted or int(job["seed"]) != seed):
            continue
        weights = run / "stages" / f"sae-{name}"
        out.append(Dictionary(label, job["hook"], job["kind"], int(job["seed"]), mf.parent, run / "stages" / f"acts-{label}",
                              weights if weights.is_dir() else None, paths.get(label), man.get("job_fingerprint", "")))
    return out


def _host_parts(model_path: str | None, vocab: int, hook: str, device: torch.device, log) -> tuple[Any, Any, list[str]]:
    """(token table, unembedding ``[vocab, d]`` or None, notes) of the model at ``model_path``."""
    from ..interp.tokens import TokenTable

    if not model_path:
        return TokenTable.from_tokenizer(None, vocab), None, ["no model path: token ids shown instead of text"]
    try:
        table, unembed = _load_model_parts(str(model_path), vocab)
    except UniversalityError as e:
        return TokenTable.from_tokenizer(None, vocab), None, [f"model '{model_path}' could not be loaded ({e}); token ids shown "
                                                               "instead of text"]
    return table, (unembed if hook.split(".")[-1] in RESIDUAL_POINTS else None), []


@functools.lru_cache(maxsize=4)
def _load_model_parts(model_path: str, vocab: int) -> tuple[Any, Any]:
    """Token table and unembedding weight ``[vocab, d]`` (float32, or None) of a checkpoint, loaded once per process."""
    from ..hosts import load_host
    from ..interp.tokens import TokenTable

    host = load_host(model_path, device="cpu")
    table = TokenTable.from_tokenizer(host.tokenizer, max(vocab, int(host.vocab_size)))
    emb = host.model.get_output_embeddings()
    return table, (emb.weight.detach().float().clone() if emb is not None else None)


def explain_one(run: RunDir | None, out: Path, d: Dictionary, cfg: ExplainConfig, client: Any, device: torch.device,
                log: Callable[[str], None]) -> dict:
    """Stage 2 for one dictionary: explanations, scores, delphi files and the feature cards; returns its summary."""
    from .. import sae
    from ..activations import ActivationStore
    from ..activations.codes import CodeStore
    from ..interp import ContextConfig, LatentActivations, explain_dictionary
    from ..interp.browser import feature_card, top_logits
    from ..matching.stats import summarize_values

    cards_path = out / f"cards-{d.module}.json"

    def build() -> dict:
        store = ActivationStore(d.acts)
        acts = LatentActivations.from_code_store(CodeStore(d.codes), store.stream)
        vocab = int(store.tokens.max()) + 1
        table, unembed, notes = _host_parts(d.model_path, vocab, d.hook, device, log)
        w_dec = sae.load(d.weights).W_dec.detach().float().cpu().numpy() if d.weights is not None else None
        latents = range(acts.n_latents if cfg.max_latents is None else min(cfg.max_latents, acts.n_latents))
        ccfg = ContextConfig(window=cfg.window, n_train=cfg.n_train, n_test=cfg.n_test, n_random=cfg.n_random,
                             n_neighbour=cfg.n_neighbour, seed=cfg.seed)
        res = explain_dictionary(acts, table, module=d.module, out=out, latents=latents, w_dec=w_dec, client=client,
                                 context_cfg=ccfg, scorers=cfg.scorers, codes_id=d.job_fp, log=log)
        cards = []
        freq = acts.frequencies()
        for j in latents:
            _, vals = acts.column(j)
            r = res.latents.get(j)
            c = res.contexts.latents.get(j) if res.contexts is not None else None
            ctx = []
            if c is not None:
                order = np.argsort(-c.train.acts.max(axis=1), kind="stable")
                ctx = [(table.text(c.train.ids[k]), c.train.acts[k]) for k in order[:5].tolist()]
            logits = top_logits(w_dec[j], unembed, table.texts) if unembed is not None and w_dec is not None \
                and w_dec.shape[1] == unembed.shape[1] else None
            cards.append(feature_card(j, r.explanation if r else None, r.scores if r else {}, float(freq[j]), vals, ctx, logits))
        atomic_write_json(cards_path, {"module": d.module, "model": d.label, "hook": d.hook, "kind": d.kind,
                                       "explainer": res.explainer, "features": cards}, indent=0)
        scores = {}
        for sc in cfg.scorers:
            vals = res.summary(sc)
            aucs = res.summary(sc, "auc")
            scores[sc] = {"balanced_accuracy": summarize_values(np.asarray(vals), seed=cfg.seed) if vals else None,
                          "mean_auc": float(np.mean(aucs)) if aucs else None}
        return {"name": d.module, "model": d.label, "hook": d.hook, "kind": d.kind, "n_latents": int(acts.n_latents),
                "n_explained": len(res.latents), "n_skipped": len(res.skipped), "explainer": res.explainer,
                "scores": scores, "notes": notes}

    inputs = {"codes": d.job_fp, "cfg": _explain_inputs(cfg)}
    if run is None:
        return build()
    return run.stage(f"explain-{d.module}", inputs, build, valid=lambda r: cards_path.is_file())


def _explain_inputs(cfg: ExplainConfig) -> dict:
    """The settings an explanation depends on (not where it is written, nor how fast it is asked for)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("target", "out", "scope", "embeddings", "concurrency",
                                                              "timeout", "max_retries", "require_key", "api_key_env")}


def _mppc_partners(a: Dictionary, b: Dictionary) -> Any | None:
    """MPPC of two dictionaries on their shared counted rows (``None`` when their token streams differ)."""
    from .. import matching
    from ..activations.codes import CodeStore

    ca, cb = CodeStore(a.codes), CodeStore(b.codes)
    if ca.manifest.get("stream") != cb.manifest.get("stream"):
        return None
    rows = ca.rows
    return matching.mppc(ca.gather(rows), cb.gather(rows))


def cross_pair(run: RunDir, out: Path, a: Dictionary, b: Dictionary, cfg: ExplainConfig, client: Any,
               log: Callable[[str], None]) -> dict:
    """Stage 3 for one pair: MPPC partners, explanation swap both ways, embedding agreement (when available)."""
    from ..interp import explanation_swap
    from ..interp.contexts import ContextSet
    from ..interp.crossmodel import embedding_agreement
    from ..interp.delphi_format import read_explanations
    from ..interp.pipeline import make_judge
    from ..interp.tokenstats import content

    def build() -> dict:
        res = _mppc_partners(a, b)
        if res is None:
            return {"a": a.module, "b": b.module, "missing": "the two dictionaries read different token streams; "
                                                            "explanations are compared only on a shared stream"}
        ea, eb = read_explanations(out, a.module), read_explanations(out, b.module)
        table = _table_for(out, a)
        judge = make_judge(client, table)
        ctx_b, _ = ContextSet.load(out / f"contexts-{b.module}.safetensors")
        ctx_a, _ = ContextSet.load(out / f"contexts-{a.module}.safetensors")
        arg_ab, r_ab = res.a_to_b.argmax.numpy(), res.a_to_b.max_r.numpy()
        arg_ba, r_ba = res.b_to_a.argmax.numpy(), res.b_to_a.max_r.numpy()
        pairs_ab = [(i, int(arg_ab[i])) for i in sorted(ea) if np.isfinite(r_ab[i])]
        pairs_ba = [(j, int(arg_ba[j])) for j in sorted(eb) if np.isfinite(r_ba[j])]
        entry: dict = {"a": a.module, "b": b.module,
                       "swap": {"a_on_b": _means(explanation_swap(judge, ea, eb, ctx_b, pairs_ab, seed=cfg.seed)),
                                "b_on_a": _means(explanation_swap(judge, eb, ea, ctx_a, pairs_ba, seed=cfg.seed))}}
        match_ab, match_ba = {}, {}
        if cfg.embeddings:
            try:
                from ..interp.embeddings import embed

                la, lb = sorted(ea), sorted(eb)
                va, vb = embed([content(ea[i]) for i in la]), embed([content(eb[j]) for j in lb])
                emb = embedding_agreement(va, vb, la, lb, {i: j for i, j in pairs_ab}, {i: float(r_ab[i]) for i, _ in pairs_ab},
                                          seed=cfg.seed)
                entry["embedding"] = {k: emb[k] for k in ("mean_cosine", "mean_cosine_random", "hungarian_agreement", "spearman")}
                sim = va @ vb.T
                if sim.size:
                    match_ab = {la[k]: (lb[int(sim[k].argmax())], float(sim[k].max())) for k in range(len(la))}
                    match_ba = {lb[k]: (la[int(sim[:, k].argmax())], float(sim[:, k].max())) for k in range(len(lb))}
            except UniversalityError as e:
                entry["embedding_missing"] = str(e)
        entry["partners_a"] = {str(i): [int(arg_ab[i]), _f(r_ab[i]), *match_ab.get(i, (None, None))] for i in range(len(arg_ab))}
        entry["partners_b"] = {str(j): [int(arg_ba[j]), _f(r_ba[j]), *match_ba.get(j, (None, None))] for j in range(len(arg_ba))}
        return entry

    inputs = {"a": a.job_fp, "b": b.job_fp, "explain": _explain_inputs(cfg), "embeddings": cfg.embeddings}
    return run.stage(f"explain-cross-{a.module}-{b.module}"[:120], inputs, build)


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _means(s: dict) -> dict:
    return {k: s[k] for k in ("mean_own", "mean_swap", "mean_random", "metric")} | {"n_pairs": len(s["pairs"])}


def _table_for(out: Path, d: Dictionary):
    """Token texts for the judge of a cross-pair: the tokenizer of ``d``'s model (ids when it cannot be loaded)."""
    from ..activations import ActivationStore

    store = ActivationStore(d.acts)
    table, _, _ = _host_parts(d.model_path, int(store.tokens.max()) + 1, d.hook, torch.device("cpu"), lambda m: None)
    return table


def make_client(cfg: ExplainConfig, cache_dir: Path):
    """The :class:`~universality.interp.ChatClient` the settings ask for (checked before anything runs), or ``None``."""
    if cfg.endpoint is None:
        return None
    from ..interp import ChatClient, ClientConfig

    c = ChatClient(ClientConfig(cfg.endpoint, cfg.llm_model, api_key_env=cfg.api_key_env, require_key=cfg.require_key,
                                concurrency=cfg.concurrency, timeout=cfg.timeout, max_retries=cfg.max_retries),
                   cache_dir=cache_dir)
    c.check()
    return c


def explain_job(cfg: ExplainConfig, device: torch.device, log: Callable[[str], None]) -> Path:
    """``universality explain``: see the module docstring. Returns the folder written."""
    target = Path(cfg.target)
    if not target.exists():
        raise UniversalityError(f"'{target}' does not exist; give a run directory of compare/demo or a dictionary folder")
    if (target / "results.json").is_file() or (target / "stages").is_dir():
        return _explain_run(target, cfg, device, log)
    return _explain_folder(target, cfg, device, log)


def _explain_folder(folder: Path, cfg: ExplainConfig, device: torch.device, log: Callable[[str], None]) -> Path:
    """A single dictionary folder against ``--store``."""
    from .. import sae
    from ..activations import ActivationStore

    if not cfg.store:
        raise UniversalityError(f"dictionary '{folder}' has no activation store to draw contexts from; pass --store with "
                                "a store written by 'universality cache' for its hook")
    coder = sae.load(folder)
    store = ActivationStore(cfg.store)
    hook = getattr(coder.cfg, "hook", None)
    if hook not in store.hooks:
        if len(store.hooks) != 1:
            raise UniversalityError(f"store '{cfg.store}' does not hold the dictionary's hook '{hook}'; it holds "
                                    f"{', '.join(store.hooks)}")
        hook = store.hooks[0]
    out = ensure_writable_dir(cfg.out or "runs/explain")
    client = make_client(cfg, out / "llm-cache")
    from ..activations.codes import encode_store

    codes = encode_store(coder, store, hook, out / "codes", job={"dictionary": str(folder.resolve()), "hook": hook})
    d = Dictionary(folder.name, hook, getattr(coder.cfg, "kind", "?"), 0, codes.path, Path(cfg.store), folder, cfg.model,
                   codes.manifest["job_fingerprint"])
    summary = explain_one(RunDir(out, log), out, d, cfg, client, device, log)
    _write_browser(out, f"Features of {folder.name}", [d], {})
    atomic_write_json(out / "explanations.json", summary)
    log(f"wrote {out / 'explanations'}, {out / 'scores'} and {out / 'features.html'}")
    return out


def _explain_run(run_dir: Path, cfg: ExplainConfig, device: torch.device, log: Callable[[str], None]) -> Path:
    """A finished run directory: explanations added to its results.json and report."""
    from ..reports import load_results, write_report

    results = load_results(run_dir)
    run = RunDir(run_dir if cfg.out is None else Path(cfg.out), log)
    ex = explain_results(run, results, cfg, device, log, source=run_dir, out=None if cfg.out is None else Path(cfg.out))
    results["explanations"] = ex.to_dict()
    write_report(run_dir, results)
    log(f"wrote {run_dir / ex.folder}, {ex.browser} and the report")
    return run_dir


def explain_results(run: RunDir, results: dict, cfg: ExplainConfig, device: torch.device, log: Callable[[str], None],
                    source: Path | None = None, out: Path | None = None) -> Any:
    """Stages 1-4 for the run whose results are ``results`` (also called by ``demo`` before it writes them).

    ``source`` is the run directory holding the dictionaries (default: ``run``'s); stage records go to ``run``.
    Returns the :class:`~universality.interp.records.ExplanationsResult`; the browser is written as
    ``features.html`` in the run directory (or in ``out``), delphi's files under ``explain/`` (or ``out``).
    """
    from ..interp.records import ExplanationsResult

    run_dir = Path(source) if source is not None else run.path
    dicts = find_dictionaries(run_dir, results, cfg.scope)
    if not dicts:
        raise UniversalityError(f"run directory '{run_dir}' holds no finished dictionaries with codes to explain; "
                                "run compare or demo into it first")
    for d in dicts:
        if not (d.acts / "manifest.json").is_file():
            raise UniversalityError(f"dictionary {d.module} has no activation store to draw contexts from "
                                    f"('{d.acts}' is missing); rerun the command that made the run directory")
    folder = ensure_writable_dir(out if out is not None else run_dir / "explain")
    client = make_client(cfg, folder / "llm-cache")
    summaries = [explain_one(run, folder, d, cfg, client, device, log) for d in dicts]
    cross, partners = [], {}
    seed = _seed(results)
    for p in results.get("pairs") or []:
        a = next((d for d in dicts if d.label == p["a"] and d.seed == seed), None)
        b = next((d for d in dicts if d.label == p["b"] and d.seed == seed), None)
        if a is None or b is None:
            continue
        entry = cross_pair(run, folder, a, b, cfg, client, log)
        partners[(a.module, b.module)] = entry.get("partners_a", {})
        partners[(b.module, a.module)] = entry.get("partners_b", {})
        cross.append({k: v for k, v in entry.items() if not k.startswith("partners")})
    joint = joint_partners_stage(run, run_dir, results, dicts, log)
    page = _write_browser(out or run_dir, results.get("title", "run"), dicts, partners, folder, joint)
    missing = [f"{c['a']} × {c['b']}: {c['missing']}" for c in cross if "missing" in c]
    missing += [f"{c['a']} × {c['b']}: {c['embedding_missing']}" for c in cross if "embedding_missing" in c]
    rel = lambda p: str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else str(p)  # noqa: E731
    return ExplanationsResult(summaries[0]["explainer"] if summaries else "token-statistics", summaries, cross,
                              rel(page), rel(folder), missing, {k: v for k, v in joint.items() if k != "partners"})


def _seed(results: dict) -> int:
    return int((results.get("config") or {}).get("seed", 0) or 0)


def _write_browser(run_dir: Path, title: str, dicts: list[Dictionary], partners: dict, out: Path | None = None,
                   joint: dict | None = None) -> Path:
    """Stage 4: the feature browser from the cards of every dictionary, their partners and their joint-dictionary partners.

    ``joint`` is :func:`joint_partners_stage`'s result (``None``: a lone dictionary folder, which has no joint dictionary).
    """
    from ..interp.browser import write_browser

    out = out or run_dir
    joint = joint or {"kind": None, "note": "a single dictionary folder has no joint dictionary"}
    jparts = joint.get("partners") or {}
    entries = []
    for d in dicts:
        data = json.loads((out / f"cards-{d.module}.json").read_text(encoding="utf-8"))
        for (ma, mb), part in partners.items():
            if ma != d.module:
                continue
            for f in data["features"]:
                p = part.get(str(f["i"]))
                if p is not None:
                    f["p"].append({"d": mb, "j": p[0], "r": p[1], "ej": p[2], "ec": p[3]})
        mine = jparts.get(d.module)
        for f in data["features"]:
            f["jp"] = (mine or {}).get(str(f["i"]), [])
        note = joint.get("note") if mine is None else None
        if note is None and mine is None:
            note = (f"the joint dictionary ({joint['kind']} over {', '.join(joint['models'])}) does not read this dictionary "
                    f"({d.label} at {d.hook})")
        entries.append({"name": d.module, "model": d.label, "hook": d.hook, "kind": d.kind, "explainer": data["explainer"],
                        "features": data["features"],
                        "joint": {"kind": joint.get("kind"), "models": joint.get("models") or [], "note": note}})
    return write_browser(run_dir / "features.html", title, entries)


def _joint_record(run_dir: Path, results: dict) -> tuple[str, Path, dict] | None:
    """(kind, dictionary folder, stage record) of the run's joint dictionary, or ``None`` when it has none on disk.

    The kind is results.json's ``joint.kind`` when given, else the one ``stages/joint-*/dictionary`` found.
    """
    kind = (results.get("joint") or {}).get("kind")
    found = sorted(p.parent.parent.name[len("joint-"):] for p in (run_dir / "stages").glob("joint-*/dictionary/joint.json"))
    if kind not in found:
        kind = found[0] if found else None
    if kind is None:
        return None
    rec_path = run_dir / "stages" / f"joint-{kind}.json"
    try:
        rec = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.is_file() else {}
    except ValueError:
        rec = {}
    return kind, run_dir / "stages" / f"joint-{kind}" / "dictionary", rec


def joint_partners_stage(run: RunDir, run_dir: Path, results: dict, dicts: list[Dictionary], log: Callable[[str], None],
                         top: int = 2) -> dict:
    """Stage 3b: every explained dictionary's latents matched through the run's joint dictionary (cached).

    Returns ``{"kind", "models", "note", "summary", "partners": {module: {latent: entries}}}`` with the entries of
    :func:`universality.interp.joint_partners.joint_partners`; ``kind`` None and a ``note`` saying why when the run
    has no joint dictionary or none of its models' dictionaries were explained.
    """
    found = _joint_record(run_dir, results)
    if found is None:
        return {"kind": None, "models": [], "note": "this run has no joint dictionary (train one with compare --joint crosscoder)"}
    kind, folder, rec = found
    seed = _seed(results)
    meta = read_json_object(folder / "joint.json", "a joint dictionary's joint.json")
    names = [str(n) for n in meta.get("model_names") or []]
    hooks = [k.get("hook") for k in (rec.get("inputs") or {}).get("dictionaries") or []]
    hooks = hooks if len(hooks) == len(names) else [None] * len(names)
    chosen = {}
    for name, hook in zip(names, hooks):
        d = next((d for d in dicts if d.label == name and d.seed == seed and d.weights is not None and hook in (None, d.hook)), None)
        if d is not None:
            chosen[name] = d
    base = {"kind": kind, "models": names}
    if len(chosen) < len(names):
        lack = [n for n in names if n not in chosen]
        return base | {"note": f"the joint dictionary ({kind}) reads {', '.join(lack)} at a hook whose dictionary was not "
                               "explained, so its partners are not shown"}

    def build() -> dict:
        from .. import sae
        from ..interp.joint_partners import joint_partners, summarise

        jd = sae.load_joint(folder)
        labels = jd.classify()
        host = {n: sae.load(chosen[n].weights).W_dec.detach() for n in names}
        parts = joint_partners(host, {n: jd.decoder(m) for m, n in enumerate(names)}, labels, top=top)
        log(f"joint-dictionary partners ({kind}): {', '.join(f'{n} {len(parts[n])}' for n in names)} latents")
        return {"note": None, "summary": summarise(parts),
                "partners": {chosen[n].module: {str(i): e for i, e in enumerate(parts[n]) if e} for n in names}}

    weights = folder / "joint.safetensors"
    inputs = {"joint": rec.get("fingerprint") or (sha256_file(weights) if weights.is_file() else ""),
              "dictionaries": [chosen[n].job_fp for n in names], "top": top}
    return base | run.stage(f"explain-joint-{kind}", inputs, build)

