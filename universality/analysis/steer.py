"""Steering any host through the hook vocabulary: activation addition, state steering, feature steering.

* **CAA** (contrastive activation addition, :func:`contrast_vector` on a residual point): the mean
  activation over positive prompts minus the mean over negative prompts at one hook and position,
  added with a multiplier at every position from ``start`` on (:func:`steering_hooks`).
* **State steering** on the recurrent state: the same contrast taken on Mamba's ``ssm.state``
  ``[d_inner, d_state]``, Mamba-2's ``ssm.state`` ``[heads, head_dim, d_state]``, Mamba's conv state
  (``ssm.conv_state``: the last ``d_conv - 1`` inputs of the causal conv, ``[d_conv - 1, d_inner]``) or
  RWKV's ``att.state`` (in real numerator/denominator space, ``[A, 2]``) after each prompt, added to
  the state the suffix starts from. Only positions ``>= start`` see it; later states follow the
  recurrence (Mamba through the host's state patching, the conv state through the conv's window,
  RWKV by the linear decay of its numerator and denominator).
* **Feature steering**: ``α ×`` a dictionary latent's decoder direction (:func:`feature_vector`),
  or the latent clamped to a value in a spliced dictionary (:func:`clamp_hooks`).

Every steered run is one forward of the prompt batch (:func:`steered_logits`); a multiplier that
makes the logits non-finite is one clear error. :func:`dose_response` turns multipliers into a
curve of a metric with intervals over prompts; :mod:`.steer_cross` compares the effect of matched
features across models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import UniversalityError

CONV_STATE = "ssm.conv_state"
"""Mamba-1's conv state after a prefix: the last ``d_conv - 1`` conv inputs (``ssm.in_x`` rows), ``[d_conv - 1, d_inner]``.
A steering-only point (not in the host's hook vocabulary): it is read from and written through ``ssm.in_x`` /
``ssm.conv_out``."""
STATE_POINTS = ("ssm.state", "att.state", CONV_STATE)
"""Per-block points whose steering is state steering."""
METHODS = ("residual", "state", "feature")
"""Steering methods a :class:`SteeringVector` may carry."""


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class PromptSet:
    """Prompts as token ids, with the fingerprint of the tokenizer that made them."""

    prompts: list[list[int]]
    """One list of token ids per prompt."""
    tokenizer: str = ""
    """Fingerprint of the tokenizer (``""``: unknown, taken to be the host's)."""
    label: str = ""
    """Where the prompts came from (a file name), for messages."""

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any, label: str = "") -> "PromptSet":
        """Tokenize ``texts`` with ``tokenizer`` (no special tokens); empty texts are dropped."""
        from ..data.tokenizing import tokenizer_fingerprint

        ids = [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts if t.strip()]
        return cls([p for p in ids if p], tokenizer_fingerprint(tokenizer), label)

    def truncated(self, max_len: int | None) -> "PromptSet":
        """The same prompts cut to their first ``max_len`` tokens (``None``: unchanged), e.g. a host's ``max_positions``."""
        if max_len is None:
            return self
        return PromptSet([p[:max_len] for p in self.prompts], self.tokenizer, self.label)

    def check(self, host: Any, what: str) -> None:
        """One sentence when the set is empty, holds an empty prompt or ids outside ``host``'s vocabulary."""
        name = f"{what} prompts" + (f" ({self.label})" if self.label else "")
        if not self.prompts:
            raise UniversalityError(f"the {name} are empty; give at least one non-empty prompt")
        if any(len(p) == 0 for p in self.prompts):
            raise UniversalityError(f"the {name} include an empty prompt; every prompt needs at least one token")
        hi = max(max(p) for p in self.prompts)
        lo = min(min(p) for p in self.prompts)
        if lo < 0 or hi >= host.vocab_size:
            raise UniversalityError(f"the {name} hold token id {hi if hi >= host.vocab_size else lo}, outside this "
                                    f"{host.arch} host's vocabulary 0..{host.vocab_size - 1}; tokenize them with its tokenizer")


def pad_prompts(prompts: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``tokens [b, t_max]`` and ``lengths [b]`` (causal models never read the padding of a prompt)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    tokens = torch.full((len(prompts), int(lengths.max())), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = torch.as_tensor(list(p), dtype=torch.long)
    return tokens, lengths


# ------------------------------------------------------------------------------------------ vectors
@dataclass
class SteeringVector:
    """What is added: ``vector`` (one position's shape at ``hook``) times a multiplier."""

    hook: str
    """Full hook name, e.g. ``blocks.2.resid_post``, ``blocks.2.ssm.state``, ``blocks.1.att.state``."""
    vector: torch.Tensor
    """``[d_model]`` (residual points), ``[d_inner, d_state]`` (Mamba ``ssm.state``), ``[heads, head_dim, d_state]``
    (Mamba-2 ``ssm.state``), ``[d_conv - 1, d_inner]`` (``ssm.conv_state``, oldest input first) or ``[A, 2]``
    (``att.state``: real numerator and denominator, float64)."""
    method: str = "residual"
    """``"residual"``, ``"state"`` or ``"feature"``."""
    label: str = ""

    def __post_init__(self):
        if self.method not in METHODS:
            raise UniversalityError(f"steering method '{self.method}' is not valid; use one of {', '.join(METHODS)}")

    @property
    def point(self) -> str:
        """The per-block point (``resid_post``, ``ssm.state``...)."""
        return self.hook.split(".", 2)[-1] if self.hook.startswith("blocks.") else self.hook


def _point(hook: str) -> str:
    return hook.split(".", 2)[-1] if hook.startswith("blocks.") else hook


def _real_rwkv_state(states: torch.Tensor) -> torch.Tensor:
    """RWKV states ``[..., A, 3]`` (num, den, log_scale) → real ``[..., A, 2]`` float64 numerator and denominator."""
    s = states.double()
    return s[..., :2] * torch.exp(s[..., 2:3])


@torch.no_grad()
def activations_at(host: Any, prompts: PromptSet, hook: str, position: int = -1, batch: int = 32) -> torch.Tensor:
    """``hook``'s value at ``position`` of every prompt: ``[n_prompts, *shape]`` (negative positions count from each
    prompt's end; ``att.state`` comes as real numerator and denominator ``[A, 2]`` in float64; ``ssm.conv_state`` as
    the ``d_conv - 1`` conv inputs up to and including ``position``, ``[d_conv - 1, d_inner]``, zeros before the prompt)."""
    read = _read_hook(host, hook)
    out = []
    for s in range(0, len(prompts.prompts), batch):
        part = prompts.prompts[s:s + batch]
        tokens, lengths = pad_prompts(part)
        _, cache = host.run_with_cache(tokens, [read], return_logits=False)
        x = cache[read]
        pos = lengths + position if position < 0 else torch.full_like(lengths, position)
        if bool((pos < 0).any()) or bool((pos >= lengths).any()):
            raise UniversalityError(f"position {position} lies outside some prompt (shortest has {int(lengths.min())} tokens)")
        if _point(hook) == CONV_STATE:
            out.append(_conv_windows(x.double(), pos.to(x.device), _conv_width(host, host.layer_of(read)) - 1))
            continue
        rows = x[torch.arange(len(part)), pos.to(x.device)]
        out.append(_real_rwkv_state(rows) if _point(hook) == "att.state" else rows.double())
    return torch.cat(out).cpu()


def _mamba1(host: Any) -> bool:
    return host.arch == "mamba" and getattr(host, "model_type", "") == "mamba" and hasattr(host.model, "backbone")


def _read_hook(host: Any, hook: str) -> str:
    """The host hook that carries ``hook``'s value (``ssm.in_x`` for ``ssm.conv_state``), validated."""
    if _point(hook) != CONV_STATE:
        host.validate_names([hook])
        return hook
    if not _mamba1(host):
        raise UniversalityError(f"hook '{hook}' (the conv state) exists on Mamba-1 hosts only; this is a "
                                f"{getattr(host, 'model_type', host.arch)} host (steer its ssm.state instead)")
    read = hook[: -len(CONV_STATE)] + "ssm.in_x"
    host.validate_names([read])
    return read


def _conv_width(host: Any, layer: int) -> int:
    """``d_conv``: the causal conv's kernel width in Mamba block ``layer``."""
    return int(host.model.backbone.layers[layer].mixer.conv1d.weight.shape[-1])


def _conv_windows(x: torch.Tensor, pos: torch.Tensor, n: int) -> torch.Tensor:
    """Rows ``pos[b] - n + 1 .. pos[b]`` of ``x`` [b, t, d] per prompt: ``[b, n, d]``, zeros before position 0."""
    padded = F.pad(x, (0, 0, n, 0))  # row r of x is row r + n here
    idx = pos[:, None] + 1 + torch.arange(n, device=x.device)[None, :]  # [b, n]
    return padded[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def contrast_vector(host: Any, positive: PromptSet, negative: PromptSet, hook: str, position: int = -1) -> SteeringVector:
    """The CAA (or, on ``ssm.state`` / ``att.state``, the state) steering vector: mean over ``positive`` minus mean
    over ``negative`` of ``hook`` at ``position`` (default: each prompt's last token)."""
    positive.check(host, "positive")
    negative.check(host, "negative")
    if positive.tokenizer and negative.tokenizer and positive.tokenizer != negative.tokenizer:
        raise UniversalityError(f"the positive and negative prompts come from different tokenizers ({positive.tokenizer} vs "
                                f"{negative.tokenizer}); tokenize both with the host's tokenizer")
    _read_hook(host, hook)
    if not hook.startswith("blocks.") or _point(hook) in ("attn.pattern",):
        raise UniversalityError(f"hook '{hook}' cannot be steered; use a per-block point such as "
                                f"{host.hook_name(host.layer_at(0.5), 'resid_post')}")
    vec = activations_at(host, positive, hook, position).mean(0) - activations_at(host, negative, hook, position).mean(0)
    method = "state" if _point(hook) in STATE_POINTS else "residual"
    return SteeringVector(hook, vec, method, f"{positive.label or 'positive'} - {negative.label or 'negative'}")


def feature_vector(coder: Any, latent: int, hook: str) -> SteeringVector:
    """Feature steering: the decoder direction ``coder.W_dec[latent]`` ``[d]`` of a dictionary trained at ``hook``."""
    n = int(coder.W_dec.shape[0])
    if not isinstance(latent, int) or not 0 <= latent < n:
        raise UniversalityError(f"latent {latent!r} is not valid; this dictionary has latents 0..{n - 1}")
    return SteeringVector(hook, coder.W_dec[latent].detach().double().cpu(), "feature", f"latent {latent}")


# ------------------------------------------------------------------------------------------ hooks
def _mamba_decay(host: Any, layer: int) -> torch.Tensor:
    """``A = -exp(A_log)`` of Mamba block ``layer``: ``[d_inner, d_state]`` (Mamba-1) or ``[heads]`` (Mamba-2)."""
    return -torch.exp(host.model.backbone.layers[layer].mixer.A_log.detach().double())


def _rwkv_decay(host: Any, layer: int) -> torch.Tensor:
    """``w = exp(time_decay)`` ``[A]``: RWKV's state decays by ``exp(-w)`` per token."""
    return torch.exp(host.model.rwkv.blocks[layer].attention.time_decay.detach().double())


def _check_shape(sv: SteeringVector, want: tuple, what: str) -> None:
    if tuple(sv.vector.shape) != tuple(want):
        raise UniversalityError(f"the steering vector for '{sv.hook}' has shape {tuple(sv.vector.shape)}, but {what} has "
                                f"shape {tuple(want)}; build it with contrast_vector on that hook")


def steering_hooks(host: Any, sv: SteeringVector, multiplier: float, start: torch.Tensor) -> dict:
    """Hook functions adding ``multiplier × sv.vector`` for every prompt ``b`` from position ``start[b]`` on.

    Residual and feature vectors are added at every position ``>= start[b]``. On ``ssm.state`` (Mamba-1 and
    Mamba-2) the state after ``start[b] - 1`` is replaced by what the recurrence gives from that state plus the
    vector (so position ``start[b]`` is the first to read it, and the host carries it on); on ``ssm.conv_state``
    the conv inputs ``start[b] - d_conv + 1 .. start[b] - 1`` are raised by the vector's rows as seen from the suffix
    only: the conv outputs at ``start[b] .. start[b] + d_conv - 2`` are recomputed with them, earlier outputs keep the
    real inputs; on ``att.state`` the real numerator and denominator get the vector decayed by
    ``exp(-w (t - start[b] + 1))`` at every ``t >= start[b] - 1``.
    """
    _read_hook(host, sv.hook)
    layer, point = host.layer_of(sv.hook), sv.point
    v = sv.vector
    start = torch.as_tensor(start, dtype=torch.long).view(-1)
    if point in STATE_POINTS and bool((start < 1).any()):
        raise UniversalityError("state steering needs a prefix: every start position must be at least 1")
    alpha = float(multiplier)

    if point == "ssm.state":
        if host.arch != "mamba" or not hasattr(host.model, "backbone"):
            raise UniversalityError(f"ssm.state steering supports Mamba-1 and Mamba-2 hosts; this is a {host.model_type} host")
        A = _mamba_decay(host, layer)  # Mamba-1 [d_inner, n]; Mamba-2 [heads]
        mixer = host.model.backbone.layers[layer].mixer
        mamba2 = A.dim() == 1
        _check_shape(sv, (mixer.num_heads, mixer.head_dim, mixer.ssm_state_size) if mamba2 else tuple(A.shape),
                     f"this {host.model_type} host's ssm.state")
        seen: dict[str, torch.Tensor] = {}

        def read_dt(dt):
            seen["dt"] = dt
            return None

        def add_state(states):  # Mamba-1 [b, t, d, n]; Mamba-2 [b, t, h, p, n]
            out = states.clone()
            for b, s in enumerate(start.tolist()):
                if s < states.shape[1]:
                    dt = seen["dt"][b, s].double()  # Mamba-1 [d]; Mamba-2 [h]
                    step = torch.exp(dt[:, None, None] * A[:, None, None].to(dt.device)) if mamba2 \
                        else torch.exp(dt[:, None] * A.to(dt.device))  # decay from s - 1 to s
                    out[b, s] = (states[b, s].double() + alpha * step * v.to(step.device)).to(states.dtype)
            return out

        return {host.hook_name(layer, "ssm.dt"): read_dt, sv.hook: add_state}
    if point == CONV_STATE:
        mixer = host.model.backbone.layers[layer].mixer
        w = mixer.conv1d.weight.detach().double().reshape(mixer.conv1d.weight.shape[0], -1)  # [d, k]
        k = w.shape[1]
        bias = mixer.conv1d.bias.detach().double() if mixer.conv1d.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        _check_shape(sv, (k - 1, w.shape[0]), f"the conv state of this Mamba's block {layer} ([d_conv - 1, d_inner])")
        seen = {}

        def read_x(x):
            seen["x"] = x
            return None

        def add_conv(conv_out):  # [b, t, d]: act(conv(x)); rows start .. start + k - 2 read the steered window
            out = conv_out.clone()
            x = F.pad(seen["x"].double(), (0, 0, k - 1, 0))  # row q of x is row q + k - 1 here
            dev = x.device
            for b, s in enumerate(start.tolist()):
                window = x[b, s:s + k - 1].clone()  # inputs s - k + 1 .. s - 1 (the conv state after the prefix)
                window += alpha * v.to(dev)
                for t in range(s, min(s + k - 1, conv_out.shape[1])):
                    inputs = torch.cat([window[t - s:], x[b, s + k - 1:t + k]])  # inputs t - k + 1 .. t: [k, d]
                    pre = bias.to(dev) + (inputs.T * w.to(dev)).sum(-1)
                    out[b, t] = mixer.act(pre).to(conv_out.dtype)
            return out

        return {host.hook_name(layer, "ssm.in_x"): read_x, host.hook_name(layer, "ssm.conv_out"): add_conv}
    if point == "att.state":
        w = _rwkv_decay(host, layer)

        def add_rwkv(states):  # [b, t, A, 3]
            out = states.clone()
            t = states.shape[1]
            for b, s in enumerate(start.tolist()):
                if s - 1 >= t:
                    continue
                steps = torch.arange(t - s + 1, dtype=torch.float64, device=states.device)
                decay = torch.exp(-steps[:, None] * w.to(states.device))  # [n, A]
                seg = states[b, s - 1:].double()
                real = seg[..., :2] * torch.exp(seg[..., 2:3]) + alpha * decay[..., None] * v.to(states.device)
                out[b, s - 1:, :, :2] = (real * torch.exp(-seg[..., 2:3])).to(states.dtype)
            return out

        return {sv.hook: add_rwkv}

    def add(x):  # [b, t, d]
        out = x.clone()
        for b, s in enumerate(start.tolist()):
            out[b, s:] += (alpha * v).to(x.dtype).to(x.device)
        return out

    return {sv.hook: add}


def clamp_hooks(coder: Any, latent: int, value: float, hook: str, start: torch.Tensor) -> dict:
    """Feature steering by clamping: at ``hook``, from ``start[b]`` on, splice the dictionary with latent ``latent``
    set to ``value``, keeping its reconstruction error: ``x + (value - a_latent(x)) W_dec[latent]``."""
    direction = feature_vector(coder, latent, hook).vector

    def clamp(x):  # [b, t, d]
        out = x.clone()
        codes = coder.encode(x.reshape(-1, x.shape[-1]).to(coder.W_dec.dtype))[:, latent].view(x.shape[:-1])
        for b, s in enumerate(torch.as_tensor(start).view(-1).tolist()):
            delta = (float(value) - codes[b, s:].double())[:, None] * direction.to(x.device)
            out[b, s:] = (x[b, s:].double() + delta).to(x.dtype)
        return out

    return {hook: clamp}


@torch.no_grad()
def steered_logits(host: Any, tokens: torch.Tensor, hooks: dict, multiplier: float = 0.0,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
    """One forward of ``tokens`` [b, t] with ``hooks``; logits ``[b, t, vocab]`` float32. Non-finite logits at a real
    position (``< lengths[b]``) are one error naming ``multiplier``."""
    logits = host.run_with_hooks(tokens, hooks).float()
    real = torch.ones(tokens.shape, dtype=torch.bool) if lengths is None else \
        torch.arange(tokens.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]
    if not bool(torch.isfinite(logits[real.to(logits.device)]).all()):
        raise UniversalityError(f"multiplier {multiplier:g} makes this {host.arch} host's logits non-finite; use a smaller "
                                "multiplier")
    return logits


# ------------------------------------------------------------------------------------------ metrics
def token_class_mass(token_ids: Sequence[int]) -> Callable:
    """A metric: per prompt, the mean over positions ``start..length-1`` of the next-token probability mass on
    ``token_ids``. Signature ``metric(logits [b, t, V], lengths [b], start [b]) -> [b]``."""
    ids = torch.as_tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.long)
    if ids.numel() == 0:
        raise UniversalityError("the token class of the steering metric is empty; give at least one token id")

    def metric(logits: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        mass = F.softmax(logits.double(), -1)[..., ids.to(logits.device)].sum(-1).cpu()  # [b, t]
        return torch.stack([mass[b, s:n].mean() for b, (s, n) in enumerate(zip(start.tolist(), lengths.tolist()))])

    return metric


@dataclass
class DoseResponse:
    """Multiplier → metric (mean over prompts, 95% bootstrap interval over prompts) for one host and method."""

    model: str
    arch: str
    method: str
    """``"residual"``, ``"state"`` or ``"feature"``."""
    hook: str
    metric: str
    """What the metric measures (e.g. "mass on code-symbol tokens")."""
    multipliers: list[float]
    values: list[float]
    ci: list[list[float]]
    n_prompts: int
    n_forwards: int
    """Forward passes of the prompt batch used (one per multiplier and batch)."""
    vector_norm: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DoseResponse":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def monotone(self) -> bool:
        """Whether the mean metric never decreases with the multiplier."""
        return all(b >= a for a, b in zip(self.values, self.values[1:]))


def _interval(values: np.ndarray, n_boot: int, seed: int) -> list[float]:
    if values.size < 2 or n_boot < 1:
        return [float(values.mean())] * 2
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(0, values.size, (n_boot, values.size))].mean(1)
    return [float(x) for x in np.percentile(boot, [2.5, 97.5])]


def dose_response(host: Any, sv: SteeringVector, prompts: PromptSet, multipliers: Sequence[float], metric: Callable,
                  metric_name: str, start: int | float = 0.5, name: str = "", n_boot: int = 200,
                  batch: int = 32) -> DoseResponse:
    """The metric of the steered host at every multiplier (one forward of each prompt batch per multiplier).

    ``start``: first steered position of each prompt, as a token index (int) or a fraction of its length (float,
    at least position 1); the metric averages positions ``start..length-1``.
    """
    prompts.check(host, "evaluation")
    if not multipliers or not all(isinstance(m, (int, float)) and math.isfinite(m) for m in multipliers):
        raise UniversalityError(f"multipliers {list(multipliers)!r} are not valid; give finite numbers, e.g. 0,2,4,8")
    values, forwards = [], 0
    for m in multipliers:
        per_prompt = []
        for s in range(0, len(prompts.prompts), batch):
            tokens, lengths = pad_prompts(prompts.prompts[s:s + batch])
            st = (torch.full_like(lengths, int(start)) if isinstance(start, int)
                  else (lengths.double() * float(start)).long().clamp(min=1))
            st = torch.minimum(st, lengths - 1).clamp(min=0)
            logits = steered_logits(host, tokens, steering_hooks(host, sv, m, st) if m else {}, m, lengths)
            forwards += 1
            per_prompt.append(metric(logits, lengths, st))
        values.append(torch.cat(per_prompt).numpy())
    return DoseResponse(name or host.arch, host.arch, sv.method, sv.hook, metric_name, [float(m) for m in multipliers],
                        [float(v.mean()) for v in values], [_interval(v, n_boot, i) for i, v in enumerate(values)],
                        len(prompts.prompts), forwards, float(sv.vector.double().norm()))
