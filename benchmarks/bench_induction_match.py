"""The demo's induction-match stage (issue 15 item 4) on the ``circuits`` zoo's Transformer, Mamba and RWKV.

Goals: the stage adds ≤ 45 s to the demo's first run and ≤ 5 s to a cached rerun (stage lookup plus its report
section). Baseline, in the same process: the paper-findings stages of the same hosts (induction localisation,
previous-token mixer and Off-by-One), which the demo already runs on them. The circuits zoo is built when absent
(``$UNIVERSALITY_HOME``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Figure


def run(quick: bool) -> list[Figure]:
    """Stage time on first run and on a cached rerun (with the report), against the paper-findings stages."""
    import torch

    from universality import zoo
    from universality.activations import host_fingerprint
    from universality.data import load_corpus
    from universality.jobs.circuits import induction_match_stage, induction_stage, paper_findings_stage
    from universality.jobs.common import environment, load_hosts, now
    from universality.jobs.rundir import RunDir
    from universality.reports import write_report
    from universality.results import RunResults

    names = ["transformer", "mamba", "rwkv"]
    paths = zoo.ensure_zoo("circuits", None, only=names)
    hosts = load_hosts({f"{n}.circuits": str(paths[n]) for n in names}, torch.device("cpu"))
    corpus = load_corpus("default")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(Path(tmp) / "run", lambda _: None)
        fps = {n: host_fingerprint(h) for n, h in hosts.items()}
        t0 = time.perf_counter()
        findings = [paper_findings_stage(run_dir, n, h, fps[n], induction_stage(run_dir, n, h, fps[n], n_prompts=16), n_prompts=16)
                    for n, h in hosts.items()]
        base = time.perf_counter() - t0
        times = []
        for tag in ("first", "cached"):
            t0 = time.perf_counter()
            res = induction_match_stage(run_dir, hosts, fps, findings, corpus, quick=quick)
            r = RunResults("bench", now(), environment(torch.device("cpu")), {"name": "default"}, [], paper_findings=findings,
                           induction_match=res)
            write_report(Path(tmp) / f"report-{tag}", r.to_dict())
            times.append(time.perf_counter() - t0)
    return [Figure("induction-match stage + report, first run", times[0], "s", "paper-findings stages of the same 3 hosts",
                   base, higher_is_better=False, goal_value=45.0),
            Figure("induction-match stage + report, cached rerun", times[1], "s", "paper-findings stages of the same 3 hosts",
                   base, higher_is_better=False, goal_value=5.0)]
