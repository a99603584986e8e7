"""Transformer host: GPT-2, GPT-NeoX (Pythia) and Llama-layout checkpoints.

The forward is our own, written over the Hugging Face modules' weights (read at
call time, so in-place edits take effect), so that every point of the hook
vocabulary exists and can be replaced: per-head queries/keys/values, the
attention pattern and the per-head output ``attn.z`` before the output projection.

Per block ``i`` (shapes for batch b, sequence t, heads h, head width dh):
``resid_pre``, ``mixer_in`` (after the first norm), ``attn.q`` [b,t,h,dh],
``attn.k`` / ``attn.v`` [b,t,h_kv,dh] (h_kv = h except for grouped-query Llamas;
q and k after rotary embedding where the model uses it), ``attn.pattern``
[b,h,t,t] (softmax weights, causal; computed only when read or written),
``attn.z`` [b,t,h,dh], ``mixer_out`` (attention output added to the residual),
``mlp_in`` (after the second norm), ``mlp.act`` [b,t,d_mlp] (after the
nonlinearity; for gated MLPs act(gate)·up), ``mlp_out``, ``resid_post``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Host
from .compat import require_attributes
from .hookrun import HookRun
from .registry import register_host

_BLOCK_POINTS = ("resid_pre", "mixer_in", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "mixer_out",
                 "mlp_in", "mlp.act", "mlp_out", "resid_post")


class _Family:
    """How one checkpoint family lays out its modules; the math is shared by TransformerHost."""

    model_attrs: tuple[str, ...] = ()
    """Attribute paths this family reads on the ``*ForCausalLM`` module (checked when a host is built)."""
    block_attrs: tuple[str, ...] = ()
    """Attribute paths it reads on every block."""

    def __init__(self, model):
        self.model = model
        self.config = model.config

    def n_heads(self) -> int:
        return self.config.num_attention_heads

    def n_kv_heads(self) -> int:
        return self.n_heads()

    def parallel_residual(self) -> bool:
        return False

    def rotary(self, x: torch.Tensor, positions: torch.Tensor):
        """(cos, sin) [b, t, rot_dim] for rotary families, else None."""
        return None

    def max_positions(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)


class _GPT2(_Family):
    model_attrs = ("transformer.h", "transformer.ln_f", "transformer.wte", "transformer.wpe")
    block_attrs = ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.act", "mlp.c_fc", "mlp.c_proj")

    def __init__(self, model):
        super().__init__(model)
        self.base = model.transformer
        self.blocks = self.base.h
        self.final_norm = self.base.ln_f
        self.head_dim = self.config.n_embd // self.config.n_head

    def n_heads(self) -> int:
        return self.config.n_head

    def embed(self, tokens, positions):
        return self.base.wte(tokens) + self.base.wpe(positions)

    def ln1(self, blk, x):
        return blk.ln_1(x)

    def ln2(self, blk, x):
        return blk.ln_2(x)

    def qkv(self, blk, x):
        return blk.attn.c_attn(x).split(self.config.n_embd, dim=-1)

    def scale(self, layer: int) -> float:
        s = self.head_dim ** -0.5 if self.config.scale_attn_weights else 1.0
        return s / float(layer + 1) if self.config.scale_attn_by_inverse_layer_idx else s

    def attn_out(self, blk, z):
        return blk.attn.c_proj(z)

    def mlp_act(self, blk, x):
        return blk.mlp.act(blk.mlp.c_fc(x))

    def mlp_down(self, blk, a):
        return blk.mlp.c_proj(a)

    def max_positions(self):
        return self.config.n_positions


class _RotaryPreNorm(_Family):
    """Families with ``base.layers``, ``input_layernorm`` / ``post_attention_layernorm`` and ``base.rotary_emb``."""

    def __init__(self, model, base, final_norm: str):
        super().__init__(model)
        self.base = base
        self.blocks = base.layers
        self.final_norm = getattr(base, final_norm)

    def rotary(self, x, positions):
        return self.base.rotary_emb(x, positions)

    def ln1(self, blk, x):
        return blk.input_layernorm(x)

    def ln2(self, blk, x):
        return blk.post_attention_layernorm(x)

    def scale(self, layer):
        return self.head_dim ** -0.5


class _NeoX(_RotaryPreNorm):
    model_attrs = ("gpt_neox.layers", "gpt_neox.final_layer_norm", "gpt_neox.embed_in", "gpt_neox.rotary_emb")
    block_attrs = ("input_layernorm", "post_attention_layernorm", "attention.query_key_value", "attention.dense",
                   "mlp.act", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")

    def __init__(self, model):
        super().__init__(model, model.gpt_neox, "final_layer_norm")
        self.head_dim = self.config.hidden_size // self.config.num_attention_heads

    def embed(self, tokens, positions):
        return self.base.embed_in(tokens)

    def parallel_residual(self):
        return bool(self.config.use_parallel_residual)

    def qkv(self, blk, x):
        b, t, _ = x.shape
        fused = blk.attention.query_key_value(x).view(b, t, self.n_heads(), 3 * self.head_dim)
        q, k, v = fused.chunk(3, dim=-1)
        return q.reshape(b, t, -1), k.reshape(b, t, -1), v.reshape(b, t, -1)

    def attn_out(self, blk, z):
        return blk.attention.dense(z)

    def mlp_act(self, blk, x):
        return blk.mlp.act(blk.mlp.dense_h_to_4h(x))

    def mlp_down(self, blk, a):
        return blk.mlp.dense_4h_to_h(a)


class _Llama(_RotaryPreNorm):
    model_attrs = ("model.layers", "model.norm", "model.embed_tokens", "model.rotary_emb")
    block_attrs = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                   "self_attn.v_proj", "self_attn.o_proj", "mlp.act_fn", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

    def __init__(self, model):
        super().__init__(model, model.model, "norm")
        self.head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads

    def n_kv_heads(self):
        return getattr(self.config, "num_key_value_heads", None) or self.n_heads()

    def embed(self, tokens, positions):
        return self.base.embed_tokens(tokens)

    def qkv(self, blk, x):
        a = blk.self_attn
        return a.q_proj(x), a.k_proj(x), a.v_proj(x)

    def attn_out(self, blk, z):
        return blk.self_attn.o_proj(z)

    def mlp_act(self, blk, x):
        m = blk.mlp
        return m.act_fn(m.gate_proj(x)) * m.up_proj(x)

    def mlp_down(self, blk, a):
        return blk.mlp.down_proj(a)


_FAMILIES = {"gpt2": _GPT2, "gpt_neox": _NeoX, "llama": _Llama, "mistral": _Llama, "qwen2": _Llama}


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of x [b,t,h,dh] by position (rotate-half convention)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    half = rot // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


@register_host(*_FAMILIES)
class TransformerHost(Host):
    """Hook-vocabulary host for decoder-only Transformers (see the module docstring for the points)."""

    arch = "transformer"
    block_points = _BLOCK_POINTS

    def __init__(self, model, tokenizer=None, name_or_path: str = ""):
        family = _FAMILIES[model.config.model_type]
        require_attributes(model, family.model_attrs, f"Transformer ({model.config.model_type})")
        self.family = family(model)
        for blk in self.family.blocks:
            require_attributes(blk, family.block_attrs, f"Transformer ({model.config.model_type})")
        super().__init__(model, tokenizer, name_or_path)
        self.n_heads = self.family.n_heads()
        self.n_kv_heads = self.family.n_kv_heads()
        self.head_dim = self.family.head_dim

    def _n_layers(self) -> int:
        return len(self.family.blocks)

    def _d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    def _max_positions(self):
        return self.family.max_positions()

    def _forward(self, tokens: torch.Tensor, run: HookRun) -> torch.Tensor | None:
        fam = self.family
        b, t = tokens.shape
        positions = torch.arange(t, device=tokens.device).unsqueeze(0).expand(b, t)
        x = run("embed", fam.embed(tokens, positions))
        rope = fam.rotary(x, positions)
        for i, blk in enumerate(fam.blocks):
            p = f"blocks.{i}."
            x = run(p + "resid_pre", x)
            h = run(p + "mixer_in", fam.ln1(blk, x))
            attn = run(p + "mixer_out", self._attention(blk, h, i, rope, run, p))
            if fam.parallel_residual():
                mlp_in = run(p + "mlp_in", fam.ln2(blk, x))
                mlp = run(p + "mlp_out", fam.mlp_down(blk, run(p + "mlp.act", fam.mlp_act(blk, mlp_in))))
                x = x + attn + mlp
            else:
                x = x + attn
                mlp_in = run(p + "mlp_in", fam.ln2(blk, x))
                x = x + run(p + "mlp_out", fam.mlp_down(blk, run(p + "mlp.act", fam.mlp_act(blk, mlp_in))))
            x = run(p + "resid_post", x)
            if self._stop_after(run, i):
                return None
        x = run("final_norm", fam.final_norm(x))
        return self.model.get_output_embeddings()(x)

    def _unembed(self, stream: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(self.family.final_norm(stream))

    def _attention(self, blk, h: torch.Tensor, layer: int, rope, run: HookRun, p: str) -> torch.Tensor:
        fam = self.family
        b, t, _ = h.shape
        q, k, v = fam.qkv(blk, h)
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv_heads, self.head_dim)
        v = v.view(b, t, self.n_kv_heads, self.head_dim)
        if rope is not None:
            cos, sin = rope
            q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        q, k, v = run(p + "attn.q", q), run(p + "attn.k", k), run(p + "attn.v", v)
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, heads, t, dh]
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            kh, vh = kh.repeat_interleave(rep, dim=1), vh.repeat_interleave(rep, dim=1)
        scale = fam.scale(layer)
        if run.wants(p + "attn.pattern"):
            scores = (qh @ kh.transpose(-1, -2)) * scale
            causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
            pattern = run(p + "attn.pattern", torch.softmax(scores, dim=-1))
            z = pattern @ vh
        elif _float32_backward(qh):
            with torch.autocast("cpu", enabled=False):
                z = F.scaled_dot_product_attention(qh.float(), kh.float(), vh.float(), is_causal=True, scale=scale)
        else:
            z = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale)
        z = run(p + "attn.z", z.transpose(1, 2))  # [b, t, h, dh]
        return fam.attn_out(blk, z.reshape(b, t, self.n_heads * self.head_dim))


def _float32_backward(q: torch.Tensor) -> bool:
    """Whether attention should run in float32 although autocast asks for bfloat16: on CPU, when a backward follows.

    PyTorch's CPU flash-attention backward is several times slower in bfloat16 than in float32
    at small head sizes (8 x 6 heads x 128 x 32: 31 ms vs 9 ms for forward+backward, one thread),
    so training under CPU autocast keeps this one op in float32; inference keeps the bfloat16 forward.
    """
    return (q.device.type == "cpu" and q.requires_grad and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def attention_scale(host: TransformerHost, layer: int) -> float:
    """The factor multiplying q·k in ``layer`` (1/sqrt(dh), or GPT-2's variants)."""
    return host.family.scale(layer)


__all__ = ["TransformerHost", "attention_scale"]
