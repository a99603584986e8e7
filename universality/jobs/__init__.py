"""The commands' pipelines, one module per command, writing into run directories.

* :class:`RunDir` — stages recorded with the fingerprint of their inputs, skipped on rerun when unchanged.
* :func:`compare_job`, :func:`seeds_job`, :func:`circuits_job`, :func:`demo_job` — each ends with ``results.json``
  (a :class:`~universality.results.RunResults`), ``report.html`` and ``summary.md`` in the run directory;
  :func:`cache_job` writes an activation store and :func:`train_job` a dictionary; :func:`eval_job` evaluates dictionaries
  from any library on one model (SAEBench JSON next to results.json).
* :mod:`.config` — the typed settings of every command; the CLI's options are generated from them.
"""

from .cache import cache_job
from .circuit import circuit_job
from .circuits import circuits_job
from .config import (CacheConfig, CircuitGraphConfig, CircuitsConfig, CompareConfig, DemoConfig, EvalConfig, ExplainConfig, LensConfig,
                     ReportConfig, RunOptions, SeedsConfig, SteerConfig, TrainConfig, ZooConfig, config_from_mapping)
from .evaluate import eval_job
from .demo import demo_job
from .compare import compare_job
from .explain import explain_job
from .lens import lens_job
from .rundir import RunDir
from .seeds import seeds_job
from .steer import steer_job
from .train import train_job

__all__ = ["CacheConfig", "CircuitGraphConfig", "CircuitsConfig", "CompareConfig", "DemoConfig", "ExplainConfig", "ReportConfig", "RunDir", "RunOptions", "SeedsConfig",
           "TrainConfig", "ZooConfig", "cache_job", "circuit_job", "circuits_job", "compare_job", "config_from_mapping", "demo_job", "explain_job", "seeds_job",
           "train_job", "EvalConfig", "eval_job", "LensConfig", "SteerConfig", "lens_job", "steer_job"]
