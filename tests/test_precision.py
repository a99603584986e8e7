"""The one bfloat16 decision: override, cached probe, and every path that asks it."""

from __future__ import annotations

import json
import os

import pytest
import torch

from universality import precision
from universality._errors import UniversalityError


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty $UNIVERSALITY_HOME and no in-process answer."""
    monkeypatch.setenv("UNIVERSALITY_HOME", str(tmp_path))
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    monkeypatch.setattr(precision, "_ANSWER", None)
    return tmp_path


def test_override_wins_and_bad_value_is_one_sentence(fresh, monkeypatch):
    monkeypatch.setattr(precision, "measure_speedup", lambda: pytest.fail("the override must not probe"))
    for raw, want in (("1", True), ("0", False)):
        monkeypatch.setenv(precision.ENV_VAR, raw)
        probe = precision.bf16_probe()
        assert (probe.bf16, probe.source, probe.speedup) == (want, "env", None)
        assert precision.bf16_pays() is want
    monkeypatch.setenv(precision.ENV_VAR, "yes")
    with pytest.raises(UniversalityError, match=r"UNIVERSALITY_BF16='yes' is not a valid precision override; use 1"):
        precision.bf16_pays()


def test_probe_is_measured_once_and_cached_per_machine(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "measure_speedup", lambda: calls.append(1) or 0.01)
    first = precision.bf16_probe()
    assert (first.bf16, first.source, len(calls)) == (False, "measured", 1)
    monkeypatch.setattr(precision, "_ANSWER", None)  # a new process: reads the cache file
    again = precision.bf16_probe()
    assert (again.bf16, again.source, len(calls)) == (False, "cache", 1)
    entries = json.loads((fresh / "probes" / "precision.json").read_text())
    assert entries[first.machine_key]["speedup"] == 0.01
    # another instruction-set environment is another machine: probed afresh
    other_isa = "AVX512_CORE" if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other_isa)
    monkeypatch.setattr(precision, "measure_speedup", lambda: calls.append(1) or 3.0)
    other = precision.bf16_probe()
    assert (other.bf16, other.source, len(calls)) == (True, "measured", 2) and other.machine_key != first.machine_key


def test_emulated_bf16_ends_the_probe_after_one_call(fresh, monkeypatch):
    """A slow first bfloat16 product (as on AVX2, where it is emulated) is not repeated: one call, ratio < 1."""
    import time

    real_mm, bf16_calls = torch.mm, []

    def mm(a, b):
        if a.dtype == torch.bfloat16:
            bf16_calls.append(1)
            time.sleep(1.0)  # emulated bf16 takes most of a second; 1 s keeps the check clear of load on the float32 side
        return real_mm(a.float(), b.float())

    monkeypatch.setattr(torch, "mm", mm)
    ratio = precision.measure_speedup()
    assert len(bf16_calls) == 1 and ratio < 1 / 20
    assert not precision.bf16_probe().bf16


def test_zoo_resolves_bf16_from_the_probe(fresh, monkeypatch):
    from universality.zoo.presets import get_preset, resolve_precision
    from universality.zoo.train import training_precision

    p = get_preset("default")
    assert p.bf16
    monkeypatch.setenv(precision.ENV_VAR, "0")
    off = resolve_precision(p)
    assert not off.bf16 and training_precision(off, "gpt_neox") == "float32"
    assert off.copy_warmup_steps == p.copy_warmup_steps_float32 == 1000  # float32 needs the longer warm-up
    monkeypatch.setenv(precision.ENV_VAR, "1")
    on = resolve_precision(p)
    assert training_precision(on, "gpt_neox") == "bfloat16-autocast" and training_precision(on, "mamba") == "float32"
    assert on.copy_warmup_steps == 600


def test_cpu_description_names_the_capability(fresh, monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "0")
    line = precision.cpu_description()
    assert f"torch capability {precision.cpu_capability()}" in line and "bf16 off (env)" in line


def test_bad_override_at_the_command_line_is_one_sentence_and_status_2(fresh, monkeypatch, capsys):
    from universality.cli import main

    monkeypatch.setenv(precision.ENV_VAR, "fast")
    assert main(["zoo", "--home", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert "UNIVERSALITY_BF16='fast' is not a valid precision override" in err and "Traceback" not in err
