"""``universality steer``: a contrast → steering vectors (residual CAA; the recurrent state where the host has one) →
dose-response curves of a token-class metric; the stage is shared with the demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .._errors import UniversalityError
from .._io import fingerprint
from ..results import RunResults
from .common import environment, load_corpus_checked, load_hosts, model_entry, now
from .config import SteerConfig
from .pipeline import corpus_entry, finish, start_run
from .rundir import RunDir

STDLIB_SOURCES = ("stdlib:code", "stdlib:docstrings")
"""Prompt sources drawn from the default corpus (:func:`~universality.analysis.steer_prompts.docstring_code_prompts`)."""
STATE_POINT = {"mamba": "ssm.state", "rwkv": "att.state"}
"""The recurrent-state point state steering uses, per architecture."""
STEER_METHODS = ("residual", "state", "conv-state")
"""``steer --methods``: residual CAA at ``--hook``; the recurrent state (Mamba and Mamba-2 ``ssm.state``, RWKV
``att.state``); Mamba-1's conv state (``ssm.conv_state``). A method the host has no point for is skipped."""


def method_hooks(host: Any, layer: int, point: str, methods: tuple[str, ...]) -> list[str]:
    """The hooks of ``methods`` (see :data:`STEER_METHODS`) at block ``layer`` that ``host`` has, in that order."""
    from ..analysis.steer import CONV_STATE

    bad = [m for m in methods if m not in STEER_METHODS]
    if bad:
        raise UniversalityError(f"steering method(s) {', '.join(bad)} not valid; use some of {', '.join(STEER_METHODS)}")
    hooks = []
    for m in methods:
        if m == "residual":
            hooks.append(host.hook_name(layer, point))
        elif m == "state" and host.arch in STATE_POINT and f"blocks.0.{STATE_POINT[host.arch]}" in host.hook_points \
                and host.model_type in ("mamba", "mamba2", "rwkv"):
            hooks.append(host.hook_name(layer, STATE_POINT[host.arch]))
        elif m == "conv-state" and host.arch == "mamba" and host.model_type == "mamba":
            hooks.append(f"blocks.{layer}.{CONV_STATE}")
    return hooks


def steered_hooks(host: Any, depth: float, point: str, methods: tuple[str, ...], state: bool = True) -> list[str]:
    """:func:`method_hooks` at the block at relative ``depth`` (``state=False`` keeps ``residual`` only); one sentence
    when none applies to ``host``."""
    hooks = method_hooks(host, host.layer_at(depth), point, tuple(m for m in methods if state or m == "residual"))
    if not hooks:
        raise UniversalityError(f"none of the steering methods {', '.join(methods)} applies to this {host.model_type} host; "
                                "add residual")
    return hooks


def read_prompts(source: str, host: Any, corpus: Any, n: int, what: str, seed: int = 0) -> Any:
    """A :class:`~universality.analysis.steer.PromptSet` from ``source``: ``stdlib:code``, ``stdlib:docstrings`` (``n``
    prompts; ``seed`` picks the documents), a text file (one prompt per line) or a JSON file
    ``{"tokenizer": fingerprint, "prompts": [[ids]]}`` of token ids."""
    from ..analysis.steer import PromptSet
    from ..analysis.steer_prompts import docstring_code_prompts

    if source in STDLIB_SOURCES:
        prose, code = docstring_code_prompts(corpus, n, seed=seed)
        return PromptSet.from_texts(code if source == "stdlib:code" else prose, host.tokenizer, source)
    p = Path(source)
    if not p.is_file():
        raise UniversalityError(f"{what} prompts '{source}' is not a file; give a text file (one prompt per line), a JSON "
                                f"file of token ids, or one of {', '.join(STDLIB_SOURCES)}")
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
            prompts = [[int(t) for t in row] for row in data["prompts"]]
            return PromptSet(prompts, str(data.get("tokenizer", "")), p.name)
        except (ValueError, KeyError, TypeError):
            raise UniversalityError(f"{what} prompts '{source}' is not a JSON object with a 'prompts' list of token-id lists") from None
    if host.tokenizer is None:
        raise UniversalityError(f"this model has no tokenizer, so {what} prompts '{source}' must be a JSON file of token ids")
    return PromptSet.from_texts(text.splitlines(), host.tokenizer, p.name)


def _check_tokenizer(prompts: Any, host: Any, what: str) -> None:
    from ..data.tokenizing import tokenizer_fingerprint

    if prompts.tokenizer and host.tokenizer is not None and prompts.tokenizer != tokenizer_fingerprint(host.tokenizer):
        raise UniversalityError(f"the {what} prompts ({prompts.label}) were tokenized with another tokenizer than this model's; "
                                "tokenize them with the model's tokenizer or give text")


def steer_stage(run: RunDir, label: str, host: Any, host_fp: str, positive: Any, negative: Any, prompts: Any,
                metric_ids: list[int], metric_name: str, depth: float = 0.5, point: str = "resid_post",
                multipliers: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0), state: bool = True,
                methods: tuple[str, ...] = STEER_METHODS) -> list:
    """Dose-response curves (:class:`~universality.analysis.steer.DoseResponse`) of one host at the block at ``depth``,
    one per method of ``methods`` the host has (:func:`method_hooks`): residual CAA at ``point``, the recurrent state
    (Mamba, Mamba-2, RWKV), Mamba-1's conv state; ``state=False`` drops both state methods."""
    from ..analysis.steer import DoseResponse, contrast_vector, dose_response, token_class_mass

    positive, negative, prompts = (s.truncated(host.max_positions) for s in (positive, negative, prompts))
    for s, what in ((positive, "positive"), (negative, "negative"), (prompts, "steered")):
        s.check(host, what)
        _check_tokenizer(s, host, what)
    hooks = steered_hooks(host, depth, point, methods, state)
    inputs = {"host": host_fp, "hooks": hooks, "multipliers": [float(m) for m in multipliers], "metric": metric_name,
              "prompts": fingerprint([positive.prompts, negative.prompts, prompts.prompts]), "metric_ids": fingerprint(metric_ids)}

    def compute() -> list:
        metric = token_class_mass(metric_ids)
        out = []
        for hook in hooks:
            sv = contrast_vector(host, positive, negative, hook)
            out.append(dose_response(host, sv, prompts, list(multipliers), metric, metric_name, start=0.5, name=label).to_dict())
        return out

    return [DoseResponse.from_dict(d) for d in run.stage(f"steer-{label}", inputs, compute)]


def metric_tokens(source: str, host: Any) -> tuple[list[int], str]:
    """``(token ids, description)`` of the metric's token class: ``code-symbols`` or a text file's tokens."""
    from ..analysis.steer_prompts import code_symbol_tokens

    if source == "code-symbols":
        return code_symbol_tokens(host.tokenizer, host.vocab_size), "next-token mass on code-symbol tokens"
    p = Path(source)
    if not p.is_file():
        raise UniversalityError(f"metric tokens '{source}' is neither 'code-symbols' nor a text file")
    ids = sorted(set(host.tokenizer.encode(p.read_text(encoding="utf-8"), add_special_tokens=False)))
    if not ids:
        raise UniversalityError(f"metric tokens file '{source}' holds no tokens")
    return ids, f"next-token mass on the tokens of {p.name}"


def steer_job(cfg: SteerConfig, out: str | os.PathLike, device: torch.device, log: Callable[[str], None]) -> dict:
    """``universality steer``: read the prompt sets, build the steering vectors, measure the dose-response, report."""
    from ..activations import host_fingerprint

    label = cfg.model.rstrip("/").split("/")[-1]
    host = load_hosts({label: cfg.model}, device)[label]
    corpus = load_corpus_checked("default") if any(s in STDLIB_SOURCES for s in (cfg.positive, cfg.negative, cfg.prompts)) else None
    positive = read_prompts(cfg.positive, host, corpus, cfg.n_prompts, "positive", seed=0)
    negative = read_prompts(cfg.negative, host, corpus, cfg.n_prompts, "negative", seed=0)
    prompts = read_prompts(cfg.prompts, host, corpus, cfg.n_prompts, "steered", seed=1) if cfg.prompts else negative
    ids, name = metric_tokens(cfg.metric_tokens, host)
    steered_hooks(host, cfg.layer, cfg.hook, tuple(cfg.methods), cfg.state)  # a user mistake stops before the run folder
    run = start_run(out, "steer", cfg, log)
    res = RunResults(f"Steering: {label}", now(), environment(device),
                     {"name": "prompt files", "source": f"{cfg.positive} vs {cfg.negative}"},
                     models=[model_entry(label, host, cfg.model, "model")])
    curves = steer_stage(run, label, host, host_fingerprint(host), positive, negative, prompts, ids, name, cfg.layer, cfg.hook,
                         tuple(cfg.multipliers), cfg.state, tuple(cfg.methods))
    res.lens_steer = {"lens": [], "steering": [c.to_dict() for c in curves]}
    return finish(run, res, log)


def demo_lens_steer(run: RunDir, hosts: dict, corpus: Any, quick: bool, missing: list[str]) -> dict:
    """The demo's lens and steering stages for every host: a tuned lens each, and docstring-vs-code steering of held-out
    docstrings (residual CAA at mid depth, and the recurrent state there) measured by the mass on code-symbol tokens."""
    from ..activations import host_fingerprint
    from ..analysis.steer import PromptSet
    from ..analysis.steer_prompts import code_symbol_tokens, docstring_code_prompts
    from .lens import lens_stage

    n = 8 if quick else 16
    lens_size = dict(n_tokens=1024, eval_tokens=512, steps=30) if quick else dict(n_tokens=4096, eval_tokens=1024, steps=60)
    out: dict = {"lens": [], "steering": []}
    try:
        prose, code = docstring_code_prompts(corpus, 2 * n)
    except UniversalityError as e:
        missing.append(f"steering (docstring vs code): {e}")
        prose = code = []
    for label, host in hosts.items():
        fp = host_fingerprint(host)
        out["lens"].append(lens_stage(run, label, host, fp, corpus, seq_len=64, batch_tokens=256, **lens_size).to_dict())
        if not prose or host.tokenizer is None:
            continue
        tok = host.tokenizer
        curves = steer_stage(run, label, host, fp, PromptSet.from_texts(code[:n], tok, "code"),
                             PromptSet.from_texts(prose[:n], tok, "docstrings"),
                             PromptSet.from_texts(prose[n:], tok, "held-out docstrings"),
                             code_symbol_tokens(tok, host.vocab_size), "next-token mass on code-symbol tokens",
                             multipliers=(0.0, 2.0, 4.0, 8.0))
        out["steering"] += [c.to_dict() for c in curves]
    return out
