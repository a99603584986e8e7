"""Scans and small ops for the Mamba hosts.

``scan.selective_scan`` (Mamba-1: C kernel on CPU, mamba-ssm on CUDA, pure-torch
fallback), ``ssd`` (Mamba-2 chunked scan), ``ops`` (causal conv, RMS norms).
"""

from .scan import patched_states, readout, scan_states, selective_scan, selective_scan_torch

__all__ = ["patched_states", "readout", "scan_states", "selective_scan", "selective_scan_torch"]
