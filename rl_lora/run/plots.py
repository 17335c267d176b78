"""Training curves as PNG: people would rather look than read."""
from __future__ import annotations

from pathlib import Path

import matplotlib

from rl_lora.types import StepMetrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(metrics: list[StepMetrics], base_accuracy: float | None, out_path: Path, title: str) -> Path:
    steps = [m.step for m in metrics]
    figure, (rewards_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    rewards_axis.plot(steps, [m.reward_mean for m in metrics], marker=".", label="mean reward (sampled)")
    rewards_axis.plot(steps, [1 - m.truncated_fraction for m in metrics], alpha=0.5,
                      label="finished within the token limit")
    rewards_axis.set(xlabel="RL step", ylabel="fraction", title="training rollouts", ylim=(-0.02, 1.02))
    rewards_axis.legend(loc="lower right")
    evaluated = [(m.step, m.test_accuracy) for m in metrics if m.test_accuracy is not None]
    if base_accuracy is not None:
        evaluated = [(0, base_accuracy)] + evaluated
    if evaluated:
        accuracy_axis.plot(*zip(*evaluated), marker="o")
    accuracy_axis.set(xlabel="RL step", ylabel="greedy test accuracy", title="test accuracy", ylim=(-0.02, 1.02))
    for axis in (rewards_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=110)
    plt.close(figure)
    return out_path
