"""Joint dictionaries across models: crosscoders, universal SAEs and partitioned crosscoders.

One sparse code read from, or written to, several models at once, on aligned rows
(the same tokens, or the alignment of two tokenizers)::

    from universality import sae
    jd = sae.fit_joint([x_a, x_b], kind="crosscoder", n_latents=4096, k=32, seed=0)  # x_m: [n, d_m]
    codes = jd.encode([x_a, x_b])          # [n, n_latents]
    y_a, y_b = jd.decode(codes)            # one [n, d_m] tensor per model
    jd.decoder_norms                       # [M, n_latents]
    jd.classify()                          # "shared" or the tuple of models carrying each latent

Kinds (registered once each, with ``joint = True``, in :mod:`universality.sae.registry`):
``"crosscoder"`` (BatchTopK), ``"crosscoder_l1"`` (the published L1 baseline),
``"usae"`` (universal SAE) and ``"partitioned"`` (dedicated-feature crosscoder).
Diagnostics: :mod:`.diagnostics`. Format: :meth:`JointDictionary.save` / :func:`load_joint`.
"""

from . import kinds as _kinds  # noqa: F401  (registers the joint kinds)
from . import diagnostics
from .config import CrosscoderConfig, CrosscoderL1Config, JointConfig, PartitionedConfig, USAEConfig
from .dictionary import DEAD, SHARED, UNCLASSED, UNRESOLVED, JointDictionary, load_joint
from .fit import fit_joint
from .rows import AlignedRows
from .kinds import CrosscoderCoder, CrosscoderL1Coder, PartitionedCoder, USAECoder

__all__ = ["fit_joint", "load_joint", "JointDictionary", "AlignedRows", "JointConfig", "CrosscoderConfig", "CrosscoderL1Config",
           "USAEConfig", "PartitionedConfig", "CrosscoderCoder", "CrosscoderL1Coder", "USAECoder", "PartitionedCoder",
           "SHARED", "DEAD", "UNRESOLVED", "UNCLASSED", "diagnostics"]
