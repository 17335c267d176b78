"""rl-lora: reinforcement-learning fine-tuning of language models with LoRA (rank 1 and up) or all weights.

The Python API runs exactly what the CLI runs, for notebooks and scripts:

    from rl_lora import load_config, train, evaluate
    summary = train(load_config("my_run.yaml", ["train.steps=40"]))   # a RunSummary (run folder, accuracies)
    adapter = f"{summary.run_dir}/checkpoints/step_40/adapter"
    result = evaluate(load_config(overrides=["task.name=gsm8k"]), adapter=adapter)  # an EvalResult

Errors a user can fix raise `rl_lora.errors.UserError` (and envs' TaskError, rewards' RewardSpecError): the CLI
turns them into one line and exit code 2. A run that Ctrl-C or SIGTERM stopped after a step (checkpointed, not
finished) raises `rl_lora.errors.StoppedAfterStep`, a KeyboardInterrupt carrying the signal's number.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rl_lora.config import RunConfig, load_config

if TYPE_CHECKING:
    from rl_lora.run.folder import RunSummary
    from rl_lora.step.evaluate import EvalResult

__all__ = ["RunConfig", "load_config", "train", "evaluate"]


def train(config: RunConfig | None = None, resume: str | None = None, overrides: list[str] = ()) -> RunSummary:
    """One RL run (the default config when none is given), or `resume` a run folder with `overrides` (--set)."""
    from rl_lora.run.train import train_main

    return train_main(None if resume else (config or RunConfig()), resume, list(overrides))


def evaluate(config: RunConfig | None = None, adapter: str | None = None) -> EvalResult:
    """Greedy test accuracy of config.model (and a PEFT adapter folder), as `rl-lora eval`."""
    from rl_lora.run.eval import eval_main

    return eval_main(config or RunConfig(), adapter)
