"""The RWKV-4 WKV scan: a fast, numerically stable time-mixing kernel over Hugging Face weights.

Per channel ``c`` (drop it from the notation), with decay ``w = exp(time_decay) > 0``
and bonus ``u = time_first``, RWKV-4 keeps a numerator ``a`` and a denominator ``b``::

    a_t = exp(-w) a_{t-1} + exp(k_t) v_t          b_t = exp(-w) b_{t-1} + exp(k_t)
    wkv_t = (a_{t-1} + exp(u + k_t) v_t) / (b_{t-1} + exp(u + k_t))        (a_{-1} = b_{-1} = 0)

The real ``a`` and ``b`` over- and underflow, so states are stored as a triple
``(num, den, log_scale)`` with ``a = num * exp(log_scale)`` and
``b = den * exp(log_scale)`` (the layout Hugging Face uses for its cache):
see :mod:`.scan` for the state layout and :mod:`.function` for the fused
autograd function with a hand-written backward. A call whose every channel has a slow
decay (or a short row) takes :mod:`.cumulative` instead: the same values as two prefix sums, no loop.
"""

from .cumulative import cumulative_channels, cumulative_wkv
from .function import scan_wkv, wkv
from .scan import STATE_FIELDS, initial_state, output_from_states, scan_states, shift_states

__all__ = ["wkv", "scan_wkv", "cumulative_wkv", "cumulative_channels", "scan_states", "output_from_states", "shift_states", "initial_state", "STATE_FIELDS"]
