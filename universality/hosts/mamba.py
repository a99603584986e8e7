"""Mamba-1 host (``model_type == "mamba"``): our own mixer forward over the HF weights.

Per block ``i`` the points, in forward order, are (``b`` batch, ``t`` positions,
``d`` = ``d_inner`` = expand x d_model, ``n`` = state size)::

    blocks.i.resid_pre      [b, t, d_model]   residual entering the block
    blocks.i.mixer_in       [b, t, d_model]   after the block's RMS norm
    blocks.i.ssm.in_x       [b, t, d]         x half of in_proj, before the conv
    blocks.i.ssm.gate       [b, t, d]         z half of in_proj
    blocks.i.ssm.conv_out   [b, t, d]         after the causal depthwise conv and the activation
    blocks.i.ssm.dt         [b, t, d]         Δ = softplus(dt_proj(..) + bias)
    blocks.i.ssm.B          [b, t, n]
    blocks.i.ssm.C          [b, t, n]
    blocks.i.ssm.state      [b, t, d, n]      hidden state after each position (on demand only)
    blocks.i.ssm.y          [b, t, d]         scan output including the D skip, before gating
    blocks.i.mixer_out      [b, t, d_model]   out_proj(y * act(gate)), added to the residual
    blocks.i.resid_post     [b, t, d_model]   = resid_pre + mixer_out

plus ``embed`` and ``final_norm``. Weights are read from the HF modules at every
call, so in-place edits (``mixer.conv1d.weight``, ``mixer.A_log``...) are followed.

Patching ``ssm.state``: a replaced entry (where the hook's tensor differs from the
computed states) is read out at its own position *and* the recurrence continues
from it; see :func:`~universality.hosts.ssm.scan.patched_states`. The
cache then holds the states actually used (later positions included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mamba2  # noqa: F401  (registers the "mamba2" host)
from .hookrun import HookRun
from .registry import register_host
from .ssm.conv import conv_act
from .ssm.ops import rms_norm, two_headed_linear, upcast_residual
from .ssm.backbone import MambaBackboneHost
from .ssm.mixer_core import mixer_core, mixer_core_fits
from .ssm.scan import BACKENDS, patched_states, readout, resolve_backend, scan_states, selective_scan

_CORE_POINTS = ("ssm.in_x", "ssm.gate", "ssm.conv_out", "ssm.dt", "ssm.B", "ssm.C", "ssm.state", "ssm.y")


def _state_hook_input(run: HookRun, name: str, states: torch.Tensor) -> torch.Tensor:
    """The tensor handed to the ``ssm.state`` hooks: a copy when hooks exist, so in-place edits are detected."""
    return states.clone() if name in run.hooks else states


@register_host("mamba")
class MambaHost(MambaBackboneHost):
    """Mamba-1 (``MambaForCausalLM``) with the hook vocabulary above.

    Attributes:
        scan_backend: ``"auto"`` (mamba-ssm on CUDA when importable, else the C
            kernel on CPU, else pure torch), ``"c"``, ``"cuda"`` or ``"torch"``
            (``"torch"`` also turns off the fused C conv+SiLU and RMS-norm kernels).
    """

    scan_backend: str = "auto"
    block_attrs = ("norm.weight", "norm.variance_epsilon", "mixer.in_proj", "mixer.conv1d", "mixer.x_proj",
                   "mixer.dt_proj", "mixer.A_log", "mixer.D", "mixer.out_proj", "mixer.act", "mixer.activation",
                   "mixer.intermediate_size", "mixer.ssm_state_size", "mixer.time_step_rank")

    def set_scan_backend(self, backend: str) -> None:
        """Choose the selective-scan implementation (one of ``BACKENDS``)."""
        from .._errors import UniversalityError

        if backend not in BACKENDS:
            raise UniversalityError(f"scan backend '{backend}' is not valid; use one of {', '.join(BACKENDS)}")
        self.scan_backend = backend

    def _norm_kernel(self) -> bool:
        return self.scan_backend != "torch"

    def _block(self, i: int, layer: torch.nn.Module, h: torch.Tensor, run: HookRun) -> torch.Tensor:
        p = f"blocks.{i}."
        m = layer.mixer
        h = run(p + "resid_pre", h)
        residual = upcast_residual(h, bool(self.config.residual_in_fp32))
        use_kernels = self.scan_backend != "torch"
        u = run(p + "mixer_in", rms_norm(h.to(layer.norm.weight.dtype), layer.norm.weight, layer.norm.variance_epsilon,
                                         use_kernel=use_kernels))

        d_inner, n, rank = m.intermediate_size, m.ssm_state_size, m.time_step_rank
        w, bias = m.in_proj.weight, m.in_proj.bias
        if self._core_fits(p, m, u, run):  # nothing inside the mixer is hooked: one fused Function
            A = -torch.exp(m.A_log.to(u.dtype))
            gated = mixer_core(F.linear(u, w, bias), m.conv1d.weight, m.conv1d.bias, m.x_proj.weight,
                               m.dt_proj.weight, m.dt_proj.bias, A, m.D.to(u.dtype), rank)
            return self._out_proj(p, m, gated, residual, run)
        if p + "ssm.in_x" in run.hooks or p + "ssm.gate" in run.hooks:  # hooks may edit in place: plain tensors
            x = F.linear(u, w[:d_inner], bias[:d_inner] if bias is not None else None)
            z = F.linear(u, w[d_inner:], bias[d_inner:] if bias is not None else None)
        else:  # strided views of one product, with a backward that builds no scatter buffers
            x, z = two_headed_linear(u, w, bias, d_inner)
        x = run(p + "ssm.in_x", x)
        z = run(p + "ssm.gate", z)
        x = run(p + "ssm.conv_out", conv_act(x, m.conv1d.weight, m.conv1d.bias, m.act, m.activation, use_kernel=use_kernels))

        dt_low, B, C = torch.split(F.linear(x, m.x_proj.weight), [rank, n, n], dim=-1)
        # one fused scan pass gives y * silu(z) unless the states or y are read or written; unless Δ is too,
        # dt_proj's bias and the softplus also run inside that pass (no full-tensor passes of their own)
        fused = m.activation in ("silu", "swish") and not run.wants_any((p + "ssm.state", p + "ssm.y"))
        fuse_dt = fused and not run.wants(p + "ssm.dt")
        if fuse_dt:
            dt = F.linear(dt_low, m.dt_proj.weight)
        else:
            dt = run(p + "ssm.dt", F.softplus(F.linear(dt_low, m.dt_proj.weight, m.dt_proj.bias)))
        B = run(p + "ssm.B", B)
        C = run(p + "ssm.C", C)
        A = -torch.exp(m.A_log.to(x.dtype))
        D = m.D.to(x.dtype)

        if fused:
            gated = selective_scan(x, dt, A, B, C, D, z=z, backend=self.scan_backend,
                                   dt_bias=m.dt_proj.bias if fuse_dt else None, dt_softplus=fuse_dt)
        else:
            y = run(p + "ssm.y", self._scan(p + "ssm.state", x, dt, A, B, C, D, run))
            gated = y * m.act(z)
        return self._out_proj(p, m, gated, residual, run)

    def _core_fits(self, p: str, m: torch.nn.Module, u: torch.Tensor, run: HookRun) -> bool:
        """Whether the block may run :func:`mixer_core` (C backend, no point inside the mixer read or written)."""
        if run.wants_any(p + name for name in _CORE_POINTS):
            return False
        if m.x_proj.bias is not None or resolve_backend(self.scan_backend, u.device, u.dtype) != "c":
            return False
        return mixer_core_fits(u, m.intermediate_size, m.activation, m.in_proj.weight, m.conv1d.weight,
                               m.x_proj.weight, m.dt_proj.weight, m.A_log, m.D)

    @staticmethod
    def _out_proj(p: str, m: torch.nn.Module, gated: torch.Tensor, residual: torch.Tensor, run: HookRun) -> torch.Tensor:
        """``resid_post = residual + out_proj(gated)``, one ``addmm`` when ``mixer_out`` is not read or written."""
        weight, bias = m.out_proj.weight, m.out_proj.bias
        gated = gated.to(weight.dtype)
        if not run.wants(p + "mixer_out") and bias is None and residual.dtype == gated.dtype:
            lead = residual.shape[:-1]
            h = torch.addmm(residual.reshape(-1, residual.shape[-1]), gated.reshape(-1, gated.shape[-1]), weight.t())
            return run(p + "resid_post", h.view(*lead, -1))
        out = run(p + "mixer_out", F.linear(gated, weight, bias))
        return run(p + "resid_post", residual + out)

    def _scan(self, name: str, x, dt, A, B, C, D, run: HookRun) -> torch.Tensor:
        """y [b, t, d]; materialises per-position states only when ``name`` is read or written."""
        if not run.wants(name):
            return selective_scan(x, dt, A, B, C, D, backend=self.scan_backend)
        states = scan_states(x, dt, A, B, use_kernel=self.scan_backend != "torch")
        new = run(name, _state_hook_input(run, name, states))
        used = patched_states(states, new, x, dt, A, B)
        if used is not new and name in run.cache_names:
            run.cache[name] = used
        return readout(used, C, x, D)
