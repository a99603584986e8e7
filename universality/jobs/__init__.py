"""Pipeline stages behind the ``universality`` command, writing into run directories.

* :class:`RunDir` — stages recorded with the fingerprint of their inputs, skipped on rerun when unchanged.
* :func:`compare_job`, :func:`seeds_job`, :func:`circuits_job`, :func:`demo_job` — the commands' pipelines;
  each ends with ``results.json``, ``report.html`` and ``summary.md`` in the run directory.
* :class:`CompareConfig`, :class:`SeedsConfig`, :class:`DemoConfig` — typed settings shared with the CLI.
"""

from .config import CompareConfig, DemoConfig, SeedsConfig, config_from_mapping
from .pipeline import circuits_job, compare_job, demo_job, seeds_job
from .rundir import RunDir

__all__ = ["CompareConfig", "DemoConfig", "RunDir", "SeedsConfig", "circuits_job", "compare_job", "config_from_mapping",
           "demo_job", "seeds_job"]
