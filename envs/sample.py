"""The one record every task yields: a prompt and the reference answer it is graded against."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Sample:
    id: str
    # A string, or chat messages ({"role": ..., "content": ...}) that the chat template renders as given.
    prompt: str | tuple[Mapping[str, str], ...] = field(hash=False)
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


class InstructedSamples(Sequence[Sample]):
    """Samples whose prompts all end with one instruction, each prompt joined when its sample is read: the
    instruction is held once, not copied into every prompt (10,000 prompts carrying a 60,000-character
    instruction held 600 MB). `samples` hold the prompts without it; a slice is a list of whole Samples."""

    def __init__(self, samples: list[Sample], instruction: str, separator: str):
        self._samples, self.instruction, self.separator = samples, instruction, separator

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        sample = self._samples[index]
        return replace(sample, prompt=f"{sample.prompt}{self.separator}{self.instruction}".strip())

    def __eq__(self, other) -> bool:  # as a list of the same Samples would compare
        if not isinstance(other, (InstructedSamples, list)):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # like a list
