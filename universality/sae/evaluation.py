"""SAEBench's CPU-feasible evaluations of a dictionary on a host: reconstruction, sparsity, model-loss fidelity, density, probing.

:func:`evaluate_host` runs in numbered phases:

1. **Activations** — one pass per token batch records the dictionary's input
   (and, for a transcoder, its target) hook, plus the clean logits.
2. **Reconstruction and sparsity** — accumulated in float64 over tokens
   (position 0 is left out when ``skip_bos``): L0, L1, FVU, explained variance
   (``1 - FVU``, SAEBench's corrected formula; ``explained_variance_legacy`` is
   its older per-batch form), MSE (mean over tokens and dimensions), cosine
   similarity, L2 norms and ratio, relative reconstruction bias, dead/dense
   fractions and the feature-density histogram.
3. **Model fidelity** — the hook's activation is replaced by the
   reconstruction (spliced) and by zeros (ablated); next-token cross-entropy of
   clean, spliced and ablated runs give the CE loss score
   ``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)``; the KL divergence of
   each patched run from the clean distribution gives the KL score
   ``(KL_ablated - KL_spliced) / KL_ablated``.
4. **Sparse probing** (when token labels are given) — :mod:`.probing`.

The result, :class:`Evaluation`, writes SAEBench's JSON schema
(:meth:`Evaluation.to_saebench`: ``core`` and ``sparse_probing`` outputs).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .._errors import UniversalityError
from .coder import SparseCoder
from .probing import PROBE_KS, ProbeResult, sparse_probing

DENSITY_EDGES = tuple(float(e) for e in range(-7, 1))
"""log10 feature-density bin edges: [1e-7, 1e-6), ..., [0.1, 1]."""


class CoreMetrics(NamedTuple):
    """SAEBench's core metrics (names as in its ``core`` schema)."""

    l0: float
    """Mean active latents per token."""
    l1: float
    """Mean sum of codes per token."""
    fvu: float
    """sum ||y - y_hat||^2 / sum ||y - mean(y)||^2."""
    explained_variance: float
    """1 - FVU."""
    explained_variance_legacy: float
    """Token mean of 1 - ||y_t - y_hat_t||^2 / ||y_t - batch mean||^2 (SAEBench's older formula)."""
    mse: float
    """Mean squared error over tokens and dimensions."""
    cossim: float
    """Mean cosine similarity of y and y_hat."""
    l2_norm_in: float
    """Mean ||y||."""
    l2_norm_out: float
    """Mean ||y_hat||."""
    l2_ratio: float
    """Mean ||y_hat|| / ||y||."""
    relative_reconstruction_bias: float
    """mean ||y_hat||^2 / mean <y, y_hat> (1: no shrinkage)."""
    dead_fraction: float
    """Latents that never fired."""
    dense_fraction: float
    """Latents firing on more than ``dense_threshold`` of tokens."""
    frac_alive: float
    """1 - dead_fraction."""
    freq_over_1_percent: float
    """Latents firing on more than 1% of tokens."""
    freq_over_10_percent: float
    """Latents firing on more than 10% of tokens."""
    normalized_freq_over_1_percent: float
    """Share of all firings made by latents over 1%."""
    normalized_freq_over_10_percent: float
    """Share of all firings made by latents over 10%."""
    average_max_encoder_cosine_sim: float
    """Mean over latents of the largest cosine similarity of its encoder row with another's."""
    average_max_decoder_cosine_sim: float
    """Same for decoder rows."""
    ce_loss_without_sae: float
    """Mean next-token cross-entropy of the clean model."""
    ce_loss_with_sae: float
    """... with the reconstruction spliced in."""
    ce_loss_with_ablation: float
    """... with the hook zero-ablated."""
    ce_loss_score: float
    """(ablated - spliced) / (ablated - clean)."""
    kl_div_with_sae: float
    """Mean KL(clean || spliced) per position."""
    kl_div_with_ablation: float
    """Mean KL(clean || ablated) per position."""
    kl_div_score: float
    """(KL ablated - KL spliced) / KL ablated."""
    n_tokens: int
    """Tokens in the reconstruction statistics."""


class DensityHistogram(NamedTuple):
    """How many latents fire at each log10 frequency."""

    edges: list
    """log10 bin edges (:data:`DENSITY_EDGES`)."""
    counts: list
    """Latents per bin (densities below the first edge go to the first bin)."""
    n_dead: int
    """Latents that never fired (not in any bin)."""


class Evaluation(NamedTuple):
    """Everything :func:`evaluate_host` measured for one dictionary."""

    dictionary: str
    """Name of the dictionary (folder or given)."""
    model: str
    """The host's name or path."""
    hook: str
    """Hook point it reads."""
    core: CoreMetrics
    """Reconstruction, sparsity and model-fidelity metrics."""
    density: DensityHistogram
    """Feature-density histogram."""
    probing: list
    """:class:`~universality.sae.probing.ProbeResult` per labelled class (empty without labels)."""
    config: dict
    """Settings of the evaluation (tokens, batch size, skip_bos, ...)."""
    feature_density: list
    """Per-latent firing frequency (for SAEBench's ``eval_result_details``)."""

    def to_dict(self) -> dict:
        """JSON-ready dict (what ``results.json`` stores)."""
        return {"dictionary": self.dictionary, "model": self.model, "hook": self.hook, "core": self.core._asdict(),
                "density": self.density._asdict(), "probing": [p.to_dict() for p in self.probing], "config": dict(self.config),
                "feature_density": list(self.feature_density)}

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        """Inverse of :meth:`to_dict`."""
        return cls(d["dictionary"], d["model"], d["hook"], CoreMetrics(**d["core"]), DensityHistogram(**d["density"]),
                   [ProbeResult.from_dict(p) for p in d.get("probing") or []], dict(d.get("config") or {}), list(d.get("feature_density") or []))

    def to_saebench(self, sae_cfg: dict | None = None) -> dict[str, dict]:
        """``{"core": ..., "sparse_probing": ...}`` in SAEBench's output schema (``sparse_probing`` only with probing results)."""
        c = self.core
        now = int(time.time() * 1000)
        common = {"sae_bench_commit_hash": "n/a (universality)", "sae_lens_id": None, "sae_lens_release_id": None,
                  "sae_lens_version": None, "sae_cfg_dict": sae_cfg}
        core = {
            "eval_type_id": "core", "eval_config": {"model_name": self.model, **self.config}, "eval_id": str(uuid.uuid4()),
            "datetime_epoch_millis": now,
            "eval_result_metrics": {
                "model_behavior_preservation": {"kl_div_score": c.kl_div_score, "kl_div_with_ablation": c.kl_div_with_ablation,
                                                "kl_div_with_sae": c.kl_div_with_sae},
                "model_performance_preservation": {"ce_loss_score": c.ce_loss_score, "ce_loss_with_ablation": c.ce_loss_with_ablation,
                                                   "ce_loss_with_sae": c.ce_loss_with_sae, "ce_loss_without_sae": c.ce_loss_without_sae},
                "reconstruction_quality": {"explained_variance": c.explained_variance, "explained_variance_legacy": c.explained_variance_legacy,
                                           "mse": c.mse, "cossim": c.cossim},
                "shrinkage": {"l2_norm_in": c.l2_norm_in, "l2_norm_out": c.l2_norm_out, "l2_ratio": c.l2_ratio,
                              "relative_reconstruction_bias": c.relative_reconstruction_bias},
                "sparsity": {"l0": c.l0, "l1": c.l1},
                "token_stats": {"total_tokens_eval_reconstruction": c.n_tokens, "total_tokens_eval_sparsity_variance": c.n_tokens},
                "misc_metrics": {"freq_over_1_percent": c.freq_over_1_percent, "freq_over_10_percent": c.freq_over_10_percent,
                                 "normalized_freq_over_1_percent": c.normalized_freq_over_1_percent,
                                 "normalized_freq_over_10_percent": c.normalized_freq_over_10_percent,
                                 "average_max_encoder_cosine_sim": c.average_max_encoder_cosine_sim,
                                 "average_max_decoder_cosine_sim": c.average_max_decoder_cosine_sim, "frac_alive": c.frac_alive},
            },
            "eval_result_details": [{"index": i, "feature_density": f} for i, f in enumerate(self.feature_density)],
            "eval_result_unstructured": {"fvu": c.fvu, "dead_fraction": c.dead_fraction, "dense_fraction": c.dense_fraction,
                                         "density_histogram": self.density._asdict(), "hook": self.hook},
            **common,
        }
        out = {"core": core}
        if self.probing:
            def block(prefix: str, accs: list[tuple[float, dict]]) -> dict:
                m = {f"{prefix}_test_accuracy": sum(a for a, _ in accs) / len(accs)}
                for k in PROBE_KS:
                    vals = [d.get(k) for _, d in accs]
                    m[f"{prefix}_top_{k}_test_accuracy"] = sum(vals) / len(vals) if all(v is not None for v in vals) else None
                return m

            details = []
            for p in self.probing:
                row = {"dataset_name": p.task, **block("llm", [(p.llm_test_accuracy, p.llm_top_k)]), **block("sae", [(p.sae_test_accuracy, p.sae_top_k)])}
                details.append(row)
            out["sparse_probing"] = {
                "eval_type_id": "sparse_probing", "eval_config": {"model_name": self.model, "dataset_names": [p.task for p in self.probing],
                                                                  "k_values": list(PROBE_KS), **self.config},
                "eval_id": str(uuid.uuid4()), "datetime_epoch_millis": now,
                "eval_result_metrics": {"llm": block("llm", [(p.llm_test_accuracy, p.llm_top_k) for p in self.probing]),
                                        "sae": block("sae", [(p.sae_test_accuracy, p.sae_top_k) for p in self.probing])},
                "eval_result_details": details, "eval_result_unstructured": None, **common,
            }
        return out


def _max_cosine(W: torch.Tensor, chunk: int = 1024) -> float:
    """Mean over rows of ``W`` [n, d] of the largest cosine similarity with any other row."""
    U = F.normalize(W.detach().double(), dim=1)
    best = []
    for i in range(0, U.shape[0], chunk):
        sims = U[i:i + chunk] @ U.T
        sims[torch.arange(sims.shape[0]), torch.arange(i, i + sims.shape[0])] = -2.0
        best.append(sims.max(1).values)
    return float(torch.cat(best).mean()) if U.shape[0] > 1 else float("nan")


def _kl(clean_logp: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """KL(clean || other) per position [b, t] from clean log-probs and other logits."""
    other = other_logits.double().log_softmax(-1)
    return (clean_logp.exp() * (clean_logp - other)).sum(-1)


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position [b, t-1]."""
    return F.cross_entropy(logits[:, :-1].double().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none").view(tokens.shape[0], -1)


@torch.no_grad()
def evaluate_host(coder: SparseCoder, host: Any, tokens: torch.Tensor, *, batch_size: int = 8, skip_bos: bool | None = None,
                  labels: torch.Tensor | None = None, classes: tuple[str, ...] = (), dense_threshold: float = 0.1,
                  name: str = "", probe_max_per_class: int = 2000) -> Evaluation:
    """Evaluate ``coder`` on ``host`` over ``tokens`` [n, t] (see the module docstring for what is measured).

    ``skip_bos`` (default: the dictionary's provenance, e.g. Llama Scope) leaves
    position 0 out of every statistic and unpatched. ``labels`` [n, t] (class
    indices into ``classes``, -1 unlabelled) turn on sparse probing; at most
    ``2 * probe_max_per_class * max(2, len(classes))`` labelled tokens (every
    s-th) are kept for it, their codes dense (rows x n_latents x 4 bytes).
    """
    hook = coder.cfg.hook
    if not hook:
        raise UniversalityError("the dictionary names no hook point; load it with host= or set coder.cfg.hook to the point it reads")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 2 or tokens.dtype != torch.long:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise UniversalityError(f"tokens have shape {shape}; give a LongTensor [n, seq_len] with seq_len >= 2")
    if labels is not None and (labels.shape != tokens.shape):
        raise UniversalityError(f"labels have shape {tuple(labels.shape)}; they must match the tokens' {tuple(tokens.shape)}")
    out_hook = coder.cfg.target_hook if coder.cfg.transcoder else hook
    if not out_hook:
        raise UniversalityError("this dictionary is a transcoder without a target hook; set coder.cfg.target_hook")
    host.validate_names([hook, out_hook])
    if skip_bos is None:
        skip_bos = bool(getattr(getattr(coder, "provenance", None), "skip_bos", False))
    first = 1 if skip_bos else 0
    dev = host.device
    coder = coder.to(dev).eval()
    d_out, n_lat = coder.cfg.d_out, coder.cfg.n_latents
    acc = {k: torch.zeros((), dtype=torch.float64) for k in ("sq", "l0", "l1", "cos", "nin", "nout", "ratio", "xh2", "xdot", "evl")}
    s1 = torch.zeros(d_out, dtype=torch.float64)
    s2 = torch.zeros(d_out, dtype=torch.float64)
    counts = torch.zeros(n_lat, dtype=torch.float64)
    ce = {"clean": 0.0, "sae": 0.0, "abl": 0.0}
    kl = {"sae": 0.0, "abl": 0.0}
    n_tok = n_ce = n_kl = 0
    probe_rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    stride = 1
    if labels is not None:  # keep a deterministic subsample of the labelled tokens: codes are stored dense for the probes
        cap = 2 * probe_max_per_class * max(2, len(classes))
        stride = max(1, -(-int((labels[:, first:] >= 0).sum()) // cap))
    from .._progress import progress

    for start in progress(range(0, tokens.shape[0], batch_size), desc="eval", unit="batch"):
        tb = tokens[start:start + batch_size].to(dev)
        # phase 1: clean run, recording the hooks
        logits, cache = host.run_with_cache(tb, names=sorted({hook, out_hook}))
        x = cache[hook][:, first:]
        y = cache[out_hook][:, first:]
        codes = coder.encode(x)
        recon = coder(x)
        # phase 2: reconstruction and sparsity, float64
        y64, r64 = y.double().reshape(-1, d_out), recon.double().reshape(-1, d_out)
        c64 = codes.double().reshape(-1, n_lat)
        err = y64 - r64
        acc["sq"] += err.pow(2).sum()
        s1 += y64.sum(0)
        s2 += y64.pow(2).sum(0)
        acc["l0"] += (c64 != 0).sum()
        acc["l1"] += c64.sum()
        nin, nout = y64.norm(dim=1), r64.norm(dim=1)
        acc["nin"] += nin.sum()
        acc["nout"] += nout.sum()
        acc["ratio"] += (nout / torch.where(nin.abs() < 1e-4, torch.ones_like(nin), nin)).sum()
        acc["cos"] += F.cosine_similarity(y64, r64, dim=1).sum()
        acc["xh2"] += nout.pow(2).sum()
        acc["xdot"] += (y64 * r64).sum()
        centred = (y64 - y64.mean(0)).pow(2).sum(1)
        acc["evl"] += (1 - err.pow(2).sum(1) / centred.clamp_min(1e-30)).sum()
        counts += (c64 != 0).sum(0).double()
        n_tok += y64.shape[0]
        if labels is not None:
            lb = labels[start:start + batch_size][:, first:].reshape(-1)
            win = torch.arange(start, start + tb.shape[0]).unsqueeze(1).expand(-1, x.shape[1]).reshape(-1)
            flat_pos = win * x.shape[1] + torch.arange(x.shape[1]).repeat(tb.shape[0])
            keep = (lb >= 0) & (flat_pos % stride == 0)
            probe_rows.append((x.reshape(-1, x.shape[-1])[keep].float().cpu(), codes.reshape(-1, n_lat)[keep].float().cpu(), lb[keep], win[keep]))
        # phase 3: spliced and ablated runs
        def splice(t: torch.Tensor) -> torch.Tensor:
            patched = coder(seen["x"] if coder.cfg.transcoder else t).to(t.dtype)
            if first:
                patched[:, :first] = t[:, :first]
            return patched

        def ablate(t: torch.Tensor) -> torch.Tensor:
            z = torch.zeros_like(t)
            z[:, :first] = t[:, :first]
            return z

        seen = {"x": cache[hook]}
        spliced = host.run_with_hooks(tb, {out_hook: splice})
        ablated = host.run_with_hooks(tb, {out_hook: ablate})
        clean_logp = logits.double().log_softmax(-1)[:, first:]
        ce["clean"] += float(_ce(logits, tb)[:, first:].sum())
        ce["sae"] += float(_ce(spliced, tb)[:, first:].sum())
        ce["abl"] += float(_ce(ablated, tb)[:, first:].sum())
        n_ce += tb.shape[0] * (tb.shape[1] - 1 - first)
        kl["sae"] += float(_kl(clean_logp, spliced[:, first:]).sum())
        kl["abl"] += float(_kl(clean_logp, ablated[:, first:]).sum())
        n_kl += tb.shape[0] * (tb.shape[1] - first)
    if n_tok == 0 or n_ce == 0:
        raise UniversalityError("no tokens to evaluate; give sequences longer than the skipped BOS position")
    var_total = float((s2 - s1.pow(2) / n_tok).sum())
    fvu = float(acc["sq"]) / var_total if var_total > 0 else float("nan")
    freq = counts / n_tok
    total_fire = float(counts.sum())
    ce_clean, ce_sae, ce_abl = ce["clean"] / n_ce, ce["sae"] / n_ce, ce["abl"] / n_ce
    kl_sae, kl_abl = kl["sae"] / n_kl, kl["abl"] / n_kl
    alive = freq[freq > 0]
    bins = torch.tensor(DENSITY_EDGES, dtype=torch.float64)
    where = torch.bucketize(alive.log10(), bins[1:-1], right=True) if alive.numel() else torch.zeros(0, dtype=torch.long)
    hist = DensityHistogram(list(DENSITY_EDGES), torch.bincount(where, minlength=len(DENSITY_EDGES) - 1).tolist(), int((freq == 0).sum()))
    core = CoreMetrics(
        l0=float(acc["l0"]) / n_tok, l1=float(acc["l1"]) / n_tok, fvu=fvu, explained_variance=1 - fvu,
        explained_variance_legacy=float(acc["evl"]) / n_tok, mse=float(acc["sq"]) / (n_tok * d_out), cossim=float(acc["cos"]) / n_tok,
        l2_norm_in=float(acc["nin"]) / n_tok, l2_norm_out=float(acc["nout"]) / n_tok, l2_ratio=float(acc["ratio"]) / n_tok,
        relative_reconstruction_bias=float(acc["xh2"]) / float(acc["xdot"]) if float(acc["xdot"]) != 0 else float("nan"),
        dead_fraction=float((freq == 0).double().mean()), dense_fraction=float((freq > dense_threshold).double().mean()),
        frac_alive=float((freq > 0).double().mean()), freq_over_1_percent=float((freq > 0.01).double().mean()),
        freq_over_10_percent=float((freq > 0.1).double().mean()),
        normalized_freq_over_1_percent=float(counts[freq > 0.01].sum()) / total_fire if total_fire else 0.0,
        normalized_freq_over_10_percent=float(counts[freq > 0.1].sum()) / total_fire if total_fire else 0.0,
        average_max_encoder_cosine_sim=_max_cosine(coder.W_enc), average_max_decoder_cosine_sim=_max_cosine(coder.W_dec),
        ce_loss_without_sae=ce_clean, ce_loss_with_sae=ce_sae, ce_loss_with_ablation=ce_abl,
        ce_loss_score=(ce_abl - ce_sae) / (ce_abl - ce_clean) if abs(ce_abl - ce_clean) > 1e-12 else float("nan"),
        kl_div_with_sae=kl_sae, kl_div_with_ablation=kl_abl,
        kl_div_score=(kl_abl - kl_sae) / kl_abl if kl_abl > 1e-12 else float("nan"), n_tokens=n_tok)
    probing: list[ProbeResult] = []
    if probe_rows:
        a, c, lb, win = (torch.cat([r[i] for r in probe_rows]) for i in range(4))
        probing = sparse_probing(a, c, lb, win, tuple(classes), max_per_class=probe_max_per_class)
    config = {"n_sequences": int(tokens.shape[0]), "context_size": int(tokens.shape[1]), "batch_size": batch_size,
              "skip_bos": bool(skip_bos), "dense_threshold": dense_threshold,
              "exclude_special_tokens_from_reconstruction": bool(skip_bos)}
    return Evaluation(name, str(getattr(host, "name_or_path", "")), hook, core, hist, probing, config, freq.tolist())


__all__ = ["CoreMetrics", "DensityHistogram", "Evaluation", "DENSITY_EDGES", "evaluate_host"]
