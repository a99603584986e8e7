"""The frozen replacement model: a host whose every nonlinearity is fixed at one clean run.

Built from one prompt (:class:`ReplacementModel`): norms keep their clean scale, token mixers
their clean patterns / Δ, B, C / WKV weights (:mod:`.mixers`), and every block's MLP (Mamba: its
mixer output) is replaced by the block's dictionary: ``decode(codes) + skip(input) + error``,
where the codes and the error are *sources* fed in from outside. What is left is affine in
the sources, so every target (a last-position logit, or a feature's pre-activation) is exactly
``constant + Σ_source value × gradient`` — the direct effects of the attribution graph.

:meth:`ReplacementModel.forward` runs ``R`` replicas of the prompt at once with the sources as
leaves that require gradients; one backward through a sum of ``R`` targets (one per replica)
then gives ``R`` rows of the adjacency matrix.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from . import mixers
from .dictionaries import Site, layer_dictionaries, site_of
from .norms import FrozenNorm, freeze_module_norm


@dataclass
class DictionaryMath:
    """One block's dictionary as plain tensors in the replacement model's dtype (raw units in and out)."""

    W_enc: torch.Tensor
    """[n_latents, d_in]"""
    b_enc: torch.Tensor
    """[n_latents]"""
    W_dec: torch.Tensor
    """[n_latents, d_out]"""
    b_dec: torch.Tensor
    """[d_out]"""
    W_skip: torch.Tensor | None
    """[d_out, d_in] or None"""
    input_scale: float
    output_scale: float
    subtract_b_dec: bool
    """Autoencoders subtract ``b_dec`` from the normalised input before encoding; transcoders do not."""

    @classmethod
    def of(cls, coder: Any, dtype: torch.dtype) -> "DictionaryMath":
        """Read a :class:`~universality.sae.SparseCoder`'s parameters (detached, cast to ``dtype``)."""
        cast = lambda t: None if t is None else t.detach().to("cpu", dtype)  # noqa: E731
        cfg = coder.cfg
        return cls(cast(coder.W_enc), cast(coder.b_enc), cast(coder.W_dec), cast(coder.b_dec), cast(coder.W_skip),
                   float(cfg.input_scale), float(cfg.output_scale), not cfg.transcoder)

    def encoder_rows(self, feats: torch.Tensor) -> torch.Tensor:
        """Directions ``[n, d_in]`` whose dot product with a raw input gives the features' pre-activations (less a constant)."""
        return self.W_enc[feats] * self.input_scale

    def preacts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., n_latents]`` of raw inputs ``x`` ``[..., d_in]``."""
        xn = x * self.input_scale
        if self.subtract_b_dec:
            xn = xn - self.b_dec
        return xn @ self.W_enc.t() + self.b_enc

    def reconstruct(self, dense_codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``decode(codes) + skip(x)`` ``[..., d_out]`` from dense codes ``[..., n_latents]`` and raw inputs ``x``."""
        out = dense_codes @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            out = out + (x * self.input_scale) @ self.W_skip.t()
        return out / self.output_scale


@dataclass
class Sources:
    """The replacement model's inputs that become graph nodes, as leaves of one forward (``R`` rows each)."""

    embed: torch.Tensor
    """Token embeddings ``[R, t, d]``."""
    codes: list[torch.Tensor]
    """Per block, the active features' values ``[R, n_l]`` (in :attr:`ReplacementModel.active` order)."""
    errors: list[torch.Tensor]
    """Per block, the dictionary's error ``[R, t, d]``."""

    def leaves(self) -> list[torch.Tensor]:
        """Every leaf: embed, the blocks' codes, the blocks' errors."""
        return [self.embed, *self.codes, *self.errors]


@dataclass
class Pass:
    """What one replacement forward produced (``R`` rows)."""

    sources: Sources
    inputs: list[torch.Tensor]
    """Per block, the dictionary's input ``[R, t, d_in]`` (its pre-activations are affine in it)."""
    final: torch.Tensor
    """The final norm's output at the last position ``[R, d_model]`` (the logits are affine in it)."""


def _norm_modules(host: Any, model: Any) -> tuple[list, list, Any, Any]:
    """(first norms, second norms or [], final norm, pre-norm of the embeddings or None) of ``model``."""
    if host.arch == "transformer":
        fam = host.family
        blocks = _family_blocks(fam, model)
        first = [b.ln_1 if hasattr(b, "ln_1") else b.input_layernorm for b in blocks]
        second = [b.ln_2 if hasattr(b, "ln_2") else b.post_attention_layernorm for b in blocks]
        return first, second, _family_final_norm(fam, model), None
    if host.arch == "mamba":
        layers = model.backbone.layers
        return [layer.norm for layer in layers], [], model.backbone.norm_f, None
    blocks = model.rwkv.blocks
    return [b.ln1 for b in blocks], [b.ln2 for b in blocks], model.rwkv.ln_out, blocks[0].pre_ln


def _family_blocks(fam: Any, model: Any):
    return type(fam)(model).blocks


def _family_final_norm(fam: Any, model: Any):
    return type(fam)(model).final_norm


class ReplacementModel:
    """The frozen replacement of ``host`` on one prompt, with ``transcoders`` spliced in (see the module docstring).

    Attributes:
        tokens: the prompt ``[t]``.
        site: where the dictionaries read and write (:class:`~.dictionaries.Site`).
        active: ``[n, 3]`` long, (block, position, feature) of every active feature, sorted.
        activations: ``[n]`` their clean values (the dictionary's codes).
        embed: ``[t, d]`` the clean token embeddings (what the host's ``embed`` point holds).
        errors: ``[n_layers, t, d]`` each block's dictionary error on the clean run.
        clean_logits: ``[vocab]`` the host's own logits at the last position.
        dtype: the dtype every replacement computation runs in.
    """

    def __init__(self, host: Any, tokens: torch.Tensor, transcoders: Any, dtype: torch.dtype = torch.float32):
        self.host = host
        self.dtype = dtype
        self.tokens = tokens
        self.site: Site = site_of(host)
        coders = layer_dictionaries(host, transcoders)
        self.n_layers = host.n_layers
        self.n_pos = int(tokens.shape[0])

        # Phase 0a: one clean run of the host, recording every point the freezing reads
        clean = self._clean_run(host, tokens)
        self.clean_logits = clean.pop("logits")
        # Phase 0b: weights in the working dtype, frozen norms and mixers
        model = host.model
        first = next(model.parameters())
        if first.dtype != dtype or first.device.type != "cpu":  # the replacement model runs on CPU
            model = copy.deepcopy(model).to("cpu", dtype)
        self._model = model
        self._build_frozen(host, model, clean)
        # Phase 0c: the dictionaries' codes and errors on the clean run
        self._dicts = [DictionaryMath.of(coders[i], dtype) for i in range(self.n_layers)]
        self._build_sources(coders, clean)

    # ----- construction -------------------------------------------------------------------
    def _point_names(self, host: Any) -> list[str]:
        names = ["embed", "final_norm"]
        per_block = {"transformer": mixers.transformer_names, "rwkv": mixers.rwkv_names,
                     "mamba": mixers.mamba2_names if host.config.model_type == "mamba2" else mixers.mamba_names}[host.arch]
        for i in range(host.n_layers):
            p = f"blocks.{i}."
            names += [p + n for n in ("resid_pre", "mixer_in", "mixer_out", "resid_post")]
            if self.site.input_point == "mlp_in":
                names += [p + "mlp_in", p + "mlp_out"]
            names += per_block(i)
        return names

    def _clean_run(self, host: Any, tokens: torch.Tensor) -> dict:
        with torch.no_grad():
            logits, cache = host.run_with_cache(tokens[None], self._point_names(host))
        clean = {k: v[0].detach().cpu() for k, v in cache.items()}
        clean["logits"] = logits[0, -1].detach().float().cpu()
        return clean

    def _build_frozen(self, host: Any, model: Any, clean: dict) -> None:
        dt = self.dtype
        first, second, final, pre = _norm_modules(host, model)
        self._pre_norm = freeze_module_norm(pre, clean["embed"], dt) if pre is not None else None
        self._norm1 = [freeze_module_norm(first[i], clean[f"blocks.{i}.resid_pre"], dt) for i in range(self.n_layers)]
        self._norm2: list[FrozenNorm] = []
        self._parallel = host.arch == "transformer" and host.family.parallel_residual()
        for i in range(len(second)):
            x = clean[f"blocks.{i}.resid_pre"]
            if not self._parallel:
                x = x + clean[f"blocks.{i}.mixer_out"]
            self._norm2.append(freeze_module_norm(second[i], x, dt))
        self._final = freeze_module_norm(final, clean[f"blocks.{self.n_layers - 1}.resid_post"], dt).last()
        head = model.get_output_embeddings()
        self._W_U = head.weight.detach().to(dt)
        self._b_U = head.bias.detach().to(dt) if getattr(head, "bias", None) is not None else None
        if host.arch == "transformer":
            family = type(host.family)(model)
            self._mixers = [mixers.transformer_mixer(host, family, i, clean, dt) for i in range(self.n_layers)]
        elif host.arch == "rwkv":
            self._mixers = [mixers.rwkv_mixer(host, model, i, clean, dt) for i in range(self.n_layers)]
        else:
            build = mixers.mamba2_mixer if host.config.model_type == "mamba2" else mixers.mamba_mixer
            self._mixers = [build(host, model, i, clean, dt) for i in range(self.n_layers)]
        self._halves = [bool(getattr(host, "halves_after", lambda i: False)(i)) for i in range(self.n_layers)]

    def _build_sources(self, coders: dict, clean: dict) -> None:
        dt, site = self.dtype, self.site
        self.embed = clean["embed"].to(dt)
        active, values, errors, flat = [], [], [], []
        for i in range(self.n_layers):
            x = clean[f"blocks.{i}.{site.input_point}"]
            y = clean[f"blocks.{i}.{site.output_point}"].to(dt)
            with torch.no_grad():
                codes = coders[i].encode(x.to(coders[i].W_enc.device)).to("cpu", dt)  # [t, n_latents]
            pos, feat = codes.nonzero(as_tuple=True)
            d = self._dicts[i]
            errors.append(y - d.reconstruct(codes, x.to(dt)))
            active.append(torch.stack([torch.full_like(pos, i), pos, feat], 1))
            values.append(codes[pos, feat])
            flat.append(pos * d.W_enc.shape[0] + feat)
        self.active = torch.cat(active)
        self.activations = torch.cat(values)
        self.errors = torch.stack(errors)
        self._flat = flat
        self._counts = [len(v) for v in values]

    # ----- running ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of active features (all blocks)."""
        return int(self.active.shape[0])

    def layer_slices(self) -> list[slice]:
        """Per block, the slice of :attr:`active` holding its features."""
        out, start = [], 0
        for n in self._counts:
            out.append(slice(start, start + n))
            start += n
        return out

    def sources(self, rows: int, zero: bool = False) -> Sources:
        """Fresh leaves (``requires_grad``) holding the clean source values, ``rows`` replicas (zeros if ``zero``)."""
        def leaf(v: torch.Tensor) -> torch.Tensor:
            v = torch.zeros_like(v) if zero else v
            return v.expand(rows, *v.shape).clone().requires_grad_(True)
        codes = [leaf(self.activations[s]) for s in self.layer_slices()]
        return Sources(leaf(self.embed), codes, [leaf(e) for e in self.errors])

    def forward(self, sources: Sources) -> Pass:
        """Run the replacement model on ``sources`` (``R`` rows); returns the dictionaries' inputs and the final norm."""
        t = self.n_pos
        x = sources.embed
        if self._pre_norm is not None:
            x = self._pre_norm(x)
        inputs = []
        for i in range(self.n_layers):
            d = self._dicts[i]
            mixed = self._mixers[i](self._norm1[i](x))
            n_lat = d.W_enc.shape[0]
            dense = sources.codes[i].new_zeros(x.shape[0], t * n_lat).index_add(1, self._flat[i], sources.codes[i])
            dense = dense.view(x.shape[0], t, n_lat)
            if self.site.input_point == "mixer_out":
                inputs.append(mixed)
                x = x + d.reconstruct(dense, mixed) + sources.errors[i]
            else:
                mid = x + mixed
                h = self._norm2[i](x if self._parallel else mid)
                inputs.append(h)
                x = mid + d.reconstruct(dense, h) + sources.errors[i]
            if self._halves[i]:
                x = x / 2
        return Pass(sources, inputs, self._final(x[:, -1]))

    def logits(self, final: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[R, k]`` of ``token_ids`` [k] from final-norm outputs ``final`` ``[R, d]``."""
        out = final @ self._W_U[token_ids].t()
        return out + self._b_U[token_ids] if self._b_U is not None else out

    def preacts(self, run: Pass, which: torch.Tensor, row: int = 0) -> torch.Tensor:
        """Pre-activations ``[k]`` of features ``which`` (indices into :attr:`active`) read on row ``row`` of ``run``."""
        out = []
        for idx in which.tolist():
            layer, pos, feat = self.active[idx].tolist()
            out.append(self._dicts[layer].preacts(run.inputs[layer][row, pos])[feat])
        return torch.stack(out) if out else torch.zeros(0, dtype=self.dtype)

    def unembed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Unembedding rows ``[k, d]`` of ``token_ids`` (the logit directions injected in the backward)."""
        return self._W_U[token_ids]

    def encoder_rows(self, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layers [k], positions [k], directions [k, d_in]) of features ``which`` (indices into :attr:`active`)."""
        sel = self.active[which]
        rows = torch.stack([self._dicts[int(l_)].encoder_rows(f_) for l_, f_ in zip(sel[:, 0].tolist(), sel[:, 2])])
        return sel[:, 0], sel[:, 1], rows
