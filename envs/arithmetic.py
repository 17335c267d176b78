"""Procedurally generated arithmetic: a task a 135M model can learn on a CPU in minutes.

Problems are unique expressions; the test split is drawn first and the train split never repeats one of them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from envs.errors import TaskError
from envs.sample import InstructedSamples, Sample
from envs.task import Task

OPERATORS = ("+", "-", "*")


@dataclass(frozen=True)
class ArithmeticSpec:
    digits: int = 2
    operators: str = "+"
    terms: int = 2
    train_size: int = 5000
    test_size: int = 200
    seed: int = 0
    instruction: str = "Answer with just the number."


def _check(spec: ArithmeticSpec) -> None:
    bad = sorted(set(spec.operators) - set(OPERATORS))
    if bad or not spec.operators:
        raise TaskError(f"task.operators={spec.operators!r}: use one or more of {''.join(OPERATORS)!r}")
    if spec.digits < 1 or spec.terms < 2:
        raise TaskError(f"arithmetic needs task.digits >= 1 and task.terms >= 2 (got {spec.digits}, {spec.terms})")
    possible = (9 * 10 ** (spec.digits - 1)) ** spec.terms * len(spec.operators) ** (spec.terms - 1)
    if spec.train_size + spec.test_size > possible:
        raise TaskError(f"only {possible} distinct {spec.digits}-digit problems exist; "
                        f"lower task.train_size + task.test_size ({spec.train_size + spec.test_size})")


def _expression(rng: random.Random, spec: ArithmeticSpec) -> str:
    low, high = 10 ** (spec.digits - 1), 10 ** spec.digits - 1
    parts = [str(rng.randint(low, high))]
    for _ in range(spec.terms - 1):
        parts += [rng.choice(spec.operators), str(rng.randint(low, high))]
    return " ".join(parts)


def _evaluate(expression: str) -> int:
    # Only digits, spaces and + - * ever reach here (built above), so Python's own precedence is the reference.
    return int(eval(expression, {"__builtins__": {}}))  # noqa: S307


def _draw(rng: random.Random, spec: ArithmeticSpec, count: int, exclude: set[str], split: str) -> list[Sample]:
    samples: list[Sample] = []
    while len(samples) < count:
        expression = _expression(rng, spec)
        if expression in exclude:
            continue
        exclude.add(expression)
        samples.append(Sample(
            id=f"arith-{split}-{len(samples)}",
            prompt=f"What is {expression}?",  # the instruction follows, joined when read (InstructedSamples)
            answer=str(_evaluate(expression)),
            metadata={"expression": expression},
        ))
    return samples


def arithmetic_task(spec: ArithmeticSpec) -> Task:
    _check(spec)
    seen: set[str] = set()
    test = _draw(random.Random(f"test-{spec.seed}"), spec, spec.test_size, seen, "test")
    train = _draw(random.Random(f"train-{spec.seed}"), spec, spec.train_size, seen, "train")
    return Task(name="arithmetic", train=InstructedSamples(train, spec.instruction, " "),
                test=InstructedSamples(test, spec.instruction, " "), reward="rewards.gsm8k:gsm8k_reward")
