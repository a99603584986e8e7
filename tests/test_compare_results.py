"""Typed compare results: to_dict/from_dict round-trip the results.json sections and bad records are one clear error."""

from __future__ import annotations

import pytest

from universality import UniversalityError
from universality.jobs.compare_results import FamiliesResult, GridResult, PairResult
from universality.reports import summarize_values

PAIR = {"a": "t", "b": "m", "layer_a": 1, "layer_b": 2, "hook": "resid_post",
        "a_to_b": summarize_values([0.1, 0.5, 0.9]), "b_to_a": summarize_values([0.2, 0.3]),
        "references": {"random-init floor": summarize_values([0.05, 0.1])},
        "grid": {"layers_a": [0, 1], "layers_b": [0, 2, 3], "stat": "mean", "values": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]},
        "top_matches": [{"a_feature": 3, "b_feature": 7, "r": 0.9, "contexts": {"a": [], "b": []}}]}
FAMILIES = {"hosts": ["a", "b", "c"], "threshold": 0.5, "n_families": 10, "by_size": {"1": 6, "2": 3, "3": 1},
            "examples": [{"members": {"a": "#1", "b": "#4", "c": "#0"}}]}


def test_pair_and_families_round_trip_exactly():
    p = PairResult.from_dict(PAIR)
    assert isinstance(p.grid, GridResult) and p.grid.values[1][2] == 0.6
    assert p.to_dict() == PAIR and list(p.to_dict()) == list(PAIR)  # same keys, same order as results.json
    f = FamiliesResult.from_dict(FAMILIES)
    assert f.to_dict() == FAMILIES and f.by_size["3"] == 1


def test_a_record_missing_fields_is_refused():
    bad = {k: v for k, v in PAIR.items() if k != "hook"}
    with pytest.raises(UniversalityError, match="lacks hook"):
        PairResult.from_dict(bad)
    with pytest.raises(UniversalityError, match="lacks values"):
        GridResult.from_dict({"layers_a": [0], "layers_b": [0]})
    with pytest.raises(UniversalityError, match="lacks"):
        FamiliesResult.from_dict([])
