"""The tiny zoo: small Transformer, Mamba-1, Mamba-2 and RWKV-4 models trained locally on the default corpus.

``ensure_zoo(preset="default", home=None) -> {name: checkpoint folder}`` builds once and
reuses afterwards; ``zoo_paths`` lists what is built; ``load_zoo_results`` reads ``zoo.json``;
``recall_by_period`` measures how many context pairs a model recalls.
Presets: ``"test"`` (seconds, for tests), ``"default"``, ``"circuits"`` (two-block models that do induction), ``"large"``.
"""

from .build import ensure_zoo, load_zoo_results, zoo_dir, zoo_home, zoo_paths
from .presets import PRESETS, CopyCurriculum, ModelSpec, ZooPreset, get_preset
from .recall import PeriodRecall, recall_by_period

__all__ = ["PRESETS", "CopyCurriculum", "ModelSpec", "PeriodRecall", "ZooPreset", "ensure_zoo", "get_preset", "load_zoo_results",
           "recall_by_period", "zoo_dir", "zoo_home", "zoo_paths"]
