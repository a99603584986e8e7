"""Report sections are registry entries: a new analysis is one Section, and it gets validation, page, figure, CSV and summary."""

from __future__ import annotations

import re

import pytest

from universality import UniversalityError, reports
from universality.reports.figures import _png
from universality.reports.page import csv_text
from universality.reports.sections import Section, register, registered, unregister


class _Probe(Section):
    """A toy analysis: one number per model under results.json ``probe``."""

    key = "probe"

    def validate(self, res):
        for i, e in enumerate(res.get("probe") or []):
            if not 0 <= e.get("accuracy", -1) <= 1:
                raise UniversalityError(f"results.json 'probe[{i}].accuracy' must lie in [0, 1]")

    def render(self, res, page):
        entries = res.get("probe") or []
        page.heading("Linear probes")
        page.table(["model", "accuracy"], [[e["model"], e["accuracy"]] for e in entries])

        def draw():
            from matplotlib.figure import Figure

            fig = Figure(figsize=(3, 2))
            fig.add_subplot().bar(range(len(entries)), [e["accuracy"] for e in entries])
            return _png(fig)

        page.figure("probe", "Probe accuracy per model.", draw)

    def tables(self, res):
        return {"probe.csv": csv_text([["model", "accuracy"]] + [[e["model"], e["accuracy"]] for e in res.get("probe") or []])}

    def findings(self, res):
        return [f"The probe on {e['model']} reaches {e['accuracy']:.0%}." for e in res.get("probe") or []]


@pytest.fixture
def probe_section():
    section = register(_Probe(), before="Timings")
    yield section
    unregister("_Probe")


def test_built_in_sections_in_page_order():
    assert [type(s).__name__ for s in registered()] == ["Overview", "Pairs", "DepthGrid", "TopMatches", "Families", "SeedStability",
                                                        "Induction", "WriteLag", "Lens", "Steering", "PaperFindings", "InductionMatchSection", "Circuits", "Evaluation", "Explanations", "JointDictionarySection", "Timings"]


def test_one_registered_section_adds_page_figure_table_and_summary(probe_section, tmp_path):
    res = reports.example_results(n_features=32)
    res["probe"] = [{"model": "transformer", "accuracy": 0.75}, {"model": "mamba", "accuracy": 0.5}]
    res["timings"] = {"stage": {"seconds": 1.0, "status": "ran"}}
    files = reports.write_report(tmp_path, res)
    html = files.html.read_text()
    assert html.index("<h2>Linear probes</h2>") < html.index("<h2>Run</h2>")  # placed before the timings
    assert (tmp_path / "figures" / "probe.png").is_file() and (tmp_path / "tables" / "probe.csv").read_text().splitlines()[1] == "transformer,0.75"
    assert "The probe on transformer reaches 75%." in html
    assert re.search(r"- The probe on mamba reaches 50%\.", files.markdown.read_text())


def test_a_section_validates_its_own_part(probe_section, tmp_path):
    res = reports.example_results(n_features=32)
    res["probe"] = [{"model": "transformer", "accuracy": 3}]
    with pytest.raises(UniversalityError, match=r"probe\[0\].accuracy' must lie in \[0, 1\]"):
        reports.write_report(tmp_path / "run", res)
    assert not (tmp_path / "run" / "results.json").exists()


def test_registry_refuses_duplicates_and_unknown_anchors(probe_section):
    with pytest.raises(UniversalityError, match="already registered"):
        register(_Probe())
    unregister("_Probe")
    with pytest.raises(UniversalityError, match="before 'Nope'"):
        register(_Probe(), before="Nope")
    register(_Probe())  # the fixture unregisters it again


def test_paper_findings_section_side_by_side(tmp_path):
    """A record made by ``analysis.paper_findings`` (via its dict) renders as one table row per model, its
    verdict as a summary sentence, and a CSV row per lag; a record without its model is refused."""
    from universality.analysis.paper_findings import OffByOne, PaperFindings, verdict

    f = PaperFindings("mamba", "mamba", 3.0, 1, 0.8, "conv", 2.4, 0.05,
                      OffByOne([-0.1, -4.0, -0.2, 0.0], [-0.3, -5.0, -0.4, -0.1], [0.1, -3.0, 0.0, 0.1], -4.5, 64))
    f.verdict = verdict(f)
    assert "findings hold:" in f.verdict and "80 % of the positive layer scores" in f.verdict
    # the same copying loss with the first half wrecked too (+2.0 nats >= half of 2.4): the mixer test is confounded
    broken = PaperFindings("rwkv", "rwkv", 3.0, 0, 0.8, "token shift", 2.4, 2.0, f.off_by_one)
    assert "hold in part" in verdict(broken) and "cannot tell the mixer from general damage" in verdict(broken)
    res = reports.example_results(n_features=32)
    res["paper_findings"] = [f.to_dict()]
    files = reports.write_report(tmp_path, res)
    html = files.html.read_text()
    assert "circuit findings, per architecture" in html and "-4.00 [-5.00, -3.00]" in html
    assert f.verdict in files.markdown.read_text()
    rows = (tmp_path / "tables" / "paper_findings.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[2].startswith("mamba,mamba,1,conv,2.4,1,-4.0000")
    bad = dict(res, paper_findings=[{"arch": "mamba"}])
    with pytest.raises(UniversalityError, match=r"paper_findings\[0\].model"):
        reports.write_report(tmp_path / "bad", bad)
