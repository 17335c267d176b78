"""Training curves as PNG: people would rather look than read."""
from __future__ import annotations

from pathlib import Path

import matplotlib

from rl_lora.types import StepMetrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(metrics: list[StepMetrics], base_accuracy: float | None, out_path: Path, title: str) -> Path:
    steps = [m.step for m in metrics]
    episodes = any(m.episode_turns != 1 or m.tool_call_fraction for m in metrics)  # multi-turn, tools
    figure, axes = plt.subplots(1, 3 if episodes else 2, figsize=(16 if episodes else 11, 4))
    rewards_axis, accuracy_axis = axes[:2]
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
    accuracy_axis.set(xlabel="RL step", ylabel="test accuracy (greedy, or mean@N)", title="test accuracy", ylim=(-0.02, 1.02))
    if episodes:
        tools_axis = axes[2]
        tools_axis.plot(steps, [m.tool_call_fraction for m in metrics], marker=".", label="call a tool")
        tools_axis.plot(steps, [m.tool_ok_fraction for m in metrics], marker=".", label="...and every call works")
        tools_axis.set(xlabel="RL step", ylabel="fraction of episodes", title="tool use", ylim=(-0.02, 1.02))
        turns = tools_axis.twinx()
        turns.plot(steps, [m.episode_turns for m in metrics], color="gray", alpha=0.5, label="turns (right axis)")
        turns.set(ylabel="assistant turns per episode")
        tools_axis.legend(loc="upper left")
        turns.legend(loc="upper right")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=110)
    plt.close(figure)
    return out_path
