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

    def __post_init__(self):
        for name in ("n_tokens", "n_latents"):
            v = getattr(self, name)
            if v is not None:
                _pos_int(name, v, 2)


@dataclass
class ZooConfig:
    """``universality zoo``: train (or reuse) the tiny zoo models."""

    preset: str = "default"
    """Zoo preset: test, default or large."""
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
