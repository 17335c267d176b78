"""A task: train and test Samples plus the reward that grades them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from envs.sample import Sample


@dataclass(frozen=True)
class Task:
    name: str
    train: Sequence[Sample]
    test: Sequence[Sample]
    reward: str  # a reward spec: a built-in name or `package.module:function`
