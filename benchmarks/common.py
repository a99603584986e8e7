"""Shared pieces of the benchmarks: a figure with its same-run baseline, and a timer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from universality._timing import best_time  # noqa: F401  (re-exported for the bench modules)
from universality.precision import bf16_pays, cpu_capability


def _precision_tag() -> str:
    """``"AVX2, bf16 off"``-style tag: the CPU capability torch dispatched to and the bfloat16 decision."""
    return f"{cpu_capability()}, bf16 {'on' if bf16_pays() else 'off'}"


@dataclass
class Figure:
    """One measured figure and the baseline it is compared with in the same run."""

    name: str
    """What is measured, e.g. ``mamba forward tokens/s``."""
    value: float
    """The measured value of our implementation."""
    unit: str
    """Unit of ``value`` and ``baseline_value``."""
    baseline: str
    """What the baseline is, e.g. ``transformers MambaForCausalLM``."""
    baseline_value: float
    """The baseline measured in the same process."""
    higher_is_better: bool = True
    """Direction of ``ratio``: ours/baseline when higher is better, else baseline/ours."""
    goal_ratio: float | None = None
    """Required ratio (None: informational)."""
    goal_value: float | None = None
    """Required absolute value (None: informational)."""
    cpu: str = field(default_factory=_precision_tag)
    """The CPU capability torch dispatched to when the figure was made, and whether bfloat16 was used."""

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.value / self.baseline_value if self.baseline_value else float("inf")
        return self.baseline_value / self.value if self.value else float("inf")

    @property
    def met(self) -> bool | None:
        checks = []
        if self.goal_ratio is not None:
            checks.append(self.ratio >= self.goal_ratio)
        if self.goal_value is not None:
            checks.append(self.value >= self.goal_value if self.higher_is_better else self.value <= self.goal_value)
        return all(checks) if checks else None

    def line(self) -> str:
        goal = []
        if self.goal_ratio is not None:
            goal.append(f"ratio >= {self.goal_ratio:g}")
        if self.goal_value is not None:
            goal.append(f"value {'>=' if self.higher_is_better else '<='} {self.goal_value:g}")
        status = {True: "MET", False: "BELOW GOAL", None: ""}[self.met]
        return (f"[{self.cpu}] {self.name}: {self.value:,.4g} {self.unit} vs {self.baseline} {self.baseline_value:,.4g} "
                f"-> ratio {self.ratio:.2f}x" + (f"  [goal {' and '.join(goal)}: {status}]" if goal else ""))

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(ratio=self.ratio, met=self.met)
        return d
