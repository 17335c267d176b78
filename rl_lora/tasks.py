"""The adapter between rl_lora's config and the two top-level packages it builds on: envs (tasks) and rewards
(scoring). Those take plain arguments and import nothing from rl_lora; this module maps config sections onto
them."""
from __future__ import annotations

import dataclasses
import sys
from typing import Iterator, Sequence

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


class Picked(Sequence):
    """Some of a split's samples, by index, read from it (task.too_long=skip leaves the rest out without copying
    every prompt)."""

    def __init__(self, samples: Sequence, indices: list[int]):
        self.samples, self.indices = samples, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.samples[i] for i in self.indices[index]]
        return self.samples[self.indices[index]]


# Prompts rendered and tokenized at a time when their lengths are checked: the check keeps one length per prompt,
# never every prompt's tokens (5,200 prompts carrying a 10,000-character instruction, tokenized in one call,
# peaked at 4.6 GB).
LENGTH_CHUNK = 64


def context_limit(config: RunConfig) -> int | None:
    """The longest sequence a prompt and its completion may fill: the model's context, and vLLM's planned length
    (None: neither is known)."""
    limits = [model_context(config.model.name)]
    if config.rollout.backend == "vllm":
        limits.append(config.rollout.vllm_max_model_len)
    known = [limit for limit in limits if limit]
    return min(known) if known else None


def load_fitted_task(config: RunConfig, renderer: PromptRenderer, tokenizer, new_tokens: int,
                     splits: tuple[str, ...] = ("train", "test")) -> Task:
    """The task, its prompts checked against the context before any model loads. The instruction, which every
    prompt carries, is measured alone before a prompt is built; then one rendered prompt; then the rest, a chunk
    at a time."""
    context = context_limit(config)
    if context is not None:
        check_instruction(config.task.instruction, tokenizer, context, new_tokens)
    task = load_task(config.task)
    return task if context is None else fit_to_context(task, renderer, tokenizer, config, new_tokens, splits,
                                                       context)


def check_instruction(instruction: str | None, tokenizer, context: int, new_tokens: int) -> None:
    if not instruction:
        return
    length = len(tokenizer(instruction, add_special_tokens=False, verbose=False)["input_ids"])
    if length + new_tokens > context:
        raise UserError(f"task.instruction is {length:,} tokens, and every prompt carries it: with {new_tokens} new "
                        f"tokens no prompt fits the context of {context:,}; shorten it (or lower the token limit)")


def prompt_lengths(samples, renderer: PromptRenderer, tokenizer) -> Iterator[int]:
    """Each sample's rendered prompt length in tokens, rendered and tokenized LENGTH_CHUNK at a time."""
    for start in range(0, len(samples), LENGTH_CHUNK):
        chunk = [renderer(sample) for sample in samples[start:start + LENGTH_CHUNK]]
        yield from (len(ids) for ids in tokenize_prompts(tokenizer, chunk))


def fit_to_context(task: Task, renderer: PromptRenderer, tokenizer, config: RunConfig, new_tokens: int,
                   splits: tuple[str, ...] = ("train", "test"), context: int | None = None) -> Task:
    """Every prompt must leave `new_tokens` of room in the model's context (and vLLM's planned length): checked
    with the tokenizer before any model loads. task.too_long says whether a prompt that does not is an error or
    is left out (counted)."""
    context = context or context_limit(config)
    if context is None:
        return task
    budget = context - new_tokens
    kept = {split: getattr(task, split) for split in ("train", "test")}  # read, not copied (InstructedSamples)
    for split in splits:
        samples = kept[split]
        first = next(prompt_lengths(samples[:1], renderer, tokenizer), 0)
        if first > budget and config.task.too_long == "refuse":  # one prompt says it before thousands are measured
            raise UserError(f"{split} prompts leave no room for {new_tokens} new tokens in a context of {context} "
                            f"(e.g. {samples[0].id}: {first} prompt tokens); set task.too_long=skip to leave such "
                            "prompts out, or lower the token limit")
        lengths = list(prompt_lengths(samples, renderer, tokenizer))
        too_long = [index for index, n in enumerate(lengths) if n > budget]  # indices: no prompt is kept
        if too_long and config.task.too_long == "refuse":
            longest = max(too_long, key=lengths.__getitem__)
            raise UserError(f"{len(too_long)} of {len(samples)} {split} prompts leave no room for {new_tokens} new "
                            f"tokens in a context of {context} (e.g. {samples[longest].id}: {lengths[longest]} prompt "
                            "tokens); set task.too_long=skip to leave them out, or lower the token limit")
        if too_long:
            print(f"task.too_long=skip: left out {len(too_long)} of {len(samples)} {split} prompts longer than "
                  f"{budget} tokens", file=sys.stderr)
        if too_long:
            kept[split] = Picked(samples, [index for index, n in enumerate(lengths) if n <= budget])
        if not kept[split]:
            raise UserError(f"no {split} prompt of {task.name} fits in {budget} tokens")
    return dataclasses.replace(task, train=kept["train"], test=kept["test"])
