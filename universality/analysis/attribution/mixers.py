"""Token mixers frozen at the clean run so that each is linear in its input (affine, counting its biases).

* Transformer: the attention pattern is fixed, so ``mixer_out = W_O (pattern @ (W_V h + b_V)) + b_O``.
* Mamba-1 and Mamba-2: Δ, B, C and the gate are fixed, and the SiLU after the causal conv becomes a
  multiplication by the clean ``sigmoid(conv)``; the conv and the scan are then linear in ``x``.
  Mamba-2's gated RMS norm keeps its clean scale.
* RWKV-4: the WKV weights ``exp(k_i - (t-1-i)·w)`` and ``exp(u + k_t)`` and their normaliser are fixed
  (a per-channel causal "pattern" over positions), and so is the receptance gate.

Every mixer takes ``h`` = ``mixer_in`` ``[R, t, d_model]`` (R replicas of the prompt, one per target of a
backward batch) and returns ``mixer_out`` ``[R, t, d_model]``. ``clean`` maps hook names to the clean
run's tensors without the batch axis.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..._errors import UniversalityError

Mixer = Callable[[torch.Tensor], torch.Tensor]


def _w(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype)


def transformer_names(layer: int) -> list[str]:
    """Clean-run points a frozen attention layer needs."""
    return [f"blocks.{layer}.attn.pattern"]


def transformer_mixer(host, family, layer: int, clean: dict, dtype: torch.dtype) -> Mixer:
    """Attention with the clean pattern ``[h, t, t]``; ``family`` is the host's layout object over weights in ``dtype``."""
    blk = family.blocks[layer]
    pattern = clean[f"blocks.{layer}.attn.pattern"].to(dtype)
    heads, kv_heads, dh = host.n_heads, host.n_kv_heads, host.head_dim

    def mix(h: torch.Tensor) -> torch.Tensor:
        r, t, _ = h.shape
        v = family.qkv(blk, h)[2].view(r, t, kv_heads, dh).transpose(1, 2)
        if kv_heads != heads:
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        z = (pattern @ v).transpose(1, 2).reshape(r, t, heads * dh)
        return family.attn_out(blk, z)
    return mix


def _causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv of ``x`` [R, t, c] with ``weight`` [c, 1, k]; returns [R, t, c] (before the activation)."""
    t = x.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight, bias, padding=weight.shape[-1] - 1, groups=weight.shape[0])
    return out[..., :t].transpose(1, 2)


def _silu_only(m) -> None:
    if m.activation not in ("silu", "swish"):
        raise UniversalityError(f"attribution freezes Mamba's conv activation as SiLU; this model uses '{m.activation}'")


def mamba_names(layer: int) -> list[str]:
    """Clean-run points a frozen Mamba-1 mixer needs."""
    p = f"blocks.{layer}.ssm."
    return [p + "in_x", p + "gate", p + "dt", p + "B", p + "C"]


def mamba_mixer(host, model, layer: int, clean: dict, dtype: torch.dtype) -> Mixer:
    """Mamba-1 mixer with Δ, B, C, the gate and the conv's SiLU slope frozen."""
    from ...hosts.ssm.scan import selective_scan

    m = model.backbone.layers[layer].mixer
    _silu_only(m)
    p = f"blocks.{layer}.ssm."
    d_inner = m.intermediate_size
    w_in, b_in = _w(m.in_proj.weight, dtype)[:d_inner], _w(m.in_proj.bias, dtype)
    b_in = b_in[:d_inner] if b_in is not None else None
    conv_w, conv_b = _w(m.conv1d.weight, dtype), _w(m.conv1d.bias, dtype)
    slope = torch.sigmoid(_causal_conv(clean[p + "in_x"].to(dtype)[None], conv_w, conv_b))[0]
    dt, B, C = (clean[p + n].to(dtype) for n in ("dt", "B", "C"))
    gate = F.silu(clean[p + "gate"].to(dtype))
    A = -torch.exp(_w(m.A_log, dtype))
    D = _w(m.D, dtype)
    w_out, b_out = _w(m.out_proj.weight, dtype), _w(m.out_proj.bias, dtype)
    backend = getattr(host, "scan_backend", "auto")

    def mix(h: torch.Tensor) -> torch.Tensor:
        r = h.shape[0]
        x = _causal_conv(F.linear(h, w_in, b_in), conv_w, conv_b) * slope
        rep = lambda v: v.expand(r, *v.shape).contiguous()  # noqa: E731
        y = selective_scan(x.contiguous(), rep(dt), A, rep(B), rep(C), D, backend=backend)
        return F.linear(y * gate, w_out, b_out)
    return mix


def mamba2_names(layer: int) -> list[str]:
    """Clean-run points a frozen Mamba-2 mixer needs."""
    p = f"blocks.{layer}.ssm."
    return [p + "in_x", p + "gate", p + "dt", p + "B", p + "C", p + "y"]


def mamba2_mixer(host, model, layer: int, clean: dict, dtype: torch.dtype) -> Mixer:
    """Mamba-2 mixer with Δ, B, C, the gate, the conv's SiLU slope and the gated norm's scale frozen."""
    from ...hosts.ssm.ssd import ssd_scan

    m = model.backbone.layers[layer].mixer
    _silu_only(m)
    p = f"blocks.{layer}.ssm."
    nh, hd, g, d_inner = m.num_heads, m.head_dim, m.n_groups, m.intermediate_size
    w_in, b_in = _w(m.in_proj.weight, dtype)[d_inner:2 * d_inner], _w(m.in_proj.bias, dtype)
    b_in = b_in[d_inner:2 * d_inner] if b_in is not None else None
    conv_w = _w(m.conv1d.weight, dtype)[:d_inner]
    conv_b = _w(m.conv1d.bias, dtype)
    conv_b = conv_b[:d_inner] if conv_b is not None else None
    t = clean[p + "in_x"].shape[0]
    slope = torch.sigmoid(_causal_conv(clean[p + "in_x"].to(dtype).reshape(1, t, d_inner), conv_w, conv_b))[0]
    dt, B, C = (clean[p + n].to(dtype) for n in ("dt", "B", "C"))
    gate = F.silu(clean[p + "gate"].to(dtype).reshape(t, d_inner))
    gated_clean = (clean[p + "y"].to(dtype).reshape(t, d_inner) * gate).view(t, g, d_inner // g)
    rscale = torch.rsqrt(gated_clean.pow(2).mean(-1, keepdim=True) + m.norm.variance_epsilon)  # [t, g, 1]
    norm_w = _w(m.norm.weight, dtype)
    A = -torch.exp(_w(m.A_log, dtype))
    D = _w(m.D, dtype)
    w_out, b_out = _w(m.out_proj.weight, dtype), _w(m.out_proj.bias, dtype)
    chunk = getattr(host, "chunk_size", 64)

    def mix(h: torch.Tensor) -> torch.Tensor:
        r = h.shape[0]
        x = _causal_conv(F.linear(h, w_in, b_in), conv_w, conv_b) * slope
        rep = lambda v: v.expand(r, *v.shape)  # noqa: E731
        y = ssd_scan(x.view(r, t, nh, hd), rep(dt), A, rep(B), rep(C), D, chunk=chunk).reshape(r, t, d_inner)
        normed = ((y * gate).view(r, t, g, d_inner // g) * rscale).view(r, t, d_inner) * norm_w
        return F.linear(normed, w_out, b_out)
    return mix


def rwkv_names(layer: int) -> list[str]:
    """Clean-run points a frozen RWKV time mix needs."""
    p = f"blocks.{layer}.att."
    return [p + "r", p + "k"]


def wkv_pattern(k: torch.Tensor, time_decay: torch.Tensor, time_first: torch.Tensor) -> torch.Tensor:
    """RWKV-4's WKV as per-channel causal weights ``[C, t, t]`` (row = output position, rows sum to 1).

    ``wkv_t = Σ_i P[:, t, i] v_i`` with ``P ∝ exp(k_i - (t-1-i)·exp(time_decay))`` for ``i < t`` and
    ``exp(time_first + k_t)`` for ``i = t``; ``k`` is ``[t, C]``.
    """
    t = k.shape[0]
    pos = torch.arange(t, device=k.device)
    lag = (pos[:, None] - 1 - pos[None, :]).to(k.dtype)  # [t, i]
    w = torch.exp(time_decay)
    scores = k.t()[:, None, :] - lag[None] * w[:, None, None]  # [C, t, i]
    diag = (time_first[:, None] + k.t())  # [C, t]
    scores = scores.clone()
    scores[:, pos, pos] = diag
    causal = pos[None, :] <= pos[:, None]
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1)


def rwkv_mixer(host, model, layer: int, clean: dict, dtype: torch.dtype) -> Mixer:
    """RWKV-4 time mix with the WKV weights, their normaliser and the receptance frozen."""
    att = model.rwkv.blocks[layer].attention
    p = f"blocks.{layer}.att."
    pattern = wkv_pattern(clean[p + "k"].to(dtype), _w(att.time_decay, dtype), _w(att.time_first, dtype))
    receptance = clean[p + "r"].to(dtype)
    mix_v = _w(att.time_mix_value, dtype)
    w_v, b_v = _w(att.value.weight, dtype), _w(att.value.bias, dtype)
    w_o, b_o = _w(att.output.weight, dtype), _w(att.output.bias, dtype)

    def mix(h: torch.Tensor) -> torch.Tensor:
        shifted = F.pad(h, (0, 0, 1, -1))
        v = F.linear(h * mix_v + shifted * (1 - mix_v), w_v, b_v)  # [R, t, C]
        y = torch.einsum("cti,ric->rtc", pattern, v)
        return F.linear(receptance * y, w_o, b_o)
    return mix
