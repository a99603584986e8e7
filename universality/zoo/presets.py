"""Zoo presets: sizes, training budget and the list of models for ``"test"``, ``"default"`` and ``"large"``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .._errors import UniversalityError

ARCHS = ("gpt_neox", "mamba", "mamba2", "rwkv")


@dataclass(frozen=True)
class ModelSpec:
    """One zoo member: an architecture, a seed, and whether it is trained."""

    name: str
    """Folder name under the preset, e.g. ``"transformer"``, ``"mamba-seed1"``, ``"rwkv-untrained"``."""
    arch: str
    """Hugging Face model type: ``"gpt_neox"``, ``"mamba"``, ``"mamba2"`` or ``"rwkv"``."""
    seed: int = 0
    """Seed of the initial weights and of the batch order."""
    trained: bool = True
    """False for the random-init baselines (saved at initialisation)."""

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UniversalityError(f"zoo architecture '{self.arch}' is not valid; use one of {', '.join(ARCHS)}")


@dataclass(frozen=True)
class CopyCurriculum:
    """One architecture's own copy warm-up: pure in-context copying rows before the language mix.

    Replaces the preset's ``copy_warmup_*`` fields for that architecture (:attr:`ZooPreset.copy_warmup_by_arch`).
    The random segments start from a few token ids and the id range doubles up to the whole vocabulary:
    associative recall over a small vocabulary is found in a few hundred steps where the whole one shows
    nothing for thousands (docs/zoo.md)."""

    steps: int
    """Optimizer steps of the warm-up."""
    seq_len: int = 32
    """Row length (segments of 4 to ``seq_len / 2`` tokens, tiled)."""
    batch: int = 16
    """Rows per step."""
    start_ids: int = 0
    """Distinct token ids the segments are drawn from at first; 0: the whole vocabulary throughout."""
    hold: int = 0
    """Steps at ``start_ids`` before the id range starts doubling."""
    double_every: int = 250
    """Steps between doublings of the id range after ``hold`` (capped at the vocabulary)."""

    def __post_init__(self):
        for key in ("steps", "seq_len", "batch", "start_ids", "hold", "double_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and key in ("seq_len", "batch", "double_every")):
                raise UniversalityError(f"copy curriculum field {key}={v!r} is not valid; use a non-negative integer "
                                        "(positive for seq_len, batch and double_every)")
        if self.seq_len < 8:
            raise UniversalityError(f"copy curriculum seq_len {self.seq_len} is too short; use at least 8")

    def ids_at(self, step: int, n_ids: int) -> int:
        """Distinct ids the segments of warm-up step ``step`` are drawn from, out of ``n_ids``."""
        if not self.start_ids or step < self.hold:
            return n_ids if not self.start_ids else min(n_ids, self.start_ids)
        return min(n_ids, self.start_ids * 2 ** ((step - self.hold) // self.double_every + 1))


def _members(archs: tuple[str, ...], second_seed: tuple[str, ...]) -> tuple[ModelSpec, ...]:
    label = {"gpt_neox": "transformer", "mamba": "mamba", "mamba2": "mamba2", "rwkv": "rwkv"}
    out = [ModelSpec(label[a], a, 0, True) for a in archs]
    out += [ModelSpec(f"{label[a]}-seed1", a, 1, True) for a in second_seed]
    out += [ModelSpec(f"{label[a]}-untrained", a, 0, False) for a in archs]
    return tuple(out)


@dataclass(frozen=True)
class ZooPreset:
    """Everything that decides a zoo build; its fingerprint names the cache."""

    name: str
    """Preset name (``"test"``, ``"default"``, ``"large"``)."""
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size (2 specials + 256 bytes + merges)."""
    tokenizer_chars: int = 6_000_000
    """Characters of the training split the tokenizer is trained on."""
    d_model: int = 128
    """Residual width of every architecture."""
    n_layers: int = 4
    """Blocks of the Transformer and RWKV (attention/time-mix + MLP/channel-mix per block)."""
    n_ssm_layers: int = 8
    """Blocks of the Mamba models (one mixer per block, so twice as many, as in Mamba vs Pythia)."""
    n_heads: int = 4
    """Attention heads of the Transformer."""
    seq_len: int = 128
    """Training and evaluation context."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    steps: int = 600
    """Optimizer steps per trained model."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 5% of steps, cosine decay to 10%)."""
    repeat_fraction: float = 0.25
    """Share of training sequences that are repeated segments (so induction can form)."""
    repeat_random_share: float = 0.5
    """Share of the repeated segments made of uniform random tokens (the rest repeat a piece of text)."""
    copy_warmup_steps: int = 0
    """Optimizer steps, before the language mix, on short rows made only of tiled uniform-random segments.

    Pure in-context copying, on short rows, is where induction forms cheaply: the model's only way to
    beat log(vocab) is to copy, and short rows make each step cheap (docs/zoo.md). 0 turns it off."""
    copy_warmup_steps_float32: int | None = None
    """Copy warm-up steps when a bf16-allowing preset trains in float32 (bfloat16 does not pay here); ``None``:
    ``copy_warmup_steps``. In float32 the induction phase change comes later: with the default preset's 600
    steps one seed of two formed induction on an AVX2 machine and neither in float32 on AVX-512; with 1,000
    both did (docs/zoo.md)."""
    copy_warmup_archs: tuple[str, ...] = ("gpt_neox",)
    """Architectures that get the copy warm-up. Mamba-1 did not learn to copy from it in 600 steps (rows of 16 or
    32 tokens), and RWKV-4 cannot address its past by content, so by default only the Transformer does."""
    copy_warmup_seq_len: int = 16
    """Row length of the copy warm-up (segments of 4 to seq_len/2 tokens, tiled)."""
    copy_warmup_batch: int = 16
    """Rows per copy warm-up step."""
    copy_warmup_by_arch: tuple[tuple[str, CopyCurriculum], ...] = ()
    """``(architecture, CopyCurriculum)`` pairs: those architectures get their own copy warm-up instead of the
    ``copy_warmup_*`` fields above (whether or not they are in ``copy_warmup_archs``)."""
    state_size_by_arch: tuple[tuple[str, int], ...] = ()
    """``(architecture, state size)`` pairs replacing the defaults: the SSM state size of ``"mamba"`` / ``"mamba2"``
    (16 and 32), the WKV channels (``attention_hidden_size``) of ``"rwkv"`` (``d_model``). The state bounds how many
    key-value pairs one layer can recall from context (docs/zoo.md)."""
    rwkv_recall_init: bool = False
    """Start RWKV-4 members from the recall prior of :func:`universality.zoo.models.init_rwkv_for_recall` instead of
    transformers' init (whose 1e-4 embeddings stall learning to copy). With it and 1,024-2,048 WKV channels a
    two-block RWKV-4 learns the induction probe (docs/zoo.md, "Fourth round")."""
    eval_sequences: int = 48
    """Held-out sequences for the loss, and repeated random sequences for the induction score."""
    bf16: bool = False
    """Allow bfloat16 autocast for the Transformer and RWKV (mixed precision; weights stay float32). A build
    uses it only where :func:`universality.precision.bf16_pays` says bfloat16 is faster on this machine
    (:func:`resolve_precision`); the resolved value is what the build fingerprint and each member record."""
    checkpoint_every: int = 100
    """Steps between training checkpoints (an interrupt loses at most this many)."""
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)
    """Members of the zoo."""

    def __post_init__(self):
        for key in ("vocab_size", "d_model", "n_layers", "n_ssm_layers", "n_heads", "seq_len", "batch_size", "steps",
                    "eval_sequences", "checkpoint_every", "tokenizer_chars", "copy_warmup_batch"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 1:
                raise UniversalityError(f"zoo preset field {key}={v!r} is not valid; use a positive integer")
        if self.d_model % self.n_heads:
            raise UniversalityError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.repeat_random_share <= 1.0:
            raise UniversalityError(f"repeat_random_share {self.repeat_random_share} is not valid; use 0 <= p <= 1")
        if not 0.0 <= self.repeat_fraction < 1.0:
            raise UniversalityError(f"repeat_fraction {self.repeat_fraction} is not valid; use 0 <= p < 1")
        if not isinstance(self.copy_warmup_steps, int) or self.copy_warmup_steps < 0:
            raise UniversalityError(f"copy_warmup_steps {self.copy_warmup_steps!r} is not valid; use an integer >= 0")
        fp32_steps = self.copy_warmup_steps_float32
        if fp32_steps is not None and (not isinstance(fp32_steps, int) or fp32_steps < 0):
            raise UniversalityError(f"copy_warmup_steps_float32 {fp32_steps!r} is not valid; use an integer >= 0 or None")
        bad = [a for a in self.copy_warmup_archs if a not in ARCHS]
        if bad:
            raise UniversalityError(f"copy_warmup_archs {bad} not valid; use architectures from {', '.join(ARCHS)}")
        if not isinstance(self.copy_warmup_seq_len, int) or not 8 <= self.copy_warmup_seq_len <= self.seq_len:
            raise UniversalityError(f"copy_warmup_seq_len {self.copy_warmup_seq_len!r} is not valid; use an integer from 8 to seq_len ({self.seq_len})")
        if self.seq_len < 16:
            raise UniversalityError(f"seq_len {self.seq_len} is too short for the induction measurement; use at least 16")
        pairs = []
        for entry in self.copy_warmup_by_arch:  # a JSON round trip (build workers) gives lists and dicts back
            arch, cur = entry
            if isinstance(cur, dict):
                cur = CopyCurriculum(**cur)
            if arch not in ARCHS or not isinstance(cur, CopyCurriculum):
                raise UniversalityError(f"copy_warmup_by_arch entry {entry!r} is not valid; use (architecture, CopyCurriculum) "
                                        f"with an architecture from {', '.join(ARCHS)}")
            if cur.seq_len > self.seq_len:
                raise UniversalityError(f"copy curriculum of {arch}: seq_len {cur.seq_len} exceeds the preset's seq_len {self.seq_len}")
            pairs.append((arch, cur))
        object.__setattr__(self, "copy_warmup_by_arch", tuple(pairs))
        sizes = []
        for entry in self.state_size_by_arch:
            arch, n = entry
            if arch not in ("mamba", "mamba2", "rwkv") or isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise UniversalityError(f"state_size_by_arch entry {entry!r} is not valid; use (architecture, size) with "
                                        "architecture mamba, mamba2 or rwkv and a positive integer size")
            sizes.append((arch, n))
        object.__setattr__(self, "state_size_by_arch", tuple(sizes))

    def as_dict(self) -> dict:
        """JSON-able form (the fingerprint input)."""
        d = asdict(self)
        for key in ("copy_warmup_by_arch", "state_size_by_arch", "rwkv_recall_init"):  # fingerprints of presets without them stay as they were
            if not getattr(self, key):
                del d[key]
        return d

    def state_size(self, arch: str, default: int) -> int:
        """SSM state size of ``arch``: its entry in :attr:`state_size_by_arch`, else ``default``."""
        return dict(self.state_size_by_arch).get(arch, default)

    def curriculum(self, arch: str) -> CopyCurriculum | None:
        """The copy warm-up of ``arch``: its own (``copy_warmup_by_arch``), the shared one, or ``None`` for none."""
        own = dict(self.copy_warmup_by_arch).get(arch)
        if own is not None:
            return own if own.steps else None
        if arch in self.copy_warmup_archs and self.copy_warmup_steps:
            return CopyCurriculum(self.copy_warmup_steps, self.copy_warmup_seq_len, self.copy_warmup_batch)
        return None


PRESETS: dict[str, ZooPreset] = {
    "test": ZooPreset("test", vocab_size=320, tokenizer_chars=200_000, d_model=32, n_layers=2, n_ssm_layers=2, n_heads=2,
                      seq_len=32, batch_size=8, steps=30, lr=3e-3, eval_sequences=8, checkpoint_every=10,
                      copy_warmup_steps=4, copy_warmup_seq_len=8, copy_warmup_batch=4,
                      models=_members(ARCHS, ("gpt_neox", "mamba"))),
    "default": ZooPreset("default", vocab_size=2048, tokenizer_chars=3_000_000, d_model=192, n_heads=6, batch_size=8,
                         steps=380, lr=4e-3, repeat_fraction=0.5, repeat_random_share=0.75, bf16=True, checkpoint_every=50,
                         copy_warmup_steps=600, copy_warmup_steps_float32=1000,
                         models=_members(ARCHS, ("gpt_neox", "mamba"))),
    # small two-block models, context 64, each architecture with a copy curriculum that starts from 64 token ids:
    # induction in every architecture, for the circuit analyses (docs/zoo.md "The circuits preset"). Mamba-1 grows
    # its id range twice as slowly, and both Mambas get a 64-dim state (room to recall the probe's 32 pairs); RWKV-4
    # gets 2,048 WKV channels (its state is one scalar average per channel), starts from the recall prior and
    # grows its id range faster.
    "circuits": ZooPreset("circuits", vocab_size=2048, tokenizer_chars=3_000_000, d_model=64, n_layers=2, n_ssm_layers=2,
                          n_heads=2, seq_len=64, batch_size=16, steps=600, lr=4e-3, repeat_fraction=0.5,
                          repeat_random_share=0.75, checkpoint_every=250,
                          copy_warmup_by_arch=tuple((a, CopyCurriculum(steps=2250, seq_len=32, batch=16, start_ids=64,
                                                                       hold=1000, double_every=250)) for a in ("gpt_neox", "mamba2"))
                          + (("mamba", CopyCurriculum(steps=3500, seq_len=32, batch=16, start_ids=64, hold=500, double_every=500)),
                             ("rwkv", CopyCurriculum(steps=1500, seq_len=32, batch=16, start_ids=64, hold=500, double_every=200))),
                          state_size_by_arch=(("mamba", 64), ("mamba2", 64), ("rwkv", 2048)), rwkv_recall_init=True,
                          models=_members(ARCHS, ())),
    "large": ZooPreset("large", vocab_size=8192, tokenizer_chars=20_000_000, d_model=256, n_layers=6, n_ssm_layers=12,
                       n_heads=8, seq_len=256, batch_size=32, steps=4000, lr=2e-3, eval_sequences=128, bf16=True, copy_warmup_steps=600,
                       checkpoint_every=250, models=_members(ARCHS, ("gpt_neox", "mamba", "mamba2", "rwkv"))),
}


def resolve_precision(p: ZooPreset) -> ZooPreset:
    """``p`` as it trains on this machine: ``bf16`` off where bfloat16 does not pay (AVX2-only CPUs), and
    then the float32 copy warm-up length (:attr:`ZooPreset.copy_warmup_steps_float32`) in place of the bf16 one."""
    from ..precision import bf16_pays

    if not p.bf16 or bf16_pays():
        return p
    steps = p.copy_warmup_steps if p.copy_warmup_steps_float32 is None else p.copy_warmup_steps_float32
    return replace(p, bf16=False, copy_warmup_steps=steps, copy_warmup_steps_float32=None)


def get_preset(preset: str | ZooPreset) -> ZooPreset:
    """The :class:`ZooPreset` named ``preset`` (or ``preset`` itself)."""
    if isinstance(preset, ZooPreset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise UniversalityError(f"zoo preset '{preset}' is not valid; use one of {', '.join(PRESETS)}") from None
