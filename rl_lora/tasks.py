"""The adapter between rl_lora's config and the two top-level packages it builds on: envs (tasks) and rewards
(scoring). Those take plain arguments and import nothing from rl_lora; this module maps config sections onto
them."""
from __future__ import annotations

import dataclasses
import sys

from envs.arithmetic import ArithmeticSpec
from envs.dataset import DatasetSpec
from envs.registry import load_task as load_named_task
from envs.render import PromptRenderer
from envs.task import Task
from rewards.protocol import Scorer
from rewards.scoring import make_scorer
from rl_lora.config import EnvConfig, RewardConfig, RunConfig, TaskConfig
from rl_lora.errors import UserError
from rl_lora.models import model_context
from rl_lora.tokens import tokenize_prompts


def load_task(config: TaskConfig) -> Task:
    arithmetic = ArithmeticSpec(digits=config.digits, operators=config.operators, terms=config.terms,
                                train_size=config.train_size, test_size=config.test_size, seed=config.seed)
    dataset = DatasetSpec(prompt_key=config.prompt_key, answer_key=config.answer_key, train_split=config.train_split,
                          test_split=config.test_split, test_size=config.test_size, seed=config.seed)
    return load_named_task(config.name, config.path, config.instruction, arithmetic, dataset)


def reward_names(config: RewardConfig, default: str) -> tuple[list[str], list[float] | None]:
    """The rewards reward.name lists (the task's own grader when unset) and their weights (None: all 1)."""
    names = [n.strip() for n in (config.name or default).split(",") if n.strip()]
    return names, config.weight_values()


def reward_scorer(config: RewardConfig, task_name: str, default: str, env: EnvConfig | None = None) -> Scorer:
    """The configured reward(s), or the task's own grader (`default`) when none is named. A reward that runs
    model-written code (code_tests) gets env.sandbox, opened here: where it cannot isolate, the run stops now, in one
    line, not at its first score."""
    names, weights = reward_names(config, default)
    if any(name.startswith("code_tests") for name in names):
        from envs.sandbox import SandboxUnavailable
        from envs.sandbox.shared import configure, shared_sandbox

        env = env or EnvConfig()
        configure(env.sandbox, env.packages())
        try:
            shared_sandbox()
        except SandboxUnavailable as error:
            raise UserError(str(error)) from None
    return make_scorer(names, weights, timeout_s=config.timeout_s, on_error=config.on_error, task_name=task_name,
                       workers=config.workers)


def fit_to_context(task: Task, renderer: PromptRenderer, tokenizer, config: RunConfig, new_tokens: int,
                   splits: tuple[str, ...] = ("train", "test")) -> Task:
    """Every prompt must leave `new_tokens` of room in the model's context (and vLLM's planned length): checked
    with the tokenizer before any model loads. task.too_long says whether a prompt that does not is an error or
    is left out (counted)."""
    limits = [model_context(config.model.name)]
    if config.rollout.backend == "vllm":
        limits.append(config.rollout.vllm_max_model_len)
    known = [limit for limit in limits if limit]
    if not known:
        return task
    budget = min(known) - new_tokens
    kept = {split: list(getattr(task, split)) for split in ("train", "test")}
    for split in splits:
        samples = list(getattr(task, split))
        lengths = [len(ids) for ids in tokenize_prompts(tokenizer, [renderer(s) for s in samples])]
        too_long = [(s, n) for s, n in zip(samples, lengths) if n > budget]
        if too_long and config.task.too_long == "refuse":
            sample, length = max(too_long, key=lambda pair: pair[1])
            raise UserError(f"{len(too_long)} of {len(samples)} {split} prompts leave no room for {new_tokens} new "
                            f"tokens in a context of {min(known)} (e.g. {sample.id}: {length} prompt tokens); set "
                            "task.too_long=skip to leave them out, or lower the token limit")
        if too_long:
            print(f"task.too_long=skip: left out {len(too_long)} of {len(samples)} {split} prompts longer than "
                  f"{budget} tokens", file=sys.stderr)
        kept[split] = [s for s, n in zip(samples, lengths) if n <= budget]
        if not kept[split]:
            raise UserError(f"no {split} prompt of {task.name} fits in {budget} tokens")
    return dataclasses.replace(task, train=kept["train"], test=kept["test"])
