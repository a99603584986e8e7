"""The CLI is generated from the typed configs: every field is a flag with its docstring as help, types parse,
bad values are one sentence, and every flag of the hand-written parser it replaced still exists."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from universality import UniversalityError
from universality.cli import build_parser, main
from universality.cli_config import add_config_arguments, collect, config_fields, field_docs
from universality.jobs import config as jc


def _one_sentence_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("universality: error: "), err
    assert "\n" not in err and "Traceback" not in err
    return err


def _subparser(name: str) -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@dataclass
class _Toy:
    """A config with one field of every supported kind."""

    path: str = field(default="", metadata=jc.cli(positional=True))
    """Where it reads from."""
    n_widgets: int = 7
    """How many widgets, at least one."""
    ratio: float | None = None
    """Share of the widgets that spin."""
    depths: list[float] = field(default_factory=lambda: [0.5])
    """Relative depths, comma-separated."""
    tags: list[str] = field(default_factory=list, metadata=jc.cli(flag="--tag", repeat=True))
    """One tag per use of the flag."""
    spin: bool = True
    """Spin the widgets."""
    fast: bool = False
    """Go fast."""
    homes: dict[str, str] = field(default_factory=dict, metadata=jc.cli(flag="--home", metavar="NAME=PATH"))
    """Widget name → its home."""


def test_every_field_kind_becomes_an_option():
    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    kinds = add_config_arguments(p, _Toy)
    help_text = " ".join(p.format_help().split())
    assert "--n-widgets N_WIDGETS How many widgets, at least one. (default: 7)" in help_text
    assert "--no-spin turn off (on by default): Spin the widgets." in help_text and "--fast Go fast." in help_text
    assert "--home NAME=PATH Widget name → its home." in help_text
    args = p.parse_args(["here", "--n-widgets", "3", "--ratio", "0.25", "--depths", "0,1", "--tag", "a", "--tag", "b",
                         "--no-spin", "--home", "w=/x", "--home", "v=/y"])
    got = collect(args, kinds)
    assert got == {"path": "here", "n_widgets": 3, "ratio": 0.25, "depths": [0.0, 1.0], "tags": ["a", "b"], "spin": False,
                   "homes": {"w": "/x", "v": "/y"}}
    assert collect(p.parse_args([]), kinds) == {}  # nothing given: the config file or the dataclass defaults decide
    assert field_docs(_Toy)["ratio"] == "Share of the widgets that spin."


def test_a_new_config_field_appears_as_a_flag_with_its_docstring(monkeypatch, capsys):
    @dataclass
    class Extended(jc.SeedsConfig):
        warmup_steps: int = 100
        """Optimizer steps at the start with a linearly rising learning rate."""

        def __post_init__(self):
            super().__post_init__()
            if self.warmup_steps < 0:
                raise UniversalityError(f"warmup_steps {self.warmup_steps} is not valid; use 0 or more")

    monkeypatch.setattr(jc, "SeedsConfig", Extended)
    help_text = " ".join(_subparser("seeds").format_help().split())
    assert "--warmup-steps WARMUP_STEPS Optimizer steps at the start with a linearly rising learning rate. (default: 100)" in help_text
    assert "--threshold THRESHOLD Cosine both matched encoder and decoder rows must exceed" in help_text  # inherited fields too
    assert main(["seeds", "m", "--warmup-steps", "-3", "--out", "unused"]) == 2
    assert "warmup_steps -3 is not valid" in _one_sentence_error(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["compare", "a", "b", "--n-tokens", "many"], "argument --n-tokens: invalid int value: 'many'"),
    (["compare", "a", "b", "--n-tokens", "0"], "n_tokens 0 is not valid; use an integer of at least 1"),
    (["compare", "a", "b", "--layers", "0,2"], "layers [0.0, 2.0] is not valid"),
    (["compare", "a", "b", "--layers", "0,deep"], "is not a comma-separated list of numbers"),
    (["compare", "a", "b", "--floor-model", "nopath"], "'nopath' is not NAME=PATH"),
    (["train", "store", "--kind", "dense"], "kind 'dense' is not valid"),
    (["train", "store", "--n-latents", "0"], "n_latents 0 is not valid"),
    (["cache", "model"], "cache needs at least one --hook"),
    (["induction"], "need at least one model"),
    (["report"], "report needs a run directory"),
    (["report", "x", "--out", "y"], "unrecognized arguments: --out"),
])
def test_bad_values_are_one_sentence(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in _one_sentence_error(capsys)
    assert list(tmp_path.iterdir()) == []


OLD_FLAGS = {  # every option of the hand-written parser this generator replaced
    "demo": ["--out", "--corpus", "--quick", "--zoo-preset", "--zoo-home"],
    "zoo": ["--preset", "--home", "--only"],
    "cache": ["--hook", "--tokens", "--seq-len", "--corpus", "--out"],
    "train": ["--hook", "--kind", "--n-latents", "--k", "--seed", "--n-tokens", "--batch-size", "--out"],
    "compare": ["--names", "--hook", "--layers", "--n-tokens", "--seq-len", "--kind", "--n-latents", "--k", "--sae-epochs",
                "--n-boot", "--n-boot-refs", "--family-threshold", "--no-floor", "--floor-model", "--seed-model", "--top-matches",
                "--corpus", "--seed", "--out"],
    "seeds": ["--seeds", "--kinds", "--n-latents", "--k", "--hook", "--layer", "--n-tokens", "--seq-len", "--sae-epochs",
              "--threshold", "--corpus", "--out"],
    "induction": ["--n-prompts", "--out"],
    "off-by-one": ["--n-prompts", "--out"],
    "report": [],
}


@pytest.mark.parametrize("command", sorted(OLD_FLAGS))
def test_every_earlier_flag_still_exists(command):
    sp = _subparser(command)
    flags = {s for a in sp._actions for s in a.option_strings}
    assert set(OLD_FLAGS[command]) | {"--device", "--quiet", "--config"} <= flags


def test_every_config_field_is_documented_and_exposed():
    for cls in (jc.DemoConfig, jc.ZooConfig, jc.CacheConfig, jc.TrainConfig, jc.CompareConfig, jc.SeedsConfig, jc.CircuitsConfig,
                jc.ReportConfig, jc.RunOptions, jc.EvalConfig):
        docs = field_docs(cls)
        assert set(docs) == set(config_fields(cls)), f"{cls.__name__}: every field needs a docstring"
        assert all(len(d) > 5 for d in docs.values())
