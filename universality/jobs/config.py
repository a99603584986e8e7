"""Typed configurations of the pipeline commands; the same classes feed the CLI and are saved in the run directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .._errors import UniversalityError

HOOK_KINDS = ("resid_pre", "resid_post", "mixer_in", "mixer_out", "mlp_in", "mlp_out")


def _sae_kinds() -> tuple[str, ...]:
    """Every registered dictionary kind (:func:`universality.sae.registered_kinds`)."""
    from ..sae.registry import registered_kinds

    return registered_kinds()


def _joint_kinds() -> tuple[str, ...]:
    """Every registered joint dictionary kind (:func:`universality.sae.registered_kinds` with ``joint=True``)."""
    from ..sae import joint  # noqa: F401  (registers the joint kinds)
    from ..sae.registry import registered_kinds

    return registered_kinds(joint=True)


def cli(*, positional: bool = False, flag: str | None = None, repeat: bool = False, metavar: str | None = None,
        choices: tuple[str, ...] | None = None) -> dict:
    """Field metadata telling :mod:`universality.cli` how to expose a config field.

    ``positional``: an argument without a flag (a list field takes any number); ``flag``: the option's name when
    it is not ``--field-name``; ``repeat``: a list given by repeating the flag instead of a comma-separated value;
    ``metavar``/``choices``: as in argparse.
    """
    return {"cli": {"positional": positional, "flag": flag, "repeat": repeat, "metavar": metavar, "choices": choices}}


def _pos_int(name: str, v: Any, low: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise UniversalityError(f"{name} {v!r} is not valid; use an integer of at least {low}")


@dataclass
class CompareConfig:
    """``universality compare``: features of two or more hosts on the same tokens."""

    models: list[str] = field(default_factory=list, metadata=cli(positional=True))
    """Checkpoint folders or hub ids, two or more."""
    names: list[str] | None = None
    """Labels of the models in the report (default: folder names)."""
    hook: str = "resid_post"
    """Per-block hook compared: one of resid_pre, resid_post, mixer_in, mixer_out, mlp_in, mlp_out."""
    layers: list[float] | None = None
    """Relative depths (0..1) whose dictionaries enter the layer×layer grid; ``None`` means every layer."""
    n_tokens: int = 16384
    """Tokens of the shared stream (activations, dictionaries and correlations)."""
    seq_len: int = 64
    """Tokens per sequence."""
    kind: str = "topk"
    """Dictionary kind: topk, batchtopk, relu or jumprelu."""
    n_latents: int = 512
    """Latents per dictionary."""
    k: int = 16
    """Active latents per token (TopK kinds)."""
    sae_epochs: int = 4
    """Passes over the cached tokens when training each dictionary."""
    n_boot: int = 30
    """Bootstrap resamples over tokens for the confidence intervals (0: intervals over features only)."""
    n_boot_refs: int | None = None
    """Bootstrap resamples for the floor and skyline reference lines (``None``: a third of ``n_boot``, at least 5;
    their intervals only frame the pair's, and each resample is an exact MPPC)."""
    family_threshold: float = 0.5
    """Minimum Pearson r of a mutual best match joining two features into an N-way family."""
    floor: bool = True
    """Add the random-init floor: the last model's architecture with untrained weights."""
    floor_models: dict[str, str] = field(default_factory=dict, metadata=cli(flag="--floor-model", metavar="NAME=PATH"))
    """Model name → untrained checkpoint to use as its floor (default: a fresh random init of the last model)."""
    sae_seed_skyline: bool = True
    """Add the skyline of a second dictionary seed on the first model."""
    seed_models: dict[str, str] = field(default_factory=dict, metadata=cli(flag="--seed-model", metavar="NAME=PATH"))
    """Model name → checkpoint of another training seed of it (model-seed skyline)."""
    top_matches: int = 3
    """Best-matched feature pairs shown with their top-activating contexts."""
    corpus: str = "default"
    """Corpus: ``default`` (stdlib source), a text file, a folder, a JSONL file or a saved HF dataset."""
    seed: int = 0
    """Seed of the token stream and the dictionaries."""
    joint: str | None = field(default=None, metadata=cli(choices=("crosscoder", "usae", "partitioned", "crosscoder_l1")))
    """Also train one joint dictionary over every model on the aligned rows: crosscoder, usae or partitioned (docs/joint.md)."""

    @property
    def ref_boot(self) -> int:
        """Resamples actually used for the reference lines (see ``n_boot_refs``)."""
        if self.n_boot_refs is not None:
            return self.n_boot_refs
        return max(5, self.n_boot // 3) if self.n_boot else 0

    def __post_init__(self):
        if len(self.models) < 2:
            raise UniversalityError(f"compare needs at least two models, got {len(self.models)}")
        if self.names is not None and (len(self.names) != len(self.models) or len(set(self.names)) != len(self.names)):
            raise UniversalityError(f"names must give one distinct label per model ({len(self.models)}), got {self.names}")
        if self.hook not in HOOK_KINDS:
            raise UniversalityError(f"hook '{self.hook}' is not valid; use one of {', '.join(HOOK_KINDS)}")
        if self.kind not in _sae_kinds():
            raise UniversalityError(f"kind '{self.kind}' is not valid; use one of {', '.join(_sae_kinds())}")
        if self.layers is not None and not all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in self.layers):
            raise UniversalityError(f"layers {self.layers} is not valid; give relative depths between 0 and 1")
        for name in ("n_tokens", "seq_len", "n_latents", "k", "sae_epochs", "top_matches"):
            _pos_int(name, getattr(self, name))
        _pos_int("n_boot", self.n_boot, 0)
        if self.n_boot_refs is not None:
            _pos_int("n_boot_refs", self.n_boot_refs, 0)
        if self.k >= self.n_latents:
            raise UniversalityError(f"k {self.k} must be smaller than n_latents {self.n_latents}")
        if not -1 <= self.family_threshold <= 1:
            raise UniversalityError(f"family_threshold {self.family_threshold} is not valid; use a value in [-1, 1]")
        if self.joint is not None and self.joint not in _joint_kinds():
            raise UniversalityError(f"joint '{self.joint}' is not valid; use one of {', '.join(_joint_kinds())}")

    @property
    def labels(self) -> list[str]:
        """Model labels: ``names`` or the last path component of each model."""
        if self.names:
            return list(self.names)
        out = []
        for m in self.models:
            base = m.rstrip("/").split("/")[-1] or m
            out.append(base if base not in out else f"{base}-{len(out)}")
        return out


@dataclass
class SeedsConfig:
    """``universality seeds``: several dictionaries on the same activations, and their overlap."""

    model: str = field(default="", metadata=cli(positional=True))
    """Checkpoint folder or hub id."""
    name: str | None = None
    """Label in the report (default: folder name)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Dictionary seeds (two or more)."""
    kinds: list[str] = field(default_factory=lambda: ["topk", "relu"])
    """Dictionary kinds compared."""
    n_latents: list[int] = field(default_factory=lambda: [512])
    """Dictionary sizes compared."""
    k: int = 16
    """Active latents per token (TopK kinds)."""
    hook: str = "mlp_out"
    """Per-block hook."""
    layer: float = 0.5
    """Relative depth (0..1) of the block."""
    n_tokens: int = 16384
    """Tokens of activations."""
    seq_len: int = 64
    """Tokens per sequence."""
    sae_epochs: int = 4
    """Passes over the tokens per dictionary."""
    threshold: float = 0.7
    """Cosine both matched encoder and decoder rows must exceed for a latent to count as shared."""
    corpus: str = "default"
    """Corpus (see ``compare``)."""

    def __post_init__(self):
        if not self.model:
            raise UniversalityError("seeds needs a model: a checkpoint folder or a hub id")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise UniversalityError(f"seeds {self.seeds} is not valid; give two or more distinct integers, e.g. 0,1,2")
        bad = [k for k in self.kinds if k not in _sae_kinds()]
        if bad or not self.kinds:
            raise UniversalityError(f"kinds {self.kinds} is not valid; use some of {', '.join(_sae_kinds())}")
        if self.hook not in HOOK_KINDS:
            raise UniversalityError(f"hook '{self.hook}' is not valid; use one of {', '.join(HOOK_KINDS)}")
        for n in self.n_latents:
            _pos_int("n_latents", n, 2)
            if self.k >= n:
                raise UniversalityError(f"k {self.k} must be smaller than every n_latents (got {n})")
        for name in ("k", "n_tokens", "seq_len", "sae_epochs"):
            _pos_int(name, getattr(self, name))
        if not 0 <= self.layer <= 1:
            raise UniversalityError(f"layer {self.layer} is not valid; give a relative depth between 0 and 1")
        if not -1 <= self.threshold <= 1:
            raise UniversalityError(f"threshold {self.threshold} is not valid; use a value in [-1, 1]")


@dataclass
class DemoConfig:
    """``universality demo``: the whole pipeline offline on the tiny zoo."""

    quick: bool = False
    """A reduced run for tests (test-size zoo, fewer tokens): about two minutes."""
    corpus: str = "default"
    """Corpus for activations (the zoo itself is trained on the default corpus)."""
    zoo_preset: str | None = None
    """Zoo preset; ``None`` picks ``test`` with ``quick`` and ``default`` otherwise."""
    zoo_home: str | None = None
    """Where the zoo lives (default ``$UNIVERSALITY_HOME`` or ``~/.cache/universality``)."""
    n_tokens: int | None = None
    """Tokens for the comparison (default 16384, quick 4096)."""
    n_latents: int | None = None
    """Latents per dictionary (default 512, quick 128)."""
    circuits_preset: str | None = None
    """Zoo preset whose Transformer, Mamba and RWKV the paper's circuit findings are tested on (they need models that
    do induction); ``None`` picks ``circuits``, or the ``zoo_preset`` itself with ``quick``."""
    explain: bool = True
    """Explain the compared dictionaries' features offline (token statistics) and write the feature browser."""

    def __post_init__(self):
        for name in ("n_tokens", "n_latents"):
            v = getattr(self, name)
            if v is not None:
                _pos_int(name, v, 2)


@dataclass
class ZooConfig:
    """``universality zoo``: train (or reuse) the tiny zoo models."""

    preset: str = "default"
    """Zoo preset: test, default, circuits or large."""
    home: str | None = None
    """Zoo folder (default ``$UNIVERSALITY_HOME`` or ``~/.cache/universality``)."""
    only: list[str] | None = None
    """Comma-separated member names to build (default: every member of the preset)."""


@dataclass
class CacheConfig:
    """``universality cache``: hook activations of a model over a token stream, as an activation store."""

    model: str = field(default="", metadata=cli(positional=True))
    """Checkpoint folder or hub id."""
    hooks: list[str] = field(default_factory=list, metadata=cli(flag="--hook", repeat=True))
    """Hook name, e.g. blocks.2.resid_post (repeat the flag for several)."""
    tokens: int = 16384
    """Number of tokens."""
    seq_len: int = 64
    """Tokens per sequence."""
    corpus: str = "default"
    """Corpus: ``default`` (the stdlib source), a text file, a folder, a JSONL file or a saved HF dataset."""

    def __post_init__(self):
        if not self.model:
            raise UniversalityError("cache needs a model: a checkpoint folder or a hub id")
        if not self.hooks:
            raise UniversalityError("cache needs at least one --hook, e.g. --hook blocks.0.resid_post")
        _pos_int("tokens", self.tokens)
        _pos_int("seq_len", self.seq_len, 2)


@dataclass
class TrainConfig:
    """``universality train``: a dictionary on a cached activation store."""

    store: str = field(default="", metadata=cli(positional=True))
    """Activation store folder (from ``universality cache``)."""
    hook: str | None = None
    """Hook of the store to train on (default: its only hook)."""
    kind: str = "topk"
    """Dictionary kind: topk, batchtopk, relu or jumprelu."""
    n_latents: int = 4096
    """Latents of the dictionary."""
    k: int = 32
    """Active latents per token (TopK kinds)."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""
    n_tokens: int | None = None
    """Training tokens (default: the trainer's, 300 batches)."""
    batch_size: int = 4096
    """Tokens per step."""

    def __post_init__(self):
        if not self.store:
            raise UniversalityError("train needs an activation store folder written by 'universality cache'")
        if self.kind not in _sae_kinds():
            raise UniversalityError(f"kind '{self.kind}' is not valid; use one of {', '.join(_sae_kinds())}")
        for name in ("n_latents", "k", "batch_size"):
            _pos_int(name, getattr(self, name))
        _pos_int("seed", self.seed, 0)
        if self.n_tokens is not None:
            _pos_int("n_tokens", self.n_tokens)


@dataclass
class CircuitsConfig:
    """``universality induction`` and ``universality off-by-one``: one circuit analysis per model."""

    models: list[str] = field(default_factory=list, metadata=cli(positional=True))
    """Checkpoint folders or hub ids."""
    n_prompts: int = 16
    """Prompts of the induction task (off-by-one uses half as many sequences, at least 2)."""

    def __post_init__(self):
        if not self.models:
            raise UniversalityError("induction and off-by-one need at least one model: a checkpoint folder or a hub id")
        _pos_int("n_prompts", self.n_prompts)


@dataclass
class ReportConfig:
    """``universality report``: render report.html and summary.md from a run directory's results.json."""

    run_dir: str = field(default="", metadata=cli(positional=True))
    """Run directory holding a results.json."""

    def __post_init__(self):
        if not self.run_dir:
            raise UniversalityError("report needs a run directory that holds a results.json")


DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunOptions:
    """Options every command takes besides its own config (not part of what is computed)."""

    out: str | None = None
    """Output folder (default runs/<command>)."""
    device: str = field(default="auto", metadata=cli(choices=DEVICES))
    """Where models and dictionaries run: auto, cpu or cuda."""
    quiet: bool = False
    """No progress bars or log lines."""

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UniversalityError(f"device '{self.device}' is not valid; use one of {', '.join(DEVICES)}")


def config_from_mapping(cls: type, values: Mapping[str, Any], source: str) -> Any:
    """Build ``cls`` from ``values``; an unknown key is an error naming it, the source and the valid keys."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise UniversalityError(f"{source} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}")
    try:
        return cls(**values)
    except TypeError as e:
        raise UniversalityError(f"{source} is not valid: {e}") from None


def config_dict(cfg: Any) -> dict:
    """JSON-ready dict of a config dataclass."""
    return asdict(cfg)


CIRCUIT_TASKS = ("induction",)


@dataclass
class CircuitGraphConfig:
    """``universality circuit``: attribution graphs through per-block transcoders (one per model), compared across models."""

    models: list[str] = field(default_factory=list, metadata=cli(positional=True))
    """Checkpoint folders or hub ids (Transformer, Mamba-1/2 or RWKV-4)."""
    prompt: str | None = None
    """Text to attribute, tokenized by each model (give this or --task)."""
    task: str | None = field(default=None, metadata=cli(choices=CIRCUIT_TASKS))
    """A built-in prompt instead of --prompt: 'induction' = random tokens, then the same tokens again up to the
    last one's earlier copy (the target is the token that followed it)."""
    target: str | None = None
    """One-token text whose logit is the graph's target (default: the task's answer, or the most probable next tokens)."""
    half: int = 16
    """Induction task: random tokens before the repeat (the prompt has 2·half − 1 tokens)."""
    corpus: str = "default"
    """Text the per-block transcoders are trained on: 'default' (stdlib source), a file, a folder or JSONL."""
    train_tokens: int = 60_000
    """Corpus tokens per model the transcoders are trained on."""
    seq_len: int = 64
    """Sequence length of the training stream."""
    n_latents: int = 512
    """Latents per block's transcoder."""
    k: int = 16
    """Active latents per token (TopK transcoders)."""
    train_steps: int = 200
    """Optimizer steps per transcoder (batches of 1,024 tokens)."""
    batch_size: int = 128
    """Targets per backward pass (memory grows with it times the prompt length)."""
    max_feature_nodes: int = 0
    """Keep only this many features, the most influential (0: every active feature, exact decompositions)."""
    node_threshold: float = 0.8
    """Pruning: keep the nodes carrying this share of the influence on the logits."""
    edge_threshold: float = 0.98
    """Pruning: keep the edges carrying this share of the remaining influence."""
    seed: int = 0
    """Seed of the transcoders and of the induction prompt."""

    def __post_init__(self):
        if not self.models:
            raise UniversalityError("circuit needs at least one model: a checkpoint folder or a hub id")
        if (self.prompt is None) == (self.task is None):
            raise UniversalityError("circuit needs exactly one of --prompt TEXT or --task induction")
        if self.prompt is not None and not self.prompt:
            raise UniversalityError("the prompt is empty; give at least one token of text")
        if self.task is not None and self.task not in CIRCUIT_TASKS:
            raise UniversalityError(f"task '{self.task}' is not valid; use one of {', '.join(CIRCUIT_TASKS)}")
        for name in ("half", "train_tokens", "seq_len", "n_latents", "k", "train_steps", "batch_size"):
            _pos_int(name, getattr(self, name), 2 if name == "half" else 1)
        _pos_int("max_feature_nodes", self.max_feature_nodes, 0)
        _pos_int("seed", self.seed, 0)
        for name in ("node_threshold", "edge_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise UniversalityError(f"{name} {v!r} is not valid; use a number between 0 and 1")


SKIP_BOS = ("auto", "yes", "no")


@dataclass
class EvalConfig:
    """``universality eval``: SAEBench's core metrics and sparse probing of dictionaries on one model, then a report."""

    dictionaries: list[str] = field(default_factory=list, metadata=cli(positional=True))
    """Dictionary folders in any layout ``sae.load`` reads (ours, SAELens, sparsify, Llama Scope, dictionary_learning, circuit-tracer)."""
    host: str = ""
    """The model the dictionaries were trained on: a checkpoint folder or hub id."""
    hookpoint: str | None = None
    """Which dictionary of a multi-dictionary folder (a sparsify hookpoint, a circuit-tracer id or layer)."""
    corpus: str = "default"
    """Text to evaluate on (``default``: the stdlib's Python source, which also gives the probing labels)."""
    n_sequences: int = 32
    """Token windows evaluated."""
    seq_len: int = 128
    """Tokens per window (capped at the model's context)."""
    batch_size: int = 8
    """Windows per forward pass."""
    skip_bos: str = field(default="auto", metadata=cli(choices=SKIP_BOS))
    """Leave position 0 out: auto (as the dictionary's library says, e.g. Llama Scope), yes or no."""
    probe: bool = True
    """Run sparse probing on docstring / comment / string / code labels (Python corpora only)."""
    norm_scaling_factor: float | None = None
    """SAELens' expected_average_only_in factor, for folders that need it."""

    def __post_init__(self):
        if not self.dictionaries:
            raise UniversalityError("eval needs at least one dictionary folder")
        if not self.host:
            raise UniversalityError("eval needs --host, the model the dictionaries read (a checkpoint folder or hub id)")
        for name in ("n_sequences", "batch_size"):
            _pos_int(name, getattr(self, name))
        _pos_int("seq_len", self.seq_len, 2)
        if self.skip_bos not in SKIP_BOS:
            raise UniversalityError(f"skip_bos '{self.skip_bos}' is not valid; use one of {', '.join(SKIP_BOS)}")
EXPLAIN_SCOPES = ("pairs", "all")


@dataclass
class ExplainConfig:
    """``universality explain RUN_DIR|DICT``: explain and score dictionary features, compare explanations across
    models and write the feature browser (offline token statistics unless an endpoint is given)."""

    target: str = field(default="", metadata=cli(positional=True, metavar="RUN_DIR|DICT"))
    """A run directory of compare or demo, or one dictionary folder (then --store is needed)."""
    store: str | None = None
    """Activation store to draw contexts from (for a dictionary folder; a run directory has its own)."""
    model: str | None = None
    """Checkpoint whose tokenizer and unembedding serve a dictionary folder (token texts and logits)."""
    out: str | None = None
    """Output folder (default: the run directory itself; runs/explain for a dictionary folder)."""
    scope: str = field(default="pairs", metadata=cli(choices=EXPLAIN_SCOPES))
    """Which dictionaries of a run: pairs (the compared models' middle layers) or all."""
    max_latents: int | None = None
    """Explain only the first N latents of each dictionary (default: every latent)."""
    window: int = 32
    """Tokens per context window."""
    n_train: int = 40
    """Activating windows shown to the explainer."""
    n_test: int = 20
    """Held-out activating windows per scorer."""
    n_random: int = 10
    """Held-out non-activating windows from random rows."""
    n_neighbour: int = 10
    """Held-out non-activating windows where a decoder neighbour fires."""
    scorers: list[str] = field(default_factory=lambda: ["detection", "fuzz"])
    """Scorers: detection and/or fuzz."""
    endpoint: str | None = None
    """OpenAI-compatible API root (e.g. http://localhost:8000/v1); none: the offline token-statistics explainer."""
    llm_model: str | None = None
    """Model name at the endpoint."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (never written anywhere)."""
    require_key: bool = False
    """Fail at once when the API key variable is unset (hosted APIs)."""
    concurrency: int = 8
    """Requests in flight at once."""
    timeout: float = 60.0
    """Seconds to wait for one reply."""
    max_retries: int = 5
    """Tries after the first for a failed request."""
    embeddings: bool = True
    """Compare explanations across models by sentence embeddings (needs the interp extra)."""
    seed: int = 0
    """Seed of the context draws and controls."""

    def __post_init__(self):
        if not self.target:
            raise UniversalityError("explain needs a run directory (of compare or demo) or a dictionary folder")
        if self.scope not in EXPLAIN_SCOPES:
            raise UniversalityError(f"scope '{self.scope}' is not valid; use one of {', '.join(EXPLAIN_SCOPES)}")
        bad = [s for s in self.scorers if s not in ("detection", "fuzz")]
        if bad or not self.scorers:
            raise UniversalityError(f"scorers {self.scorers} are not valid; use detection and/or fuzz")
        for name in ("window", "n_train", "n_test", "concurrency"):
            _pos_int(name, getattr(self, name), 2 if name == "window" else 1)
        for name in ("n_random", "n_neighbour", "max_retries", "seed"):
            _pos_int(name, getattr(self, name), 0)
        if self.max_latents is not None:
            _pos_int("max_latents", self.max_latents)
        if (self.endpoint is None) != (self.llm_model is None):
            raise UniversalityError("give both --endpoint and --llm-model to explain with a language model, or neither "
                                    "for the offline token-statistics explainer")
        if not self.timeout > 0:
            raise UniversalityError(f"timeout {self.timeout!r} is not valid; use a positive number of seconds")
@dataclass
class LensConfig:
    """``universality lens``: logit-lens and tuned-lens curves (KL to the final distribution, top-1, entropy) per model."""

    models: list[str] = field(default_factory=list, metadata=cli(positional=True))
    """Checkpoint folders or hub ids."""
    n_tokens: int = 65536
    """Training tokens of each tuned lens (from the corpus's training split)."""
    eval_tokens: int = 4096
    """Held-out tokens the curves are measured on."""
    seq_len: int = 64
    """Tokens per sequence."""
    steps: int = 250
    """Optimizer steps of each tuned lens."""
    batch_tokens: int = 512
    """Tokens per optimizer step."""
    corpus: str = "default"
    """Corpus (see ``compare``)."""

    def __post_init__(self):
        if not self.models:
            raise UniversalityError("lens needs at least one model: a checkpoint folder or a hub id")
        for name in ("n_tokens", "eval_tokens", "steps", "batch_tokens"):
            _pos_int(name, getattr(self, name))
        _pos_int("seq_len", self.seq_len, 2)


@dataclass
class SteerConfig:
    """``universality steer``: contrastive activation addition (and state steering on Mamba / RWKV) with a dose-response curve."""

    model: str = field(default="", metadata=cli(positional=True))
    """Checkpoint folder or hub id."""
    positive: str = ""
    """Text file of positive prompts, one per line (or ``stdlib:code`` / ``stdlib:docstrings`` from the default corpus)."""
    negative: str = ""
    """Text file of negative prompts, one per line (or ``stdlib:code`` / ``stdlib:docstrings``)."""
    prompts: str | None = None
    """Prompts to steer and measure (default: the negative prompts); a text file, one per line."""
    hook: str = "resid_post"
    """Per-block point of the residual (CAA) steering vector."""
    layer: float = 0.5
    """Relative depth (0..1) of the steered block."""
    state: bool = True
    """Also steer the recurrent state (Mamba ``ssm.state``, RWKV ``att.state``) of the same block, where the host has one."""
    methods: list[str] = field(default_factory=lambda: ["residual", "state", "conv-state"])
    """Steering methods: ``residual`` (CAA at ``hook``), ``state`` (Mamba / Mamba-2 ``ssm.state``, RWKV ``att.state``),
    ``conv-state`` (Mamba-1's conv state: its last d_conv - 1 conv inputs); ones the host lacks are skipped."""
    multipliers: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])
    """Multipliers of the steering vector (the dose-response curve's x axis)."""
    metric_tokens: str = "code-symbols"
    """Token class whose next-token probability mass is measured: ``code-symbols`` or a text file whose tokens form it."""
    n_prompts: int = 32
    """Prompts per set taken from ``stdlib:`` sources (files are used whole)."""

    def __post_init__(self):
        if not self.model:
            raise UniversalityError("steer needs a model: a checkpoint folder or a hub id")
        if not self.positive or not self.negative:
            raise UniversalityError("steer needs --positive FILE and --negative FILE (text files, one prompt per line)")
        if self.hook not in HOOK_KINDS:
            raise UniversalityError(f"hook '{self.hook}' is not valid; use one of {', '.join(HOOK_KINDS)}")
        if not 0 <= self.layer <= 1:
            raise UniversalityError(f"layer {self.layer} is not valid; give a relative depth between 0 and 1")
        if not self.multipliers:
            raise UniversalityError("multipliers is empty; give numbers such as 0,1,2,4")
        bad = [m for m in self.methods if m not in ("residual", "state", "conv-state")]
        if not self.methods or bad:
            raise UniversalityError(f"steering methods '{','.join(self.methods)}' are not valid; give a comma-separated subset "
                                    "of residual, state, conv-state")
        _pos_int("n_prompts", self.n_prompts, 2)
