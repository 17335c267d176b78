"""The one record every task yields: a prompt and the reference answer it is graded against."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Sample:
    id: str
    # A string, or chat messages ({"role": ..., "content": ...}) that the chat template renders as given.
    prompt: str | tuple[Mapping[str, str], ...] = field(hash=False)
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
