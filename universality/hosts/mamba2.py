"""Mamba-2 host (``model_type == "mamba2"``): our own mixer forward over the HF weights.

Per block ``i`` the points, in forward order (``h`` heads, ``p`` head_dim,
``g`` groups, ``n`` state size, ``d`` = ``d_inner`` = h x p)::

    blocks.i.resid_pre      [b, t, d_model]
    blocks.i.mixer_in       [b, t, d_model]   after the block's RMS norm
    blocks.i.ssm.in_x       [b, t, h, p]      x part of in_proj, before the conv
    blocks.i.ssm.gate       [b, t, h, p]      z part of in_proj (gates the norm)
    blocks.i.ssm.conv_out   [b, t, h, p]      x after the causal depthwise conv and the activation
    blocks.i.ssm.dt         [b, t, h]         Δ = clamp(softplus(dt + dt_bias), time_step_limit)
    blocks.i.ssm.B          [b, t, g, n]      after the conv and the activation (B and C share the conv with x)
    blocks.i.ssm.C          [b, t, g, n]
    blocks.i.ssm.state      [b, t, h, p, n]   state after each position (on demand only)
    blocks.i.ssm.y          [b, t, h, p]      scan output including the D skip, before the gated norm
    blocks.i.mixer_out      [b, t, d_model]   out_proj(gated_rms_norm(y, gate))
    blocks.i.resid_post     [b, t, d_model]   = resid_pre + mixer_out

plus ``embed`` and ``final_norm``. ``ssm.state`` patching follows the same rule as
Mamba-1: replaced entries are read out and carried forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .hookrun import HookRun
from .registry import register_host
from .ssm.backbone import MambaBackboneHost
from .ssm.conv import conv_act
from .ssm.ops import gated_rms_norm, rms_norm, upcast_residual
from .ssm.ssd import ssd_patched_states, ssd_readout, ssd_scan, ssd_states



@register_host("mamba2")
class Mamba2Host(MambaBackboneHost):
    """Mamba-2 (``Mamba2ForCausalLM``) with the hook vocabulary above (pure-torch chunked scan).

    Attributes:
        chunk_size: positions per chunk of the chunked scan (memory ~ chunk_size² per head).
    """

    chunk_size: int = 64
    block_attrs = ("norm.weight", "norm.variance_epsilon", "mixer.in_proj", "mixer.conv1d", "mixer.dt_bias",
                   "mixer.A_log", "mixer.D", "mixer.norm.weight", "mixer.norm.variance_epsilon", "mixer.out_proj",
                   "mixer.act", "mixer.activation", "mixer.time_step_limit", "mixer.num_heads", "mixer.head_dim",
                   "mixer.n_groups", "mixer.ssm_state_size", "mixer.intermediate_size")

    def _block(self, i: int, layer: torch.nn.Module, h: torch.Tensor, run: HookRun) -> torch.Tensor:
        p = f"blocks.{i}."
        m = layer.mixer
        h = run(p + "resid_pre", h)
        residual = upcast_residual(h, bool(self.config.residual_in_fp32))
        u = run(p + "mixer_in", rms_norm(h.to(layer.norm.weight.dtype), layer.norm.weight, layer.norm.variance_epsilon))

        b, t, _ = u.shape
        nh, hd, g, n, d_inner = m.num_heads, m.head_dim, m.n_groups, m.ssm_state_size, m.intermediate_size
        proj = F.linear(u, m.in_proj.weight, m.in_proj.bias)
        gate, x_in, bc_in, dt_in = torch.split(proj, [d_inner, d_inner, 2 * g * n, nh], dim=-1)
        x_in = run(p + "ssm.in_x", x_in.reshape(b, t, nh, hd))
        gate = run(p + "ssm.gate", gate.reshape(b, t, nh, hd))

        xbc = torch.cat([x_in.reshape(b, t, d_inner), bc_in], dim=-1)
        xbc = conv_act(xbc, m.conv1d.weight, m.conv1d.bias, m.act, m.activation)
        x, B, C = torch.split(xbc, [d_inner, g * n, g * n], dim=-1)
        x = run(p + "ssm.conv_out", x.reshape(b, t, nh, hd))
        lo, hi = m.time_step_limit
        dt = run(p + "ssm.dt", torch.clamp(F.softplus(dt_in + m.dt_bias.to(dt_in.dtype)), min=lo, max=hi))
        B = run(p + "ssm.B", B.reshape(b, t, g, n))
        C = run(p + "ssm.C", C.reshape(b, t, g, n))
        A = -torch.exp(m.A_log.to(x.dtype))
        D = m.D.to(x.dtype)

        y = run(p + "ssm.y", self._scan(p + "ssm.state", x, dt, A, B, C, D, run))
        normed = gated_rms_norm(y.reshape(b, t, d_inner), gate.reshape(b, t, d_inner), m.norm.weight,
                                m.norm.variance_epsilon, group_size=d_inner // g)
        out = run(p + "mixer_out", F.linear(normed.to(m.out_proj.weight.dtype), m.out_proj.weight, m.out_proj.bias))
        return run(p + "resid_post", residual + out)

    def _scan(self, name: str, x, dt, A, B, C, D, run: HookRun) -> torch.Tensor:
        if not run.wants(name):
            return ssd_scan(x, dt, A, B, C, D, chunk=self.chunk_size)
        states = ssd_states(x, dt, A, B)
        new = run(name, states.clone() if name in run.hooks else states)
        used = ssd_patched_states(states, new, x, dt, A, B)
        if used is not new and name in run.cache_names:
            run.cache[name] = used
        return ssd_readout(used, C, x, D)
