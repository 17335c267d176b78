"""The one record every task yields: a prompt and the reference answer it is graded against."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
